namespace Haven.Host;

/// <summary>
/// Named places inside multi-step operations where tests make the daemon die with SIGKILL
/// (environment HAVEN_CRASH_AT=name), to prove that reconciliation on the next start repairs them.
/// Every name is in <see cref="All"/>, in docs/architecture.md's table of steps and in a crash test
/// (Haven.Host.Tests' CrashPointListTests keeps the three equal).
/// </summary>
public static class CrashPoints
{
    private static readonly string? Armed = Environment.GetEnvironmentVariable("HAVEN_CRASH_AT");

    /// <summary>Every named step, in the order of docs/architecture.md's table.</summary>
    public static readonly IReadOnlyList<string> All =
    [
        "create.after-overlays", "create.while-frozen", "create.after-snapshot", "apply.after-overlays",
        "remove.before-live-commit", "remove.after-merge", "remove.after-commit", "subtree.after-one",
        "backup.before-point-in-time", "backup.after-point-in-time", "backup.after-disk", "backup.after-manifest",
        "replication.before-point-in-time", "replication.after-point-in-time", "replication.after-ack",
        "resync.after-hashes", "replica.while-hashing",
        "replica.after-data", "replica.after-checkpoint", "replica.after-commit",
        "failover.after-apply", "failover.after-tracking", "failover.after-state",
        "test-failover.after-export", "test-failover.after-create",
        "planned-failover.after-journal", "planned-failover.after-replica-failover", "planned-failover.after-reverse",
        "prune.after-lock", "prune.after-delete",
        "gc.after-lock", "gc.after-announce", "gc.after-delete",
        "copy.after-lock", "copy.after-chunks", "copy.after-commit",
        "upgrade.after-lock", "upgrade.after-summary", "upgrade.after-staged-config", "upgrade.after-config", "upgrade.after-delete",
    ];

    public static void Hit(string name)
    {
        if (Armed is not null && Armed == name)
            System.Diagnostics.Process.GetCurrentProcess().Kill(); // SIGKILL: no finally blocks, no flush
    }
}
