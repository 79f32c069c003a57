using System.Text.Json;
using Xunit;
using static Haven.Repository.Tests.RepoFixture;

namespace Haven.Repository.Tests;

/// <summary>GC (grace rule against live writers), locks and prune, with the clock moved by hand.</summary>
public sealed class MaintenanceTests
{
    private static readonly TimeSpan Grace = TimeSpan.FromMinutes(10);

    /// <summary>Stores chunks with a writer that never commits (what a crashed backup leaves).</summary>
    private static async Task<List<ChunkId>> AbandonedChunksAsync(RepoFixture f, int count)
    {
        await using var w = await f.Repo.BeginBackupAsync("crashed", Ct);
        var ids = new List<ChunkId>();
        for (var i = 0; i < count; i++)
        {
            var data = RandomChunk();
            ids.Add(w.ComputeId(data));
            await w.PutChunkAsync(ids[^1], data, Ct);
        }
        return ids;
    }

    [Fact]
    public async Task Gc_deletes_old_unreferenced_chunks_and_keeps_referenced_and_young_ones()
    {
        await using var f = await CreateAsync(Grace);
        var (_, kept) = await f.BackupAsync("vm", RandomChunk(), TextChunk("kept"));
        var garbage = await AbandonedChunksAsync(f, 3);
        f.Clock.Advance(TimeSpan.FromMinutes(11));
        var young = await AbandonedChunksAsync(f, 2);
        // GC starts 9 minutes after the young chunks were written: inside the 10-minute grace window, but not
        // at the same instant, so a GC that ignored the grace period (cutoff = its start) would delete them.
        f.Clock.Advance(Grace - TimeSpan.FromMinutes(1));

        var result = await f.Repo.CollectGarbageAsync(Ct);
        Assert.Equal((3L, 2L, 2L, 1, 0), (result.ChunksDeleted, result.ChunksKeptYoung, result.ChunksReferenced, result.BackupsMarked, result.LiveWriters));
        Assert.Equal(f.Clock.GetUtcNow() - Grace, result.Cutoff);
        foreach (var id in garbage) Assert.False(File.Exists(f.ChunkPath(id)));
        foreach (var id in young.Concat(kept.Select(k => k!.Value))) Assert.True(File.Exists(f.ChunkPath(id)));
        Assert.True((await f.Repo.VerifyAsync(readData: true, Ct)).IsHealthy);

        f.Clock.Advance(TimeSpan.FromMinutes(2)); // now 11 minutes old: outside the window
        Assert.Equal(2, (await f.Repo.CollectGarbageAsync(Ct)).ChunksDeleted);
        Assert.Equal(2, f.CountChunkFiles());
        Assert.False(File.Exists(Path.Combine(f.StorePath, "locks", "exclusive")));
    }

    [Fact]
    public async Task One_unreadable_manifest_is_reported_and_kept_by_list_prune_and_gc_and_gc_then_deletes_nothing()
    {
        await using var f = await CreateAsync(Grace);
        var (old, oldIndex) = await f.BackupAsync("vm", RandomChunk());
        f.Clock.Advance(TimeSpan.FromHours(1));
        var (bad, badIndex) = await f.BackupAsync("vm", RandomChunk(), TextChunk("only the damaged backup has this"));
        f.Clock.Advance(TimeSpan.FromHours(1));
        var (newest, _) = await f.BackupAsync("vm", RandomChunk());
        var garbage = await AbandonedChunksAsync(f, 2);
        f.Clock.Advance(TimeSpan.FromHours(1));
        var badBytes = await File.ReadAllBytesAsync(f.ManifestPath(bad), Ct);
        badBytes[40] ^= 0x04;
        await File.WriteAllBytesAsync(f.ManifestPath(bad), badBytes, Ct);
        // And a manifest of a format this Haven does not know, sealed with the real key (a newer writer's).
        const string future = "20250301-143000-0000f00d";
        var futureSummary = SummaryDocument.Of(f.Manifest("vm", [], 0) with { Id = future }, []) with { Version = SummaryDocument.CurrentVersion + 1 };
        Assert.True(await f.Store.TryCreateAsync("summaries/" + future, f.Repo.SealSummary(futureSummary), Ct));
        var chunkFiles = f.CountChunkFiles();

        var list = await f.Repo.ListBackupsAsync(Ct);
        Assert.Equal([old, newest], list.Select(b => b.Id));
        Assert.Equal([bad, future], list.Unreadable.Select(u => u.BackupId));
        Assert.Equal("summary: authentication failed (AES-GCM tag mismatch)", list.Unreadable[0].Reason);
        Assert.Contains("summary version 3", list.Unreadable[1].Reason);

        foreach (var dryRun in new[] { true, false })
        {
            var prune = await f.Repo.PruneAsync(new RetentionPolicy { KeepLast = 1 }, dryRun, Ct);
            Assert.Equal([old], prune.Removed.Select(b => b.Id));
            Assert.Equal([newest], prune.Kept.Select(k => k.Backup.Id));
            Assert.Equal(list.Unreadable, prune.Unreadable);
        }
        Assert.Equal(badBytes, await File.ReadAllBytesAsync(f.ManifestPath(bad), Ct)); // left exactly as it was
        Assert.True(File.Exists(f.ManifestPath(future)));

        // GC: the damaged backup's chunks are referenced by no readable manifest, yet it deletes nothing at all.
        var gc = await f.Repo.CollectGarbageAsync(Ct);
        Assert.True(gc.SweepSkipped);
        Assert.Equal(list.Unreadable, gc.UnreadableManifests);
        Assert.Equal((0L, 5L, 1), (gc.ChunksDeleted, gc.ChunksKeptUnreadable, gc.BackupsMarked)); // old's, bad's two, the abandoned two
        Assert.Equal(chunkFiles, f.CountChunkFiles());
        foreach (var id in badIndex.Concat(oldIndex).OfType<ChunkId>().Concat(garbage)) Assert.True(File.Exists(f.ChunkPath(id)));
        Assert.False(File.Exists(Path.Combine(f.StorePath, "chunk-epoch"))); // no deletion was even announced

        // Once the operator removes the damaged manifests, GC sweeps as usual.
        File.Delete(f.ManifestPath(bad));
        File.Delete(f.ManifestPath(future));
        var after = await f.Repo.CollectGarbageAsync(Ct);
        Assert.Equal((false, 5L), (after.SweepSkipped, after.ChunksDeleted));
        Assert.True((await f.Repo.VerifyAsync(readData: true, Ct)).IsHealthy);
    }

