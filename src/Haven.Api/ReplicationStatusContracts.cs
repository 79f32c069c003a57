namespace Haven.Api;

// Replication of VMs: enabling, cycles, status (docs/replication.md; routes in docs/api.md).

/// <summary>POST /v1/vms/{name}/replication: replicate this VM to a replica server.</summary>
public sealed record ReplicationEnableRequest
{
    /// <summary>The replica server, https://HOST:PORT.</summary>
    public required string Replica { get; init; }
    /// <summary>The name the replica server's certificate must carry; default: whatever name it has, if trusted.</summary>
    public string? ReplicaName { get; init; }
    /// <summary>Seconds between cycles: 30, 300 (default) or 900 as in Hyper-V, or any value from 5.</summary>
    public int FrequencySeconds { get; init; } = 300;
    /// <summary>Hourly recovery points the replica keeps besides the latest: 0..24.</summary>
    public int AdditionalPoints { get; init; }
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
    public List<RecoveryPointInfo> RecoveryPoints { get; init; } = [];
}
