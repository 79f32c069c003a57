using System.Globalization;
using System.Text;
using System.Text.Json;
using Spectre.Console;

namespace Haven.Cli.Commands.Repo;

/// <summary>
/// Human rendering of answers that are passed through as JSON (verify, prune, gc): scalar fields as aligned
/// "Key  value" lines, lists of records as tables, nested records as indented sections.
/// </summary>
public static class RepoView
{
    public static void WriteJson(IAnsiConsole console, JsonElement value, int indent = 0)
    {
        var pad = new string(' ', indent);
        if (value.ValueKind != JsonValueKind.Object)
        {
            console.Line(pad + Scalar("", value));
            return;
        }
        var properties = value.EnumerateObject().ToList();
        var width = properties.Count == 0 ? 0 : properties.Max(p => Label(p.Name).Length) + 2;
        foreach (var p in properties)
        {
            var label = Label(p.Name);
            switch (p.Value.ValueKind)
            {
                case JsonValueKind.Object:
                    console.Line(pad + label + ":");
                    WriteJson(console, p.Value, indent + 2);
                    break;
                case JsonValueKind.Array when p.Value.EnumerateArray().Any(e => e.ValueKind == JsonValueKind.Object):
                    console.Line($"{pad}{label} ({p.Value.GetArrayLength()}):");
                    WriteTable(console, p.Value, indent + 2);
                    break;
                default:
                    console.Line(pad + label.PadRight(width) + Scalar(p.Name, p.Value));
                    break;
            }
        }
    }

    /// <summary>A list of records as a table: one column per field, fields of nested records flattened.</summary>
    static void WriteTable(IAnsiConsole console, JsonElement array, int indent)
    {
        var rows = array.EnumerateArray().Select(e => Flatten(e).ToList()).ToList();
        var columns = rows.SelectMany(r => r.Select(c => c.Name)).Distinct(StringComparer.Ordinal).ToList();
        var table = Human.Table([.. columns.Select(c => Label(c).ToUpperInvariant())]);
        foreach (var row in rows)
        {
            var cells = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var (name, text) in row)
                cells[name] = text;
            table.AddTextRow([.. columns.Select(c => cells.GetValueOrDefault(c, ""))]);
        }
        if (indent > 0)
            console.Write(new Padder(table, new Padding(indent, 0, 0, 0)));
        else
            console.Write(table);
    }

    static IEnumerable<(string Name, string Text)> Flatten(JsonElement element)
    {
        if (element.ValueKind != JsonValueKind.Object)
            return [("value", Scalar("", element))];
        var cells = new List<(string Name, string Text)>();
        void Add(JsonElement record, string prefix)
        {
            foreach (var p in record.EnumerateObject())
            {
                // Nested records keep their own field names ("backup": {"id": ...} gives an "id" column) unless taken.
                var name = prefix.Length > 0 && p.Name.Length > 0 && cells.Exists(c => c.Name == p.Name) ? prefix + char.ToUpperInvariant(p.Name[0]) + p.Name[1..] : p.Name;
                if (p.Value.ValueKind == JsonValueKind.Object)
                    Add(p.Value, name);
                else
                    cells.Add((name, Scalar(p.Name, p.Value)));
            }
        }
        Add(element, "");
        return cells;
    }

    /// <summary>One value as text: sizes for byte counts, durations for milliseconds, local times for timestamps.</summary>
    public static string Scalar(string name, JsonElement value)
    {
        switch (value.ValueKind)
        {
            case JsonValueKind.Null or JsonValueKind.Undefined:
                return "-";
            case JsonValueKind.True:
                return "yes";
            case JsonValueKind.False:
                return "no";
            case JsonValueKind.Number when IsBytes(name) && value.TryGetInt64(out var bytes):
                return $"{SizeParser.Format(bytes)}";
            case JsonValueKind.Number when name.EndsWith("Milliseconds", StringComparison.Ordinal) && value.TryGetDouble(out var ms):
                return Human.Duration(ms);
            case JsonValueKind.Number:
                return value.GetRawText();
            case JsonValueKind.String when value.TryGetDateTimeOffset(out var time):
                return Human.Time(time);
            case JsonValueKind.String:
                return value.GetString() ?? "";
            case JsonValueKind.Array:
                var items = value.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.Object ? e.GetRawText() : Scalar(name, e)).ToList();
                return items.Count == 0 ? "none" : string.Join(", ", items);
            default:
                return value.GetRawText();
        }
    }

    static bool IsBytes(string name) =>
        name.StartsWith("bytes", StringComparison.Ordinal) || name.EndsWith("Bytes", StringComparison.Ordinal);

    /// <summary>"chunksReferenced" → "Chunks referenced"; "vmName" → "VM name".</summary>
    public static string Label(string name)
    {
        var words = new List<string>();
        var word = new StringBuilder();
        foreach (var c in name)
        {
            if (char.IsUpper(c) && word.Length > 0)
            {
                words.Add(word.ToString());
                word.Clear();
            }
            word.Append(c);
        }
        if (word.Length > 0)
            words.Add(word.ToString());
        var text = string.Join(' ', words.Select(w => w.ToLowerInvariant() switch
        {
            "vm" => "VM",
            "id" => "ID",
            "gc" => "GC",
            var lower => lower,
        }));
        return text.Length == 0 ? text : char.ToUpper(text[0], CultureInfo.InvariantCulture) + text[1..];
    }
}