    [Fact]
    public async Task Gc_keeps_the_chunks_of_a_writer_that_started_before_it_and_has_not_committed()
    {
        await using var f = await CreateAsync(Grace);
        var garbage = await AbandonedChunksAsync(f, 2);
        f.Clock.Advance(TimeSpan.FromMinutes(20));

        await using var writer = await f.Repo.BeginBackupAsync("host-b", Ct);
        var data = new[] { RandomChunk(), RandomChunk(), TextChunk("in progress") };
        var index = data.Select(d => (ChunkId?)writer.ComputeId(d)).ToArray();
        for (var i = 0; i < data.Length; i++) Assert.True(await writer.PutChunkAsync(index[i]!.Value, data[i], Ct));
        // Later than the grace period after the writer's chunks, but the writer (lock refreshed 15 min ago) is live.
        f.Clock.Advance(TimeSpan.FromMinutes(15));

        var result = await f.Repo.CollectGarbageAsync(Ct);
        Assert.Equal(1, result.LiveWriters);
        Assert.Equal(writer.StartedAt - Grace, result.Cutoff);
        Assert.Equal((2L, 3L), (result.ChunksDeleted, result.ChunksKeptYoung));
        foreach (var id in garbage) Assert.False(File.Exists(f.ChunkPath(id)));
        foreach (var id in index) Assert.True(File.Exists(f.ChunkPath(id!.Value)));

        // The writer commits after the GC (which bumped the epoch): it re-checks, finds everything, succeeds.
        var backupId = await writer.CommitAsync(f.Manifest("vm", index, 3L * ChunkSize), Ct);
        await writer.DisposeAsync();
        f.Clock.Advance(TimeSpan.FromHours(2));
        Assert.Equal(0, (await f.Repo.CollectGarbageAsync(Ct)).ChunksDeleted);
        var buffer = new byte[ChunkSize];
        var m = await f.Repo.ReadManifestAsync(backupId, Ct);
        for (var i = 0; i < data.Length; i++)
        {
            await f.Repo.ReadChunkAsync(m.Disks[0].Chunks[i]!.Value, buffer, Ct);
            Assert.Equal(data[i], buffer);
        }
    }

    [Fact]
    public async Task Without_a_live_lock_the_same_chunks_are_collected()
    {
        // The control for the test above: same timeline, but the writer's lock is gone (crashed long ago, stale).
        await using var f = await CreateAsync(Grace);
        await AbandonedChunksAsync(f, 2);
        f.Clock.Advance(TimeSpan.FromMinutes(20));
        var writer = await f.Repo.BeginBackupAsync("host-b", Ct);
        var data = RandomChunk();
        await writer.PutChunkAsync(writer.ComputeId(data), data, Ct);
        f.Clock.Advance(TimeSpan.FromMinutes(31)); // no refresh for longer than LockStaleAfter

        var result = await f.Repo.CollectGarbageAsync(Ct);
        Assert.Equal((0, 1, 3L), (result.LiveWriters, result.StaleLocksRemoved, result.ChunksDeleted));
        // Its commit now finds the chunk gone (its lock lapsed) and refuses to keep a broken manifest.
        var e = await Assert.ThrowsAsync<ChunksMissingException>(() => writer.CommitAsync(f.Manifest("vm", [writer.ComputeId(data)], ChunkSize), Ct));
        Assert.Equal([writer.ComputeId(data)], e.ChunkIds);
        Assert.Empty(await f.Repo.ListBackupsAsync(Ct));
        await writer.DisposeAsync();
    }

