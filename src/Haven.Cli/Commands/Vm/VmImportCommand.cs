using System.CommandLine;
using System.CommandLine.Parsing;
using System.Net;
using Haven.Api;

namespace Haven.Cli.Commands.Vm;

/// <summary>
/// haven vm import --libvirt FILE: sends the domain XML's text to POST /v1/vms/import-libvirt; havend parses and
/// checks it (the CLI only reads the file, so a daemon never trusts what a client made of it).
/// </summary>
public sealed class VmImportCommand : Command
{
    /// <summary>The largest domain XML havend takes (LibvirtDomain.MaxXmlChars); checked here too so a wrong file costs nothing.</summary>
    public const int MaxXmlBytes = 1024 * 1024;

    public Option<string> Libvirt { get; } = new("--libvirt")
    {
        Description = "A libvirt domain XML file (the output of 'virsh dumpxml DOMAIN')",
        HelpName = "FILE",
        Required = true,
    };

    public Option<string?> NewName { get; } = new("--name") { Description = "Name of the new VM (default: the domain's name)", HelpName = "NAME" };

    public Option<Dictionary<string, string>> NetworkMap { get; } = new("--network-map")
    {
        Description = "Put the interfaces on libvirt network NET on Linux bridge BRIDGE; repeatable "
            + "(an interface on a libvirt network without a mapping is refused)",
        HelpName = "NET=BRIDGE",
        Arity = ArgumentArity.OneOrMore,
        AllowMultipleArgumentsPerToken = false,
        CustomParser = ParseNetworkMap,
    };

    public Option<string> Accel { get; } = new("--accel") { Description = "Accelerator: auto, kvm or tcg", DefaultValueFactory = _ => "auto" };

    public VmImportCommand(CliContext ctx) : base("import", "Create a VM from a libvirt domain (disks are copied)")
    {
        Accel.AcceptOnlyFromAmong("auto", "kvm", "tcg");
        Add(Libvirt);
        Add(NewName);
        Add(NetworkMap);
        Add(Accel);
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var request = new LibvirtImportRequest
            {
                Xml = ReadXml(parseResult.GetRequiredValue(Libvirt)),
                Name = parseResult.GetValue(NewName),
                NetworkMap = parseResult.GetValue(NetworkMap),
                Accelerator = parseResult.GetValue(Accel) ?? "auto",
            };
            var vm = await client.ImportLibvirtAsync(request, ct);
            output.Result(vm, console =>
            {
                console.Line($"Imported VM '{vm.Name}' (id {vm.Id}).");
                VmView.RenderDetails(console, vm);
            });
        });
    }

    static string ReadXml(string file)
    {
        var path = Path.GetFullPath(file);
        try
        {
            var info = new FileInfo(path);
            if (!info.Exists) throw Invalid(Directory.Exists(path) ? $"{path} is a folder, not a domain XML file" : $"domain XML file not found: {path}");
            if (info.Length > MaxXmlBytes) throw Invalid($"{path} is larger than 1 MiB: not a libvirt domain XML");
            return File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw Invalid($"cannot read {path}: {e.Message}");
        }
    }

    static Dictionary<string, string> ParseNetworkMap(ArgumentResult result)
    {
        var map = new Dictionary<string, string>();
        foreach (var token in result.Tokens)
        {
            var parts = token.Value.Split('=', 2);
            if (parts.Length != 2 || parts[0].Length == 0 || parts[1].Length == 0)
                result.AddError($"{Parsers.OptionName(result)}: '{token.Value}' is not NET=BRIDGE");
            else if (!map.TryAdd(parts[0], parts[1]))
                result.AddError($"{Parsers.OptionName(result)}: network '{parts[0]}' is mapped twice");
        }
        return map;
    }

    static HavenApiException Invalid(string message) => new(message, "invalid_argument", HttpStatusCode.BadRequest);
}
