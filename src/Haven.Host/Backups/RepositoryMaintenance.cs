using Haven.Api;
using Haven.Repository;

namespace Haven.Host.Backups;

/// <summary>Verify, prune and garbage collection of a repository, as the daemon offers them.</summary>
public static class RepositoryMaintenance
{
    public static async Task<VerifyResult> VerifyAsync(RepositoryVerifyRequest req, CancellationToken ct)
    {
        await using var repo = await BackupService.OpenRepositoryAsync(req, ct);
        return await repo.VerifyAsync(req.ReadData, ct);
    }

    public static RetentionPolicy ToPolicy(RepositoryPruneRequest req) => new()
    {
        KeepLast = req.KeepLast,
        KeepHourly = req.KeepHourly,
        KeepDaily = req.KeepDaily,
        KeepWeekly = req.KeepWeekly,
        KeepMonthly = req.KeepMonthly,
        KeepYearly = req.KeepYearly,
    };

    public static async Task<PruneResult> PruneAsync(RepositoryPruneRequest req, CancellationToken ct)
    {
        var policy = ToPolicy(req);
        if (policy.IsEmpty) throw HavenException.Invalid("prune needs at least one --keep-* rule (it would remove every backup)");
        await using var repo = await BackupService.OpenRepositoryAsync(req, ct);
        return await repo.PruneAsync(policy, req.DryRun, ct);
    }

    public static async Task<GcResult> CollectGarbageAsync(RepositoryRef req, CancellationToken ct)
    {
        await using var repo = await BackupService.OpenRepositoryAsync(req, ct);
        return await repo.CollectGarbageAsync(ct);
    }
}
