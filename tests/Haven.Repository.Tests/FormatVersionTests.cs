using Haven.Storage;
using Xunit;
using static Haven.Repository.Tests.RepoFixture;

namespace Haven.Repository.Tests;

/// <summary>
/// Format version 2 (summaries + binary chunk indexes), version-1 repositories opened read-only, and
/// <c>repo upgrade</c> interrupted at every step (docs/repository-format.md, "Upgrading from version 1").
/// </summary>
public sealed class FormatVersionTests
{
    /// <summary>Every disk of a backup, read back through the public restore path (index, then chunks, each checked).</summary>
    private static async Task<List<byte[]>> RestoreAsync(Repository repo, string backupId)
    {
        var manifest = await repo.ReadManifestAsync(backupId, Ct);
        var disks = new List<byte[]>();
        foreach (var disk in manifest.Disks)
        {
            var bytes = new byte[disk.SizeBytes];
            for (var i = 0; i < disk.Chunks.Length; i++)
                if (disk.Chunks[i] is { } id)
                    await repo.ReadChunkAsync(id, bytes.AsMemory(i * disk.ChunkSize, (int)Math.Min(disk.ChunkSize, disk.SizeBytes - (long)i * disk.ChunkSize)), Ct);
            disks.Add(bytes);
        }
        return disks;
    }

    /// <summary>A repository with three backups (shared, zero and short chunks); returns each backup's expected disk.</summary>
    private static async Task<Dictionary<string, byte[]>> FillAsync(RepoFixture f)
    {
        var shared = TextChunk("shared");
        var expected = new Dictionary<string, byte[]>();
        foreach (var chunks in new byte[]?[][] { [shared, RandomChunk()], [RandomChunk(), null, shared], [shared, RandomChunk(1000)] })
        {
            var (id, _) = await f.BackupAsync("vm", chunks);
            expected[id] = [.. chunks.SelectMany(c => c ?? new byte[ChunkSize])];
            f.Clock.Advance(TimeSpan.FromMinutes(1));
        }
        return expected;
    }

    private static async Task AssertAllRestoreAsync(Repository repo, Dictionary<string, byte[]> expected)
    {
        var list = await repo.ListBackupsAsync(Ct);
        Assert.Empty(list.Unreadable);
        Assert.Equal(expected.Keys.Order(StringComparer.Ordinal), list.Select(b => b.Id));
        foreach (var (id, bytes) in expected) Assert.Equal(bytes, Assert.Single(await RestoreAsync(repo, id)));
    }

    private static Dictionary<string, byte[]> Snapshot(string root) => Directory.GetFiles(root, "*", SearchOption.AllDirectories)
        .ToDictionary(p => Path.GetRelativePath(root, p), File.ReadAllBytes);

    [Fact]
    public async Task Listing_and_a_dry_run_prune_read_only_summaries_never_an_index()
    {
        await using var f = await CreateAsync();
        var expected = await FillAsync(f);
        var counting = new CountingStore(new LocalDirectoryStore(f.StorePath, f.Clock));
        await using var repo = await Repository.OpenAsync(counting, Passphrase, f.Clock, Ct);
        counting.Reset();

        var list = await repo.ListBackupsAsync(Ct);
        Assert.Equal(3, list.Count);
        Assert.Equal((3, 0, 0), (counting.Reads("summaries"), counting.Reads("indexes"), counting.Reads("chunks")));
        Assert.Equal(0, counting.Lists("indexes/"));
        await repo.PruneAsync(new RetentionPolicy { KeepLast = 1 }, dryRun: true, Ct);
        Assert.Equal(0, counting.Reads("indexes"));

        // A restore reads exactly its backup's one index.
        await RestoreAsync(repo, expected.Keys.First());
        Assert.Equal(1, counting.Reads("indexes"));
    }

