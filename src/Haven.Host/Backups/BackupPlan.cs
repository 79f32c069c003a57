using Haven.Host.Tracking;

namespace Haven.Host.Backups;

/// <summary>Journal payload of a running backup: everything the reconciler must undo after a crash.</summary>
public sealed record BackupPlan
{
    /// <summary>Whose change tracking the point in time moves on: a repository's backups, or a replication.</summary>
    public required TrackingConsumer Consumer { get; init; }
    public required bool Live { get; init; }
    public required List<BackupDiskPlan> Disks { get; init; }
    public string? NbdSocket { get; init; }
    /// <summary>qemu-nbd processes serving an off VM's disks (children of the daemon that die with it only sometimes).</summary>
    public List<int> QemuNbdPids { get; init; } = [];
    public bool Freezing { get; set; }
    /// <summary>Off VMs: disks whose tracking-point stamp matched the layer file before this backup's own bitmap edits.</summary>
    public List<int> StampsHeld { get; init; } = [];
}

public sealed record BackupDiskPlan(int Disk, string LayerId, string FleeceFile, string FleeceNode, string JobId, string ExportName, string? OldBitmap, string NewBitmap);
