namespace Haven.Qemu.Runtime;

public enum Accelerator { Kvm, Tcg }

public enum NetworkMode { None, User }

/// <summary>One qcow2 file of a disk's chain, opened by QEMU under an explicit node name.</summary>
public sealed record LayerRef(string NodeName, string Path);

/// <summary>A virtio disk: its layer chain from the base (first) to the writable top (last).</summary>
public sealed record DiskLaunch(string DeviceId, IReadOnlyList<LayerRef> Chain)
{
    public LayerRef Top => Chain[^1];
}

/// <summary>Everything needed to start one QEMU process for a VM.</summary>
public sealed record VmLaunchSpec
{
    public required string Name { get; init; }
    public required int Vcpus { get; init; }
    public required int MemoryMiB { get; init; }
    public required IReadOnlyList<DiskLaunch> Disks { get; init; }
    public required Accelerator Accelerator { get; init; }
    public required string QmpSocket { get; init; }
    public required string PidFile { get; init; }
    public required string SerialLog { get; init; }
    /// <summary>
    /// The serial console as a unix socket QEMU serves (one client at a time), still logged to <see cref="SerialLog"/>;
    /// null: the serial port only writes the log.
    /// </summary>
    public string? ConsoleSocket { get; init; }
    /// <summary>A VGA display served over VNC on this unix socket; null: no display.</summary>
    public string? VncSocket { get; init; }
    public string? GuestAgentSocket { get; init; }
    public string? Kernel { get; init; }
    public string? Initrd { get; init; }
    public string? Append { get; init; }
    public NetworkMode Network { get; init; } = NetworkMode.None;
    /// <summary>A saved device/memory state to load at start (Standard checkpoints); QEMU waits paused for it.</summary>
    public bool WaitForIncomingState { get; init; }
}
