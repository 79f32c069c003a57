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
            "-machine", "q35",
            "-accel", spec.Accelerator == Accelerator.Kvm ? "kvm" : "tcg",
            // -cpu host is what the KVM probe vouched for; TCG's richest model is max.
            "-cpu", spec.Accelerator == Accelerator.Kvm ? "host" : "max",
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
        if (spec.Kernel is not null) { a.Add("-kernel"); a.Add(NoComma(spec.Kernel, "kernel")); }
        if (spec.Initrd is not null) { a.Add("-initrd"); a.Add(NoComma(spec.Initrd, "initrd")); }
        if (spec.Append is not null) { a.Add("-append"); a.Add(spec.Append); }

        foreach (var disk in spec.Disks)
        {
            AddChain(a, disk.Chain);
            a.Add("-device");
            a.Add($"virtio-blk-pci,drive={disk.Top.NodeName},id={disk.DeviceId}");
        }

        if (spec.GuestAgentSocket is not null)
        {
            a.AddRange(["-device", "virtio-serial-pci,id=vser0",
                "-chardev", $"socket,path={Escape(spec.GuestAgentSocket)},server=on,wait=off,id=qga0",
                "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0"]);
        }

        if (spec.Network == NetworkMode.User)
            a.AddRange(["-netdev", "user,id=net0", "-device", "virtio-net-pci,netdev=net0"]);

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

    public static string FileNodeName(string formatNode) => "f" + formatNode;

    /// <summary>A value inside a QEMU option string (key=value,...): QEMU reads ",," as one literal comma.</summary>
    public static string Escape(string value) => value.Replace(",", ",,", StringComparison.Ordinal);

    /// <summary>
    /// Kernel and initrd paths are refused with commas: a multiboot kernel's -initrd is a comma-separated list
    /// of modules, so no escaping is right for every kernel. (VmService refuses such paths at create.)
    /// </summary>
    private static string NoComma(string path, string what)
        => path.Contains(',') ? throw new ArgumentException($"the {what} path must not contain a comma: {path}") : path;
}
