using System.CommandLine.Parsing;
using System.Diagnostics.CodeAnalysis;
using Haven.Api;

namespace Haven.Cli;

/// <summary>
/// NIC specifications of --nic: <c>user[,mac=M][,model=virtio|e1000][,link=up|down]</c> or
/// <c>bridge=BR[,mac=M][,model=..][,link=..]</c>; for vm set prefixed by what to do: <c>add:SPEC</c>,
/// <c>remove:nicN</c>, or <c>nicN:SPEC</c> (replace). havend checks values (bridge exists, MAC free).
/// </summary>
public static class NicSpecParser
{
    public static bool TryParse(string text, [NotNullWhen(true)] out NicSpec? nic, [NotNullWhen(false)] out string? error)
    {
        nic = null;
        var spec = new NicSpec();
        var first = true;
        foreach (var part in text.Split(','))
        {
            var (key, value) = part.IndexOf('=') is var i and >= 0 ? (part[..i].Trim(), part[(i + 1)..].Trim()) : (part.Trim(), "");
            switch (key)
            {
                case "user" when first && value.Length == 0: spec = spec with { Mode = "user" }; break;
                case "bridge" when first && value.Length > 0: spec = spec with { Mode = "bridge", Bridge = value }; break;
                case "mac" when !first && value.Length > 0: spec = spec with { Mac = value }; break;
                case "model" when !first && value is "virtio" or "e1000": spec = spec with { Model = value }; break;
                case "link" when !first && value is "up" or "down": spec = spec with { LinkUp = value == "up" }; break;
                default:
                    error = first
                        ? $"'{text}' is not a NIC: start with 'user' or 'bridge=NAME', then optional mac=, model=virtio|e1000, link=up|down"
                        : $"'{part}' in NIC '{text}' is not one of mac=MAC, model=virtio|e1000, link=up|down";
                    return false;
            }
            first = false;
        }
        nic = spec;
        error = null;
        return true;
    }

    /// <summary>One --nic of vm set: NICs to add or replace go to <paramref name="set"/>, names to remove to <paramref name="remove"/>.</summary>
    public static bool TryParseChange(string text, List<NicSpec> set, List<string> remove, [NotNullWhen(false)] out string? error)
    {
        var colon = text.IndexOf(':');
        var action = colon < 0 ? "" : text[..colon];
        var rest = colon < 0 ? "" : text[(colon + 1)..];
        if (action == "remove" && rest.StartsWith("nic", StringComparison.Ordinal))
        {
            remove.Add(rest);
            error = null;
            return true;
        }
        if (action != "add" && !action.StartsWith("nic", StringComparison.Ordinal))
        {
            error = $"'{text}' is not a NIC change: use add:SPEC, remove:nicN or nicN:SPEC (replace)";
            return false;
        }
        if (!TryParse(rest, out var nic, out error)) return false;
        set.Add(action == "add" ? nic : nic with { Name = action });
        return true;
    }

    public static List<NicSpec> Parse(ArgumentResult result)
    {
        var list = new List<NicSpec>();
        foreach (var t in result.Tokens)
            if (TryParse(t.Value, out var nic, out var error)) list.Add(nic);
            else result.AddError(Parsers.OptionName(result) + ": " + error);
        return list;
    }
}
