using Haven.Host.State;

namespace Haven.Host.Replication;

/// <summary>How the last cycle of a replication ended.</summary>
public enum CycleOutcome
{
    /// <summary>No cycle has ended yet.</summary>
    None,
    Succeeded,
    Failed,
    /// <summary>Change tracking was lost and the resynchronization waits for its UTC window; not a failure.</summary>
    WaitingForResyncWindow,
}

public enum HealthState
{
    Normal,
    Warning,
    Critical,
}

/// <summary>
/// Running statistics of a replication, as Hyper-V shows them: columns of the <c>replications</c> row, each
/// counter changed in place by one SQL statement (<see cref="HostStore.Writer.RecordCycleSucceeded"/> and siblings).
/// </summary>
public sealed record ReplicationStatistics
{
    public long SuccessfulCycles { get; init; }
    public long FailedCycles { get; init; }
    /// <summary>Cycles that were due but did not start on time (the previous one still running, or the host down).</summary>
    public long MissedCycles { get; init; }
    public long TotalBytes { get; init; }
    public long MaxBytes { get; init; }
    public double TotalSeconds { get; init; }
    public double MaxSeconds { get; init; }
    public DateTimeOffset? LastSuccess { get; init; }
    public DateTimeOffset? LastFailure { get; init; }
    public DateTimeOffset? LastAppConsistent { get; init; }
    public string? LastError { get; init; }
    public CycleOutcome LastOutcome { get; init; }
}

/// <summary>
/// Normal / Warning / Critical, after Hyper-V: Normal while cycles succeed on time; Warning when the last
/// cycle failed, or none succeeded for more than twice the frequency, or more than a fifth of cycles were
/// missed, or a resynchronization waits for its window; Critical when none succeeded for max(1 h, 12 × frequency).
/// </summary>
public static class ReplicationHealth
{
    public static (HealthState Health, string? Reason) OfPrimary(ReplicationStatistics s, int frequencySeconds, long lastCycle, DateTimeOffset now)
    {
        var critical = TimeSpan.FromSeconds(Math.Max(3600, 12 * frequencySeconds));
        var late = TimeSpan.FromSeconds(2 * frequencySeconds + 5);
        if (lastCycle == 0)
            return s.FailedCycles > 0 ? (HealthState.Critical, "initial replication failed: " + s.LastError) : (HealthState.Warning, "initial replication not done yet");
        var since = now - (s.LastSuccess ?? now);
        if (since > critical) return (HealthState.Critical, $"no cycle succeeded for {since.TotalMinutes:0} min");
        if (s.LastOutcome == CycleOutcome.WaitingForResyncWindow) return (HealthState.Warning, s.LastError);
        if (s.LastOutcome == CycleOutcome.Failed) return (HealthState.Warning, "the last cycle failed: " + s.LastError);
        if (since > late) return (HealthState.Warning, $"no cycle succeeded for {since.TotalSeconds:0} s (frequency {frequencySeconds} s)");
        var attempted = s.SuccessfulCycles + s.FailedCycles + s.MissedCycles;
        if (attempted > 0 && s.MissedCycles * 5 > attempted) return (HealthState.Warning, $"{s.MissedCycles} of {attempted} cycles were missed");
        return (HealthState.Normal, null);
    }

    public static (HealthState Health, string? Reason) OfReplica(ReplicaRecord r, DateTimeOffset? latestPoint, DateTimeOffset now)
    {
        if (r.State == ReplicaState.FailedOver) return (HealthState.Warning, "failed over: complete or cancel the failover");
        if (latestPoint is null) return (HealthState.Warning, "initial replication not received yet");
        var age = now - latestPoint.Value;
        if (age > TimeSpan.FromHours(1)) return (HealthState.Critical, $"the latest recovery point is {age.TotalMinutes:0} min old");
        return (HealthState.Normal, null);
    }
}
