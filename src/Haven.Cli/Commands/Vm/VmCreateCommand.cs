using System.CommandLine;
using System.CommandLine.Parsing;
using Haven.Api;

namespace Haven.Cli.Commands.Vm;

/// <summary>haven vm create: POST /v1/vms.</summary>
public sealed class VmCreateCommand : Command
{
    static readonly VmCreateRequest Defaults = new() { Name = "" };

    public Argument<string> VmName { get; } = VmCommand.NameArgument();

    public Option<int> Vcpus { get; } = new("--vcpus")
    {
        Description = "Number of virtual CPUs",
        HelpName = "N",
        DefaultValueFactory = _ => Defaults.Vcpus,
        CustomParser = r => Parsers.Int(r, min: 1),
    };

    public Option<int> Memory { get; } = new("--memory")
    {
        Description = "Memory in MiB",
        HelpName = "MiB",
        DefaultValueFactory = _ => Defaults.MemoryMiB,
        CustomParser = r => Parsers.Int(r, min: 1),
    };

    public Option<string[]> Disk { get; } = new("--disk")
    {
        Description = "Existing image (qcow2, raw or vhdx) to import as a disk; repeatable",
        HelpName = "PATH",
        Arity = ArgumentArity.OneOrMore,
        AllowMultipleArgumentsPerToken = false,
    };

    public Option<string?> DiskFormat { get; } = new("--disk-format")
    {
        Description = "Format every --disk image must have (qcow2, raw or vhdx); without it, the one its header shows. "
            + "Images with a backing file or an external data file are refused either way",
        HelpName = "FORMAT",
    };

    public Option<long[]> DiskSize { get; } = new("--disk-size")
    {
        Description = "Add a new empty disk of this size (e.g. 64M, 1G, 10G; binary units; a bare number is bytes); repeatable. "
            + "Disks are attached in command-line order of --disk and --disk-size",
        HelpName = "SIZE",
        Arity = ArgumentArity.OneOrMore,
        AllowMultipleArgumentsPerToken = false,
        CustomParser = ParseSizes,
    };

    public Option<string?> Kernel { get; } = new("--kernel") { Description = "Kernel to boot directly", HelpName = "FILE" };
    public Option<string?> Initrd { get; } = new("--initrd") { Description = "Initial ramdisk for --kernel", HelpName = "FILE" };
    public Option<string?> Append { get; } = new("--append") { Description = "Kernel command line for --kernel", HelpName = "ARGS" };

    public Option<bool> NoGuestAgent { get; } = new("--no-guest-agent")
    {
        Description = "Do not attach the QEMU guest agent channel (Production checkpoints then fall back or fail)",
    };

    public Option<bool> Autostart { get; } = new("--autostart") { Description = "havend starts the VM when it starts" };

    public Option<string> Network { get; } = new("--network")
    {
        Description = "Network: none or user",
        DefaultValueFactory = _ => Defaults.Network,
    };

    public Option<List<NicSpec>> Nic { get; } = new("--nic")
    {
        Description = "A network card: user or bridge=BRIDGE, then optional ,mac=52:54:00:..,model=virtio|e1000,link=up|down; "
            + "repeatable (nic0, nic1 ... in order); replaces --network. A MAC is generated when none is given",
        HelpName = "SPEC",
        Arity = ArgumentArity.OneOrMore,
        AllowMultipleArgumentsPerToken = false,
        CustomParser = NicSpecParser.Parse,
    };

    public Option<string?> CpuModel { get; } = new("--cpu-model")
    {
        Description = "QEMU CPU model (e.g. host, max, Skylake-Server); default auto: host on KVM, max on TCG",
        HelpName = "MODEL",
    };

    public Option<string?> DiskBus { get; } = new("--disk-bus") { Description = "Disk controller: virtio-blk (default) or virtio-scsi (passes discards)", HelpName = "BUS" };
    public Option<string?> Cdrom { get; } = new("--cdrom") { Description = "Add a CD-ROM drive with this ISO image in it", HelpName = "ISO" };

    public Option<string?> BootOrder { get; } = new("--boot-order")
    {
        Description = "Devices to boot from, in order, comma-separated (disk0, cdrom, nic0 ...)",
        HelpName = "DEVICES",
    };

    public Option<string> Firmware { get; } = new("--firmware")
    {
        Description = "Firmware: bios (SeaBIOS) or uefi (OVMF, with the VM's own variable store); cannot change later",
        DefaultValueFactory = _ => "bios",
    };

    public Option<string?> UefiCode { get; } = new("--uefi-code")
    {
        Description = "UEFI: the OVMF code image (default /usr/share/OVMF/OVMF_CODE_4M.fd)",
        HelpName = "PATH",
    };

    public Option<string?> UefiVars { get; } = new("--uefi-vars")
    {
        Description = "UEFI: a variable store to copy as the VM's own (default: the empty template that goes with the code image)",
        HelpName = "PATH",
    };

    public Option<string> Accel { get; } = new("--accel")
    {
        Description = "Accelerator: auto, kvm or tcg",
        DefaultValueFactory = _ => Defaults.Accelerator,
    };

