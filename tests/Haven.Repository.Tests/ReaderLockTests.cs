using System.Text;
using Xunit;
using static Haven.Repository.Tests.RepoFixture;

namespace Haven.Repository.Tests;

/// <summary>
/// A reader's hold on backups (a mount): prune keeps a held backup, says why, and removes it once the hold is gone;
/// a hold is refused while a prune holds the repository, and a hold whose holder died stops counting.
/// </summary>
public sealed class ReaderLockTests
{
    private static byte[] Random(int n)
    {
        var b = new byte[n];
        System.Random.Shared.NextBytes(b);
        return b;
    }

    private static async Task<List<string>> ReaderLocksAsync(RepoFixture f)
    {
        var keys = new List<string>();
        await foreach (var o in f.Store.ListAsync("locks/reader-", Ct)) keys.Add(o.Key);
        return keys;
    }

    [Fact]
    public async Task Prune_keeps_a_held_backup_and_removes_it_once_released()
    {
        await using var f = await CreateAsync();
        var old = await Backups.BackupAsync(f.Repo, "vm", f.Clock.GetUtcNow(), Random(ChunkSize));
        f.Clock.Advance(TimeSpan.FromHours(1));
        var latest = await Backups.BackupAsync(f.Repo, "vm", f.Clock.GetUtcNow(), Random(ChunkSize));

        var hold = await f.Repo.HoldBackupsAsync([old.Id], "mount", "host-a", Ct);
        var prune = await f.Repo.PruneAsync(new RetentionPolicy { KeepLast = 1 }, dryRun: false, Ct);
        Assert.Empty(prune.Removed);
        var kept = Assert.Single(prune.Kept, k => k.Backup.Id == old.Id);
        Assert.StartsWith("in use: mount on host-a", Assert.Single(kept.Reasons));
        // GC keeps what a held backup needs: it still restores byte for byte.
        await f.Repo.CollectGarbageAsync(Ct);
        Assert.Single(await Backups.RestoreAsync(f.Repo, old.Id));

        await hold.DisposeAsync();
        Assert.Empty(await ReaderLocksAsync(f));
        prune = await f.Repo.PruneAsync(new RetentionPolicy { KeepLast = 1 }, dryRun: false, Ct);
        Assert.Equal([old.Id], prune.Removed.Select(b => b.Id));
        Assert.Equal([latest.Id], (await f.Repo.ListBackupsAsync(Ct)).Select(b => b.Id));
    }

    [Fact]
    public async Task A_hold_is_refused_while_a_prune_holds_the_repository_and_a_dead_holder_counts_for_nothing()
    {
        await using var f = await CreateAsync();
        var old = await Backups.BackupAsync(f.Repo, "vm", f.Clock.GetUtcNow(), Random(ChunkSize));
        f.Clock.Advance(TimeSpan.FromHours(1));
        await Backups.BackupAsync(f.Repo, "vm", f.Clock.GetUtcNow(), Random(ChunkSize));

        // A live prune of this process (its lock names our pid, so it is not "gone").
        var now = f.Clock.GetUtcNow().ToString("O");
        var prune = $$"""{"kind":"exclusive","ownerId":"p1","operation":"prune","host":"{{Environment.MachineName}}","pid":{{Environment.ProcessId}},"startedAt":"{{now}}","refreshedAt":"{{now}}"}""";
        Assert.True(await f.Store.TryCreateAsync("locks/exclusive", Encoding.UTF8.GetBytes(prune), Ct));
        var refused = await Assert.ThrowsAsync<RepositoryLockedException>(() => f.Repo.HoldBackupsAsync([old.Id], "mount", "host-a", Ct));
        Assert.Contains("prune", refused.Message);
        Assert.Empty(await ReaderLocksAsync(f)); // the refused hold left nothing
        await f.Store.DeleteAsync("locks/exclusive", Ct);

        // A hold whose refreshes stopped longer ago than the stale limit (its holder died) does not keep the backup.
        await f.Repo.HoldBackupsAsync([old.Id], "mount", "host-a", Ct); // never disposed: the holder "dies"
        f.Clock.Advance(f.Repo.LockStaleAfter + TimeSpan.FromMinutes(1));
        var result = await f.Repo.PruneAsync(new RetentionPolicy { KeepLast = 1 }, dryRun: false, Ct);
        Assert.Equal([old.Id], result.Removed.Select(b => b.Id));
        Assert.Empty(await ReaderLocksAsync(f)); // and its stale lock is gone
    }
}