    [Fact]
    public async Task A_writer_that_deduplicated_against_garbage_is_told_to_store_it_again()
    {
        await using var f = await CreateAsync(Grace);
        var reused = TextChunk("reused later");
        await f.BackupAsync("vm", reused);
        f.Clock.Advance(TimeSpan.FromMinutes(1));
        await f.BackupAsync("vm", RandomChunk());
        Assert.Single((await f.Repo.PruneAsync(new RetentionPolicy { KeepLast = 1 }, dryRun: false, Ct)).Removed);
        f.Clock.Advance(TimeSpan.FromHours(1));

        await using var writer = await f.Repo.BeginBackupAsync("h", Ct);
        var id = writer.ComputeId(reused);
        Assert.False(await writer.PutChunkAsync(id, reused, Ct)); // in the listing: deduplicated
        Assert.Equal(1, (await f.Repo.CollectGarbageAsync(Ct)).ChunksDeleted); // unreferenced and old: gone

        var e = await Assert.ThrowsAsync<ChunksMissingException>(() => writer.CommitAsync(f.Manifest("vm", [id], ChunkSize), Ct));
        Assert.Equal([id], e.ChunkIds);
        Assert.Single(await f.Repo.ListBackupsAsync(Ct)); // the broken manifest was not kept
        Assert.True(await writer.PutChunkAsync(id, reused, Ct)); // forgotten, so stored again
        var backupId = await writer.CommitAsync(f.Manifest("vm", [id], ChunkSize), Ct);
        var buffer = new byte[ChunkSize];
        await f.Repo.ReadChunkAsync((await f.Repo.ReadManifestAsync(backupId, Ct)).Disks[0].Chunks[0]!.Value, buffer, Ct);
        Assert.Equal(reused, buffer);
    }

    [Fact]
    public async Task A_commit_waits_while_a_deletion_is_running()
    {
        await using var f = await CreateAsync(Grace);
        await using var writer = await f.Repo.BeginBackupAsync("h", Ct);
        var data = RandomChunk();
        await writer.PutChunkAsync(writer.ComputeId(data), data, Ct);
        // Another host's GC, in its sweep.
        var now = f.Clock.GetUtcNow();
        var gcLock = JsonSerializer.SerializeToUtf8Bytes(new
        {
            kind = "exclusive", ownerId = "0123", operation = "gc", host = "other", pid = 1, startedAt = now, refreshedAt = now, deleting = true,
        });
        Assert.True(await f.Store.TryCreateAsync("locks/exclusive", gcLock, Ct));

        var commit = writer.CommitAsync(f.Manifest("vm", [writer.ComputeId(data)], ChunkSize), Ct);
        await Task.Delay(500, Ct);
        Assert.False(commit.IsCompleted);
        await f.Repo.PruneAsync(new RetentionPolicy { KeepLast = 1 }, dryRun: true, Ct); // read-only work still runs
        await Assert.ThrowsAsync<RepositoryLockedException>(() => f.Repo.CollectGarbageAsync(Ct));
        await f.Store.DeleteAsync("locks/exclusive", Ct);
        var id = await commit.WaitAsync(TimeSpan.FromSeconds(30), Ct);
        Assert.Equal(id, Assert.Single(await f.Repo.ListBackupsAsync(Ct)).Id);
    }

    [Fact]
    public async Task Exclusive_operations_exclude_each_other_until_the_lock_is_stale()
    {
        await using var f = await CreateAsync(Grace);
        var now = f.Clock.GetUtcNow();
        var record = JsonSerializer.SerializeToUtf8Bytes(new { kind = "exclusive", ownerId = "dead", operation = "prune", host = "gone", pid = 7, startedAt = now, refreshedAt = now });
        Assert.True(await f.Store.TryCreateAsync("locks/exclusive", record, Ct));

        var e = await Assert.ThrowsAsync<RepositoryLockedException>(() => f.Repo.CollectGarbageAsync(Ct));
        Assert.Contains("prune on gone (pid 7)", e.Message);
        await Assert.ThrowsAsync<RepositoryLockedException>(() => f.Repo.PruneAsync(new RetentionPolicy { KeepLast = 1 }, dryRun: false, Ct));
        await Assert.ThrowsAsync<RepositoryLockedException>(() => f.Repo.VerifyAsync(readData: true, Ct));
        Assert.True((await f.Repo.VerifyAsync(readData: false, Ct)).IsHealthy); // structure check needs no lock

        // Backups are not blocked by it.
        await f.BackupAsync("vm", RandomChunk());

        f.Clock.Advance(TimeSpan.FromMinutes(31));
        await f.Repo.CollectGarbageAsync(Ct); // stale: taken over
        Assert.False(File.Exists(Path.Combine(f.StorePath, "locks", "exclusive")));
    }

