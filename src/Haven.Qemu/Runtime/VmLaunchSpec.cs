namespace Haven.Qemu.Runtime;

public enum Accelerator { Kvm, Tcg }

public enum DiskBus { VirtioBlk, VirtioScsi }

/// <summary>
/// A network card: QEMU device id <see cref="Id"/> (nic0..), model "virtio" or "e1000"; <see cref="Tap"/> is the tap
/// device (already created and on its bridge) it uses, null for user-mode NAT.
/// </summary>
public sealed record NicLaunch(string Id, string Mac, string Model, string? Tap);

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
    /// <summary>QEMU -cpu model; null: host on KVM, max on TCG.</summary>
    public string? CpuModel { get; init; }
    public IReadOnlyList<NicLaunch> Nics { get; init; } = [];
    public DiskBus DiskBus { get; init; } = DiskBus.VirtioBlk;
    /// <summary>A CD-ROM drive (device id "cdrom"); <see cref="CdromIso"/> is its medium, null for an empty drive.</summary>
    public bool CdromDrive { get; init; }
    public string? CdromIso { get; init; }
    /// <summary>Device ids (disk0, cdrom, nic0 ...) in boot order; empty: the firmware's default.</summary>
    public IReadOnlyList<string> BootOrder { get; init; } = [];
    /// <summary>UEFI: the OVMF code image (opened read-only) and the VM's own variable store (read-write); null: BIOS.</summary>
    public string? UefiCode { get; init; }
    public string? UefiVars { get; init; }
    /// <summary>A saved device/memory state to load at start (Standard checkpoints); QEMU waits paused for it.</summary>
    public bool WaitForIncomingState { get; init; }
}
