using Haven.Api;

namespace Haven.Host.State;

public sealed record VmRecord
{
    public required string Id { get; init; }
    public required string Name { get; init; }
    /// <summary>vCPUs, memory, NICs, disk bus, CD-ROM, boot order: one document, versioned with the checkpoints.</summary>
    public required VmHardware Hardware { get; init; }
    public int Vcpus => Hardware.Vcpus;
    public int MemoryMiB => Hardware.MemoryMiB;
    public string? Kernel { get; init; }
    public string? Initrd { get; init; }
    public string? Append { get; init; }
    public required bool GuestAgent { get; init; }
    public required string Accelerator { get; init; }
    public required CheckpointType CheckpointType { get; init; }
    /// <summary>The checkpoint whose layers the active layers sit on; null before the first checkpoint.</summary>
    public string? CurrentCheckpointId { get; init; }
    public required DateTimeOffset CreatedAt { get; init; }
    /// <summary>havend starts the VM when it starts (after reconciliation).</summary>
    public bool Autostart { get; init; }
}

public sealed record DiskRecord(string VmId, int Index, long SizeBytes, string ActiveLayerId)
{
    public string DeviceId => "disk" + Index;
}

/// <summary>
/// One qcow2 file. A layer belongs either to a checkpoint (frozen: it holds what changed between the
/// parent checkpoint and that checkpoint) or, with CheckpointId null, is the writable top of the disk.
/// </summary>
public sealed record LayerRecord(string Id, string VmId, int DiskIndex, string? ParentId, string? CheckpointId)
{
    /// <summary>QEMU node name for this layer's qcow2 node.</summary>
    public string NodeName => "l" + Id;
}

public sealed record CheckpointRecord
{
    public required string Id { get; init; }
    public required string VmId { get; init; }
    public required string Name { get; init; }
    public string? ParentId { get; init; }
    public required CheckpointKind Kind { get; init; }
    public required Consistency Consistency { get; init; }
    public required DateTimeOffset CreatedAt { get; init; }
    public required bool HasState { get; init; }
    /// <summary>The VM's hardware when the checkpoint was taken; applying the checkpoint brings it back.</summary>
    public VmHardware? Hardware { get; init; }
}

/// <summary>A multi-step operation in progress: written before its first side effect, deleted after its last.</summary>
public sealed record OperationRecord(string Id, string VmId, string Kind, string Payload, DateTimeOffset StartedAt);

/// <summary>A backup job: its definition (JSON of Haven.Api.JobDefinition) and how its last run went.</summary>
public sealed record JobRecord(string Name, string Definition, DateTimeOffset? LastRun, string? LastStatus, string? LastError);

/// <summary>
/// A VM this host keeps as a replica of a primary's VM: cycles applied so far (<see cref="LastCycle"/>, 0 before
/// the initial replication) and how many hourly recovery points to keep besides the latest.
/// <see cref="PrimaryIdentity"/> is the only primary that may touch it (cert:THUMBPRINT or ca:CA-THUMBPRINT:name,
/// Haven.Replication.ReplicaAuthorization.OwnerOf); empty: no primary over the network.
/// </summary>
public sealed record ReplicaRecord(string VmId, string PrimaryHost, string PrimaryVmId, string TrustGroup, long LastCycle,
    int AdditionalPoints, DateTimeOffset CreatedAt, ReplicaState State = ReplicaState.Replicating, DateTimeOffset? LastTestFailover = null,
    string PrimaryIdentity = "");

/// <summary>Replicating: takes cycles. FailedOver: runs from a recovery point (cancel or complete the failover); takes no cycles.</summary>
public enum ReplicaState
{
    Replicating,
    FailedOver,
}

/// <summary>A recovery point of a replica VM: the checkpoint holding the disks as the primary's point in time of that cycle.</summary>
public sealed record ReplicaPointRecord(string VmId, long Cycle, string CheckpointId, DateTimeOffset PointTime, Consistency Consistency);

/// <summary>
/// A VM this host replicates (primary side): where to, the settings (JSON), the last cycle the replica
/// acknowledged (0 before the initial replication) and the running statistics (columns of their own).
/// </summary>
public sealed record ReplicationRecord(string VmId, string Target, string Settings, long LastCycle)
{
    public Replication.ReplicationStatistics Statistics { get; init; } = new();
}
