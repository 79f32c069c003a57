using System.Text.Json.Nodes;

namespace Haven.Qemu.Runtime;

/// <summary>Turns a <see cref="VmLaunchSpec"/> into qemu-system-x86_64 arguments.</summary>
public static class QemuCommandLine
{
    public const string Binary = "qemu-system-x86_64";

    public static List<string> Build(VmLaunchSpec spec)
    {
        var a = new List<string>
        {
            "-name", Escape(spec.Name),
            "-machine", spec.UefiCode is null ? "q35" : $"q35,pflash0={UefiCodeNode},pflash1={UefiVarsNode}",
            "-accel", spec.Accelerator == Accelerator.Kvm ? "kvm" : "tcg",
            // -cpu host is what the KVM probe vouched for; TCG's richest model is max.
            "-cpu", spec.CpuModel ?? (spec.Accelerator == Accelerator.Kvm ? "host" : "max"),
            "-smp", spec.Vcpus.ToString(),
            "-m", spec.MemoryMiB.ToString(),
            "-nodefaults", "-nographic", "-no-user-config",
        };
        if (spec.ConsoleSocket is null) a.AddRange(["-serial", "file:" + spec.SerialLog]);
        else
        {
            // The console socket serves `haven vm console`; the log keeps every byte whether a client is attached or not.
            a.AddRange(["-chardev", $"socket,id=ser0,path={Escape(spec.ConsoleSocket)},server=on,wait=off,logfile={Escape(spec.SerialLog)},logappend=on",
                "-serial", "chardev:ser0"]);
        }
        // -nographic only means "no window": a VGA card still shows SeaBIOS and the guest's text console over VNC.
        if (spec.VncSocket is not null) a.AddRange(["-device", "VGA", "-vnc", "unix:" + Escape(spec.VncSocket)]);
        a.AddRange([
            // -serial file: takes the rest literally; option strings (key=value,...) need commas doubled.
            "-qmp", $"unix:{Escape(spec.QmpSocket)},server=on,wait=off",
            "-pidfile", spec.PidFile,
            "-daemonize",
        ]);
        if (spec.UefiCode is not null)
        {
            // OVMF as two flash chips (what libvirt does): the shared code read-only, the VM's variable store writable.
            var vars = spec.UefiVars ?? throw new ArgumentException("a UEFI VM needs its variable store");
            a.Add("-blockdev");
            a.Add(new JsonObject { ["driver"] = "file", ["filename"] = spec.UefiCode, ["node-name"] = UefiCodeNode, ["read-only"] = true }.ToJsonString());
            a.Add("-blockdev");
            a.Add(new JsonObject { ["driver"] = "file", ["filename"] = vars, ["node-name"] = UefiVarsNode, ["read-only"] = false }.ToJsonString());
        }
        if (spec.Kernel is not null) { a.Add("-kernel"); a.Add(NoComma(spec.Kernel, "kernel")); }
        if (spec.Initrd is not null) { a.Add("-initrd"); a.Add(NoComma(spec.Initrd, "initrd")); }
        if (spec.Append is not null) { a.Add("-append"); a.Add(spec.Append); }

        if (spec.DiskBus == DiskBus.VirtioScsi && spec.Disks.Count > 0) a.AddRange(["-device", "virtio-scsi-pci,id=scsi0"]);
        foreach (var disk in spec.Disks)
        {
            AddChain(a, disk.Chain);
            a.Add("-device");
            // The layers' discard=unmap passes a guest's TRIM through; scsi-hd announces it to the guest.
            a.Add((spec.DiskBus == DiskBus.VirtioScsi ? $"scsi-hd,bus=scsi0.0,drive={disk.Top.NodeName}" : $"virtio-blk-pci,drive={disk.Top.NodeName}")
                + $",id={disk.DeviceId}" + BootIndex(spec, disk.DeviceId));
        }
        if (spec.CdromDrive) AddCdrom(a, spec);

        if (spec.GuestAgentSocket is not null)
        {
            a.AddRange(["-device", "virtio-serial-pci,id=vser0",
                "-chardev", $"socket,path={Escape(spec.GuestAgentSocket)},server=on,wait=off,id=qga0",
                "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0"]);
        }

        foreach (var nic in spec.Nics)
        {
            a.Add("-netdev");
            a.Add(nic.Tap is null ? $"user,id=net-{nic.Id}" : $"tap,id=net-{nic.Id},ifname={nic.Tap},script=no,downscript=no");
            a.Add("-device");
            a.Add($"{NicDevice(nic.Model)},netdev=net-{nic.Id},id={nic.Id},mac={nic.Mac}" + BootIndex(spec, nic.Id));
        }

        if (spec.WaitForIncomingState) a.AddRange(["-incoming", "defer"]);
        return a;
    }