    [Fact]
    public async Task Swapped_edited_and_missing_index_objects_are_refused()
    {
        await using var f = await CreateAsync();
        var ids = (await FillAsync(f)).Keys.Order(StringComparer.Ordinal).ToArray();
        var a = f.IndexPath(ids[0]);
        var b = f.IndexPath(ids[1]);
        var bytesA = await File.ReadAllBytesAsync(a, Ct);
        await File.WriteAllBytesAsync(a, await File.ReadAllBytesAsync(b, Ct), Ct); // another index, sealed under another name
        var e = await Assert.ThrowsAsync<CorruptManifestException>(() => f.Repo.ReadManifestAsync(ids[0], Ct));
        Assert.Contains("authentication failed", e.Reason);
        await File.WriteAllBytesAsync(a, bytesA, Ct);
        bytesA[^20] ^= 1;
        await File.WriteAllBytesAsync(a, bytesA, Ct);
        await Assert.ThrowsAsync<CorruptManifestException>(() => f.Repo.ReadManifestAsync(ids[0], Ct));
        File.Delete(b);
        Assert.Contains("missing", (await Assert.ThrowsAsync<CorruptManifestException>(() => f.Repo.ReadManifestAsync(ids[1], Ct))).Reason);

        // Listing still shows them (it reads no index); verify names both; GC deletes nothing.
        Assert.Equal(3, (await f.Repo.ListBackupsAsync(Ct)).Count);
        var verify = await f.Repo.VerifyAsync(readData: false, Ct);
        Assert.Equal(ids[..2], verify.CorruptManifests.Select(m => m.BackupId));
        Assert.True((await f.Repo.CollectGarbageAsync(Ct)).SweepSkipped);
    }

    [Fact]
    public async Task Gc_deletes_the_indexes_of_pruned_backups_after_the_grace_period()
    {
        await using var f = await CreateAsync(TimeSpan.FromMinutes(10));
        var ids = (await FillAsync(f)).Keys.Order(StringComparer.Ordinal).ToArray();
        var prune = await f.Repo.PruneAsync(new RetentionPolicy { KeepLast = 1 }, dryRun: false, Ct);
        Assert.Equal(2, prune.Removed.Count);
        Assert.True(File.Exists(f.IndexPath(ids[0]))); // prune removes summaries only
        f.Clock.Advance(TimeSpan.FromHours(1));
        var gc = await f.Repo.CollectGarbageAsync(Ct);
        Assert.Equal(2, gc.IndexesDeleted);
        Assert.False(File.Exists(f.IndexPath(ids[0])));
        Assert.True(File.Exists(f.IndexPath(ids[2])));
        Assert.True((await f.Repo.VerifyAsync(readData: true, Ct)).IsHealthy);
    }

    [Fact]
    public async Task A_version_1_repository_lists_restores_and_verifies_and_refuses_backup_prune_gc_and_copy_into_it_unchanged()
    {
        await using var f = await CreateAsync(formatVersion: 1);
        var expected = await FillAsync(f);
        await using var repo = await f.OpenAgainAsync();
        Assert.Equal((1, true), (repo.FormatVersion, repo.IsReadOnly));
        await AssertAllRestoreAsync(repo, expected);
        Assert.True((await repo.VerifyAsync(readData: true, Ct)).IsHealthy);
        var before = Snapshot(f.StorePath);

        var refusals = new List<RepositoryReadOnlyException>
        {
            await Assert.ThrowsAsync<RepositoryReadOnlyException>(() => repo.BeginBackupAsync("h", Ct)),
            await Assert.ThrowsAsync<RepositoryReadOnlyException>(() => repo.PruneAsync(new RetentionPolicy { KeepLast = 1 }, dryRun: false, Ct)),
            await Assert.ThrowsAsync<RepositoryReadOnlyException>(() => repo.CollectGarbageAsync(Ct)),
        };
        await using (var source = await CreateAsync())
        {
            var (sourceBackup, _) = await source.BackupAsync("other", RandomChunk());
            refusals.Add(await Assert.ThrowsAsync<RepositoryReadOnlyException>(() => BackupCopy.CopyAsync(source.Repo, sourceBackup, repo, "h", null, Ct)));
            // Copying out of it works: a version-1 backup is read like any other.
            var copy = await BackupCopy.CopyAsync(repo, expected.Keys.First(), source.Repo, "h", null, Ct);
            Assert.Equal(expected.Values.First(), Assert.Single(await RestoreAsync(source.Repo, copy.TargetBackupId)));
        }
        foreach (var e in refusals)
        {
            Assert.Contains("haven repo upgrade", e.Message);
            Assert.DoesNotContain('\n', e.Message);
        }
        // A dry run changes nothing, so it is allowed.
        Assert.Equal(2, (await repo.PruneAsync(new RetentionPolicy { KeepLast = 1 }, dryRun: true, Ct)).Removed.Count);
        var after = Snapshot(f.StorePath);
        Assert.Equal(before.Keys.Order(), after.Keys.Order());
        foreach (var (key, bytes) in before) Assert.Equal(bytes, after[key]);
    }