    /// <summary>A havend killed -9 in a GC leaves its lock; restarted, the same machine must not wait 30 minutes.</summary>
    [Fact]
    public async Task A_lock_of_a_dead_process_on_this_machine_is_stale_at_once_and_a_live_ones_is_not()
    {
        await using var f = await CreateAsync(Grace);
        using var gone = System.Diagnostics.Process.Start("true")!;
        await gone.WaitForExitAsync(Ct);
        var now = f.Clock.GetUtcNow();
        byte[] Lock(int pid, string owner) => JsonSerializer.SerializeToUtf8Bytes(new
        {
            kind = "exclusive", ownerId = owner, operation = "gc", host = Environment.MachineName, pid, startedAt = now, refreshedAt = now, deleting = true,
        });

        // A live holder here (this test process stands in for another havend) is respected.
        Assert.True(await f.Store.TryCreateAsync("locks/exclusive", Lock(Environment.ProcessId == 1 ? 2 : 1, "live"), Ct));
        await Assert.ThrowsAsync<RepositoryLockedException>(() => f.Repo.CollectGarbageAsync(Ct));
        await f.Store.DeleteAsync("locks/exclusive", Ct);

        // A dead one is not: GC and prune take the lock over, and a backup's commit does not wait for its "deleting".
        Assert.True(await f.Store.TryCreateAsync("locks/exclusive", Lock(gone.Id, "dead"), Ct));
        Assert.True(await f.Store.TryCreateAsync("locks/writer-dead", JsonSerializer.SerializeToUtf8Bytes(new
        {
            kind = "shared", ownerId = "dead", operation = "backup", host = Environment.MachineName, pid = gone.Id, startedAt = now, refreshedAt = now,
        }), Ct));
        await f.BackupAsync("vm", RandomChunk()).WaitAsync(TimeSpan.FromSeconds(30), Ct);
        var gc = await f.Repo.CollectGarbageAsync(Ct);
        Assert.Equal((0, 1), (gc.LiveWriters, gc.StaleLocksRemoved));
        Assert.False(File.Exists(Path.Combine(f.StorePath, "locks", "exclusive")));
    }

    [Fact]
    public async Task Prune_removes_manifests_per_vm_and_gc_then_frees_their_chunks()
    {
        await using var f = await CreateAsync(Grace);
        var ids = new List<string>();
        for (var i = 0; i < 4; i++)
        {
            ids.Add((await f.BackupAsync("vm1", RandomChunk(), TextChunk("common"))).Id);
            f.Clock.Advance(TimeSpan.FromHours(1));
        }
        var lone = (await f.BackupAsync("vm2", RandomChunk())).Id;
        var policy = new RetentionPolicy { KeepLast = 2 };

        var dry = await f.Repo.PruneAsync(policy, dryRun: true, Ct);
        Assert.True(dry.DryRun);
        Assert.Equal(ids.Take(2), dry.Removed.Select(b => b.Id).Order(StringComparer.Ordinal));
        Assert.Equal(5, (await f.Repo.ListBackupsAsync(Ct)).Count);

        var real = await f.Repo.PruneAsync(policy, dryRun: false, Ct);
        Assert.Equal(ids.Take(2), real.Removed.Select(b => b.Id).Order(StringComparer.Ordinal));
        Assert.Equal(ids.Skip(2).Append(lone).Order(StringComparer.Ordinal), (await f.Repo.ListBackupsAsync(Ct)).Select(b => b.Id).Order(StringComparer.Ordinal));
        Assert.All(real.Kept, k => Assert.Contains("last", k.Reasons));
        Assert.Equal(6, f.CountChunkFiles()); // prune touches no chunk

        f.Clock.Advance(Grace);
        Assert.Equal(2, (await f.Repo.CollectGarbageAsync(Ct)).ChunksDeleted); // the two pruned backups' own chunks
        Assert.True((await f.Repo.VerifyAsync(readData: true, Ct)).IsHealthy);
        await Assert.ThrowsAsync<ArgumentException>(() => f.Repo.PruneAsync(new RetentionPolicy(), dryRun: true, Ct));
    }
}