    /// <summary>
    /// Opens every layer explicitly so each has a node name Haven chose; live merges name nodes.
    /// Backing layers open read-only, so QEMU holds no write lock on them and qemu-img may read
    /// them; a live merge reopens its target read-write first (<see cref="BlockOperations.ReopenAsync"/>).
    /// </summary>
    private static void AddChain(List<string> a, IReadOnlyList<LayerRef> chain)
    {
        string? below = null;
        for (var i = 0; i < chain.Count; i++)
        {
            var layer = chain[i];
            var readOnly = i < chain.Count - 1;
            var fileNode = FileNodeName(layer.NodeName);
            a.Add("-blockdev");
            a.Add(new JsonObject { ["driver"] = "file", ["filename"] = layer.Path, ["node-name"] = fileNode, ["read-only"] = readOnly, ["discard"] = "unmap" }.ToJsonString());
            var format = new JsonObject { ["driver"] = "qcow2", ["file"] = fileNode, ["node-name"] = layer.NodeName, ["read-only"] = readOnly, ["discard"] = "unmap" };
            format["backing"] = below is null ? null : JsonValue.Create(below);
            a.Add("-blockdev");
            a.Add(format.ToJsonString());
            below = layer.NodeName;
        }
    }

    /// <summary>Node names of the UEFI flash images.</summary>
    public const string UefiCodeNode = "uefi-code", UefiVarsNode = "uefi-vars";

    public static string FileNodeName(string formatNode) => "f" + formatNode;

    /// <summary>QEMU device id of the CD-ROM drive and node name of its medium.</summary>
    public const string CdromId = "cdrom", CdromNode = "cdrom-medium";

    /// <summary>
    /// An IDE CD-ROM on the q35 AHCI controller (every guest has a driver for it). The ISO opens read-only
    /// as raw; blockdev-change-medium / eject change it live.
    /// </summary>
    private static void AddCdrom(List<string> a, VmLaunchSpec spec)
    {
        var drive = "";
        if (spec.CdromIso is { } iso)
        {
            a.Add("-blockdev");
            a.Add(new JsonObject { ["driver"] = "file", ["filename"] = iso, ["node-name"] = FileNodeName(CdromNode), ["read-only"] = true }.ToJsonString());
            a.Add("-blockdev");
            a.Add(new JsonObject { ["driver"] = "raw", ["file"] = FileNodeName(CdromNode), ["node-name"] = CdromNode, ["read-only"] = true }.ToJsonString());
            drive = ",drive=" + CdromNode;
        }
        a.Add("-device");
        a.Add($"ide-cd,bus=ide.2,id={CdromId}{drive}" + BootIndex(spec, CdromId));
    }

    public static string NicDevice(string model) => model switch
    {
        "virtio" => "virtio-net-pci",
        "e1000" => "e1000",
        _ => throw new ArgumentException($"unknown NIC model '{model}'"),
    };

    private static string BootIndex(VmLaunchSpec spec, string deviceId)
    {
        var i = spec.BootOrder.ToList().IndexOf(deviceId);
        if (i < 0) return "";
        // With -kernel, QEMU's kernel-loading option ROM holds bootindex 0 ("bootindex 0 has already been used"):
        // the devices come after it, in their order.
        return $",bootindex={(spec.Kernel is null ? i : i + 1)}";
    }

    /// <summary>A value inside a QEMU option string (key=value,...): QEMU reads ",," as one literal comma.</summary>
    public static string Escape(string value) => value.Replace(",", ",,", StringComparison.Ordinal);

    /// <summary>
    /// Kernel and initrd paths are refused with commas: a multiboot kernel's -initrd is a comma-separated list
    /// of modules, so no escaping is right for every kernel. (VmService refuses such paths at create.)
    /// </summary>
    private static string NoComma(string path, string what)
        => path.Contains(',') ? throw new ArgumentException($"the {what} path must not contain a comma: {path}") : path;
}
