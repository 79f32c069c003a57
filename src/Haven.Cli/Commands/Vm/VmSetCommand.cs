using System.CommandLine;
using System.CommandLine.Parsing;
using Haven.Api;

namespace Haven.Cli.Commands.Vm;

/// <summary>haven vm set: PATCH /v1/vms/{name}. Options not given stay as they are.</summary>
public sealed class VmSetCommand : Command
{
    public Argument<string> VmName { get; } = VmCommand.NameArgument();

    public Option<CheckpointType?> CheckpointType { get; } = new("--checkpoint-type")
    {
        Description = "Kind of checkpoint 'checkpoint create' takes",
    };

    public Option<string?> Autostart { get; } = new("--autostart")
    {
        Description = "on: havend starts the VM when it starts; off: it does not",
        HelpName = "on|off",
        CustomParser = Parsers.OnOff,
    };

    public Option<int?> Vcpus { get; } = new("--vcpus") { Description = "Number of virtual CPUs (VM off)", HelpName = "N", CustomParser = r => Parsers.Int(r, min: 1) };
    public Option<int?> Memory { get; } = new("--memory") { Description = "Memory in MiB (VM off)", HelpName = "MiB", CustomParser = r => Parsers.Int(r, min: 1) };
    public Option<string?> CpuModel { get; } = new("--cpu-model") { Description = "QEMU CPU model, or auto (VM off)", HelpName = "MODEL" };
    public Option<string?> DiskBus { get; } = new("--disk-bus") { Description = "virtio-blk or virtio-scsi (VM off)", HelpName = "BUS" };
    public Option<string?> Cdrom { get; } = new("--cdrom") { Description = "Insert this ISO into the CD-ROM drive (live; adding the drive needs the VM off)", HelpName = "ISO" };
    public Option<bool> Eject { get; } = new("--eject") { Description = "Empty the CD-ROM drive (live)" };
    public Option<string?> BootOrder { get; } = new("--boot-order") { Description = "Devices to boot from, in order, comma-separated (disk0, cdrom, nic0 ...; VM off)", HelpName = "DEVICES" };

    public Option<string[]> Nic { get; } = new("--nic")
    {
        Description = "Change NICs (VM off): add:SPEC, remove:nicN, or nicN:SPEC to replace (keeps its MAC unless mac= is given); "
            + "SPEC as for vm create; repeatable",
        HelpName = "CHANGE",
        Arity = ArgumentArity.OneOrMore,
        AllowMultipleArgumentsPerToken = false,
    };

    public Option<Dictionary<string, long>> Resize { get; } = new("--resize")
    {
        Description = "Grow a disk (VM off): disk0=SIZE (e.g. 20G); repeatable",
        HelpName = "DISK=SIZE",
        Arity = ArgumentArity.OneOrMore,
        AllowMultipleArgumentsPerToken = false,
        CustomParser = ParseResize,
    };

    public VmSetCommand(CliContext ctx) : base("set", "Change a VM's settings and hardware")
    {
        DiskBus.AcceptOnlyFromAmong("virtio-blk", "virtio-scsi");
        Add(VmName);
        Add(CheckpointType);
        Add(Autostart);
        Add(Vcpus);
        Add(Memory);
        Add(CpuModel);
        Add(DiskBus);
        Add(Cdrom);
        Add(Eject);
        Add(BootOrder);
        Add(Nic);
        Add(Resize);
        Validators.Add(r =>
        {
            if (r.GetValue(Cdrom) is not null && r.GetValue(Eject)) r.AddError("--cdrom and --eject cannot be used together");
            foreach (var change in r.GetValue(Nic) ?? [])
                if (!NicSpecParser.TryParseChange(change, [], [], out var error)) r.AddError("--nic: " + error);
            if (Options.All(o => r.GetResult(o) is null)) r.AddError("give at least one setting to change");
        });
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var vm = await client.UpdateVmAsync(parseResult.GetRequiredValue(VmName), BuildRequest(parseResult), ct);
            output.Result(vm, console =>
            {
                console.Line($"VM '{vm.Name}' updated.");
                VmView.RenderDetails(console, vm);
            });
        });
    }

    public VmUpdateRequest BuildRequest(ParseResult parseResult)
    {
        List<NicSpec>? set = null;
        List<string>? remove = null;
        if (parseResult.GetValue(Nic) is { Length: > 0 } changes)
        {
            set = [];
            remove = [];
            foreach (var c in changes) NicSpecParser.TryParseChange(c, set, remove, out _);
        }
        var cdrom = parseResult.GetValue(Cdrom);
        return new VmUpdateRequest
        {
            CheckpointType = parseResult.GetValue(CheckpointType),
            Autostart = parseResult.GetValue(Autostart) is { } a ? a == "on" : null,
            Vcpus = parseResult.GetValue(Vcpus),
            MemoryMiB = parseResult.GetValue(Memory),
            CpuModel = parseResult.GetValue(CpuModel),
            DiskBus = parseResult.GetValue(DiskBus),
            Cdrom = string.IsNullOrEmpty(cdrom) ? null : Path.GetFullPath(cdrom),
            Eject = parseResult.GetValue(Eject),
            BootOrder = VmCommand.SplitList(parseResult.GetValue(BootOrder)),
            SetNics = set,
            RemoveNics = remove,
            Resize = parseResult.GetResult(Resize) is null ? null : parseResult.GetValue(Resize),
        };
    }

    static Dictionary<string, long> ParseResize(ArgumentResult result)
    {
        var sizes = new Dictionary<string, long>();
        foreach (var token in result.Tokens)
        {
            var eq = token.Value.IndexOf('=');
            if (eq <= 0) result.AddError($"{Parsers.OptionName(result)}: '{token.Value}' is not DISK=SIZE (e.g. disk0=20G)");
            else if (!SizeParser.TryParse(token.Value[(eq + 1)..], out var bytes, out var error)) result.AddError($"{Parsers.OptionName(result)}: {error}");
            else sizes[token.Value[..eq]] = bytes;
        }
        return sizes;
    }
}
