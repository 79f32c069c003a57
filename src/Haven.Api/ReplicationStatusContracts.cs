namespace Haven.Api;

// Replication of VMs: enabling, cycles, status (docs/replication.md; routes in docs/api.md).

/// <summary>POST /v1/vms/{name}/replication: replicate this VM to a replica server.</summary>
public sealed record ReplicationEnableRequest
{
    /// <summary>The replica server, https://HOST:PORT.</summary>
    public required string Replica { get; init; }
    /// <summary>The name the replica server's certificate must carry; default: whatever name it has, if trusted.</summary>
    public string? ReplicaName { get; init; }
    /// <summary>
    /// The replica server's certificate to pin (SHA-256 thumbprint); default: the certificate it presents when replication
    /// is enabled (it must be trusted, and carry <see cref="ReplicaName"/> when given).
    /// </summary>
    public string? ReplicaThumbprint { get; init; }
    /// <summary>Seconds between cycles: 30, 300 (default) or 900 as in Hyper-V, or any value from 5.</summary>
    public int FrequencySeconds { get; init; } = 300;
    /// <summary>Hourly recovery points the replica keeps besides the latest: 0..24.</summary>
    public int AdditionalPoints { get; init; }
    /// <summary>Compress changed blocks on the wire (zstd).</summary>
    public bool Compression { get; init; }
    /// <summary>When to start the initial replication (up to 7 days ahead); null: now.</summary>
    public DateTimeOffset? StartAt { get; init; }
    /// <summary>
    /// How the initial copy travels: "network" (default), "export" (written to <see cref="ExportFolder"/> now, to be
    /// imported on the replica with POST /v1/replication/import), or "existing" (a VM of the same name already on the
    /// replica server is the copy; only differing blocks are sent).
    /// </summary>
    public string Initial { get; init; } = "network";
    /// <summary>Hours between app-consistent points (1–12); cycles in between are crash-consistent. Null: every cycle app-consistent.</summary>
    public int? AppConsistentHours { get; init; }
    public string? ExportFolder { get; init; }
    /// <summary>Automatic resynchronization only from this UTC hour (0–23) …</summary>
    public int? ResyncWindowStartHour { get; init; }
    /// <summary>… until this one (exclusive; may wrap past midnight). Null: any time.</summary>
    public int? ResyncWindowEndHour { get; init; }
    /// <summary>
    /// Failover network: NIC name (a bridge NIC of the VM) to the replica host's bridge it uses when failed over (test,
    /// planned and unplanned failover); NICs not named keep their bridge, MACs are kept. Null or empty: none.
    /// </summary>
    public Dictionary<string, string>? FailoverNetwork { get; init; }
}

/// <summary>PATCH /v1/vms/{name}/replication: changes settings of a replication (primary side). Null fields stay as they are.</summary>
public sealed record ReplicationSetRequest
{
    /// <summary>The failover network (NIC to replica bridge), replacing the current one; empty: none. Sent to the replica with the next cycle.</summary>
    public Dictionary<string, string>? FailoverNetwork { get; init; }
}

/// <summary>One recovery point on the replica.</summary>
public sealed record RecoveryPointInfo
{
    public required long Cycle { get; init; }
    public required DateTimeOffset PointInTime { get; init; }
    public required Consistency Consistency { get; init; }
}

/// <summary>GET /v1/vms/{name}/replication: a VM's replication as Hyper-V shows it.</summary>
public sealed record ReplicationStatusInfo
{
    public required string Vm { get; init; }
    /// <summary>"primary" (this host sends) or "replica" (this host receives).</summary>
    public required string Role { get; init; }
    /// <summary>The other side: the replica server (primary role) or the primary host's name (replica role).</summary>
    public required string Partner { get; init; }
    /// <summary>
    /// The certificate pinned for the host this one sends to (the replica server, or the third host of an extended
    /// replication): SHA-256 thumbprint; null until first contact.
    /// </summary>
    public string? ReplicaThumbprint { get; init; }
    /// <summary>"Normal", "Warning" or "Critical" (rules in docs/replication.md, "Health").</summary>
    public required string Health { get; init; }
    public string? HealthReason { get; init; }
    /// <summary>Replicating, or FailedOver (replica role).</summary>
    public required string State { get; init; }
    public int? FrequencySeconds { get; init; }
    public required long LastCycle { get; init; }
    public long SuccessfulCycles { get; init; }
    public long FailedCycles { get; init; }
    public long MissedCycles { get; init; }
    public long AverageBytes { get; init; }
    public long MaxBytes { get; init; }
    public double AverageSeconds { get; init; }
    public double MaxSeconds { get; init; }
    /// <summary>Bytes changed since the last cycle (running primary VMs; null when not known).</summary>
    public long? PendingBytes { get; init; }
    public DateTimeOffset? LastSuccess { get; init; }
    public string? LastError { get; init; }
    public DateTimeOffset? LastTestFailover { get; init; }
    /// <summary>
    /// The failover network, NIC to bridge: the primary's setting, or (replica role) what the replica last received with a
    /// cycle. Null: none (failed-over NICs keep their bridges).
    /// </summary>
    public Dictionary<string, string>? FailoverNetwork { get; init; }
    public List<RecoveryPointInfo> RecoveryPoints { get; init; } = [];
    /// <summary>Replica role with extended replication: the third host, and the last cycle it committed.</summary>
    public string? ExtendedTo { get; init; }
    public long? ExtendedLastCycle { get; init; }
}

public sealed record ReplicationCycleResult
{
    public required long Cycle { get; init; }
    /// <summary>True for the initial replication, or when change tracking was lost (every block read).</summary>
    public required bool Full { get; init; }
    /// <summary>Every block was hashed on both sides and only the differing ones sent.</summary>
    public bool Resync { get; init; }
    public required Consistency Consistency { get; init; }
    /// <summary>Bytes of changed blocks sent (before compression).</summary>
    public required long DataBytes { get; init; }
    public required long ZeroBytes { get; init; }
    public required long Extents { get; init; }
    public required double WallMilliseconds { get; init; }
}

/// <summary>POST /v1/vms/{name}/replication/planned-failover (primary side).</summary>
public sealed record PlannedFailoverRequest
{
    /// <summary>Replicate back from the new primary to this host afterwards (only changes move).</summary>
    public bool Reverse { get; init; }
    public int ShutdownTimeoutSeconds { get; init; } = 60;
}

/// <summary>POST /v1/vms/{name}/replication/repin: pin the replica server's certificate anew (after it changed on purpose).</summary>
public sealed record ReplicationRepinRequest
{
    /// <summary>The thumbprint to pin; null: the certificate the replica server presents now (trusted, with the expected name).</summary>
    public string? Thumbprint { get; init; }
}

/// <summary>Test failover or failover on the replica side: from the latest recovery point, or this cycle's.</summary>
public sealed record ReplicaFailoverRequest
{
    public long? Cycle { get; init; }
    public bool Start { get; init; } = true;
}

/// <summary>POST /v1/replication/import (replica side): an initial copy exported to a folder on the primary.</summary>
public sealed record ReplicationImportRequest
{
    public required string Folder { get; init; }
}