    public static TheoryData<string, int> UpgradeSteps => new()
    {
        { "upgrade.after-lock", 1 },
        { "upgrade.after-summary", 1 },
        { "upgrade.after-summary", 3 },
        { "upgrade.after-staged-config", 1 },
        { "upgrade.after-config", 1 },
        { "upgrade.after-delete", 1 },
        { "upgrade.after-delete", 3 },
    };

    private sealed class Killed : Exception;

    [Theory]
    [MemberData(nameof(UpgradeSteps))]
    public async Task Upgrade_interrupted_at_a_step_leaves_a_readable_repository_and_a_rerun_finishes_it(string step, int hit)
    {
        await using var f = await CreateAsync(formatVersion: 1);
        var expected = await FillAsync(f);
        await using (var doomed = await f.OpenAgainAsync())
        {
            var seen = 0;
            doomed.AtStep = name =>
            {
                if (name == step && ++seen == hit) throw new Killed();
            };
            await Assert.ThrowsAsync<Killed>(() => doomed.UpgradeAsync(Passphrase, Ct));
        }

        // Interrupted: whichever version the config now says, every backup lists, restores and verifies.
        await using (var between = await f.OpenAgainAsync())
        {
            await AssertAllRestoreAsync(between, expected);
            Assert.True((await between.VerifyAsync(readData: true, Ct)).IsHealthy);
        }

        await using (var again = await f.OpenAgainAsync())
        {
            var result = await again.UpgradeAsync(Passphrase, Ct);
            Assert.Equal(2, result.ToVersion);
            Assert.Equal(2, again.FormatVersion);
        }
        Assert.False(File.Exists(Path.Combine(f.StorePath, "config.v2")));
        Assert.Empty(Directory.Exists(Path.Combine(f.StorePath, "backups")) ? Directory.GetFiles(Path.Combine(f.StorePath, "backups")) : []);
        await using var upgraded = await f.OpenAgainAsync();
        Assert.Equal((2, false), (upgraded.FormatVersion, upgraded.IsReadOnly));
        await AssertAllRestoreAsync(upgraded, expected);
        Assert.True((await upgraded.VerifyAsync(readData: true, Ct)).IsHealthy);

        // Writable now: a backup, and GC keeps every chunk the upgraded backups use.
        await using (var w = await upgraded.BeginBackupAsync("h", Ct))
        {
            var data = RandomChunk();
            var id = w.ComputeId(data);
            await w.PutChunkAsync(id, data, Ct);
            expected[await w.CommitAsync(f.Manifest("vm", [id], ChunkSize), Ct)] = data;
        }
        f.Clock.Advance(TimeSpan.FromDays(1));
        Assert.Equal(0, (await upgraded.CollectGarbageAsync(Ct)).ChunksDeleted);
        await AssertAllRestoreAsync(upgraded, expected);
    }

    [Fact]
    public async Task A_config_replaced_by_an_upgrade_on_a_store_without_atomic_replace_is_found_in_config_v2()
    {
        await using var f = await CreateAsync(formatVersion: 1);
        var expected = await FillAsync(f);
        await using (var repo = await f.OpenAgainAsync()) await repo.UpgradeAsync(Passphrase, Ct);
        // As if the store deleted config before writing the new one and the process died between the two.
        var config = Path.Combine(f.StorePath, "config");
        await File.WriteAllBytesAsync(Path.Combine(f.StorePath, "config.v2"), await File.ReadAllBytesAsync(config, Ct), Ct);
        File.Delete(config);
        await using var again = await f.OpenAgainAsync();
        Assert.Equal(2, again.FormatVersion);
        await AssertAllRestoreAsync(again, expected);
    }

    [Fact]
    public async Task Upgrade_refuses_a_repository_with_an_unreadable_manifest_and_changes_nothing()
    {
        await using var f = await CreateAsync(formatVersion: 1);
        var ids = (await FillAsync(f)).Keys.Order(StringComparer.Ordinal).ToArray();
        var path = f.ManifestPath(ids[1]);
        var bytes = await File.ReadAllBytesAsync(path, Ct);
        bytes[40] ^= 1;
        await File.WriteAllBytesAsync(path, bytes, Ct);
        await using var repo = await f.OpenAgainAsync();
        var e = await Assert.ThrowsAsync<UpgradeRefusedException>(() => repo.UpgradeAsync(Passphrase, Ct));
        Assert.Contains(ids[1], e.Message);
        Assert.Equal(1, (await f.OpenAgainAsync()).FormatVersion);
    }
}