    public Option<CheckpointType> CheckpointType { get; } = new("--checkpoint-type")
    {
        Description = "Kind of checkpoint 'checkpoint create' takes",
        DefaultValueFactory = _ => Defaults.CheckpointType,
    };

    public VmCreateCommand(CliContext ctx) : base("create", "Create a VM")
    {
        Network.AcceptOnlyFromAmong("none", "user");
        Accel.AcceptOnlyFromAmong("auto", "kvm", "tcg");
        DiskFormat.AcceptOnlyFromAmong("qcow2", "raw", "vhdx");
        DiskBus.AcceptOnlyFromAmong("virtio-blk", "virtio-scsi");
        Firmware.AcceptOnlyFromAmong("bios", "uefi");
        Add(VmName);
        Add(Vcpus);
        Add(Memory);
        Add(Disk);
        Add(DiskFormat);
        Add(DiskSize);
        Add(Kernel);
        Add(Initrd);
        Add(Append);
        Add(NoGuestAgent);
        Add(Network);
        Add(Nic);
        Add(CpuModel);
        Add(DiskBus);
        Add(Cdrom);
        Add(BootOrder);
        Add(Firmware);
        Add(UefiCode);
        Add(UefiVars);
        Add(Accel);
        Add(CheckpointType);
        Add(Autostart);

        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var vm = await client.CreateVmAsync(BuildRequest(parseResult), ct);
            output.Result(vm, console =>
            {
                console.Line($"Created VM '{vm.Name}' (id {vm.Id}).");
                VmView.RenderDetails(console, vm);
            });
        });
    }

    /// <summary>The request this command sends for <paramref name="parseResult"/> (paths made absolute).</summary>
    public VmCreateRequest BuildRequest(ParseResult parseResult) => new()
    {
        Name = parseResult.GetRequiredValue(VmName),
        Vcpus = parseResult.GetValue(Vcpus),
        MemoryMiB = parseResult.GetValue(Memory),
        Disks = DisksInOrder(parseResult),
        Kernel = FullPathOrNull(parseResult.GetValue(Kernel)),
        Initrd = FullPathOrNull(parseResult.GetValue(Initrd)),
        Append = parseResult.GetValue(Append),
        GuestAgent = !parseResult.GetValue(NoGuestAgent),
        Network = parseResult.GetValue(Network) ?? Defaults.Network,
        Accelerator = parseResult.GetValue(Accel) ?? Defaults.Accelerator,
        CheckpointType = parseResult.GetValue(CheckpointType),
        Autostart = parseResult.GetValue(Autostart),
        Nics = parseResult.GetResult(Nic) is null ? null : parseResult.GetValue(Nic),
        CpuModel = parseResult.GetValue(CpuModel) ?? Defaults.CpuModel,
        DiskBus = parseResult.GetValue(DiskBus) ?? Defaults.DiskBus,
        Cdrom = FullPathOrNull(parseResult.GetValue(Cdrom)),
        BootOrder = VmCommand.SplitList(parseResult.GetValue(BootOrder)),
        Firmware = parseResult.GetValue(Firmware) ?? "bios",
        UefiCode = FullPathOrNull(parseResult.GetValue(UefiCode)),
        UefiVars = FullPathOrNull(parseResult.GetValue(UefiVars)),
    };

    /// <summary>--disk and --disk-size values, interleaved in the order they appear on the command line.</summary>
    List<DiskSpec> DisksInOrder(ParseResult parseResult)
    {
        var imports = new Queue<string>(parseResult.GetValue(Disk) ?? []);
        var sizes = new Queue<long>(parseResult.GetValue(DiskSize) ?? []);
        var format = parseResult.GetValue(DiskFormat);
        var disks = new List<DiskSpec>();
        foreach (var token in parseResult.Tokens)
        {
            if (token.Type != TokenType.Option)
                continue;
            if (Names(Disk).Contains(token.Value) && imports.TryDequeue(out var path))
                disks.Add(new DiskSpec { ImportPath = Path.GetFullPath(path), ImportFormat = format });
            else if (Names(DiskSize).Contains(token.Value) && sizes.TryDequeue(out var size))
                disks.Add(new DiskSpec { SizeBytes = size });
        }
        // Anything the token walk missed (it should not happen) goes last rather than being dropped.
        disks.AddRange(imports.Select(p => new DiskSpec { ImportPath = Path.GetFullPath(p), ImportFormat = format }));
        disks.AddRange(sizes.Select(s => new DiskSpec { SizeBytes = s }));
        return disks;
    }

    static IEnumerable<string> Names(Option option) => option.Aliases.Prepend(option.Name);

    static long[] ParseSizes(ArgumentResult result)
    {
        var sizes = new List<long>();
        foreach (var token in result.Tokens)
        {
            if (SizeParser.TryParse(token.Value, out var bytes, out var error))
                sizes.Add(bytes);
            else
                result.AddError(Parsers.OptionName(result) + ": " + error);
        }
        return [.. sizes];
    }

    static string? FullPathOrNull(string? path) => string.IsNullOrEmpty(path) ? null : Path.GetFullPath(path);
}
