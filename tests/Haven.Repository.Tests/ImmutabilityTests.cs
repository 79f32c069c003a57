using System.Text;
using System.Text.Json;
using Haven.Storage;
using Haven.TestSupport;
using Xunit;
using static Haven.Repository.Tests.Backups;
using static Haven.Repository.Tests.RepoFixture;

namespace Haven.Repository.Tests;

/// <summary>Object-lock retention of manifests and chunks, against an in-memory store that enforces it like S3.</summary>
public sealed class ImmutabilityTests
{
    private static readonly DateTimeOffset Start = new(2025, 3, 1, 12, 0, 0, TimeSpan.Zero);

    private static RepositoryOptions Options(int days, RetentionMode mode = RetentionMode.Compliance) => new()
    {
        ChunkSize = ChunkSize,
        Kdf = RepositoryKdf.Cheapest,
        GcGracePeriod = TimeSpan.FromMinutes(10),
        Immutability = new RepositoryImmutability { Mode = mode, Days = days },
    };

    /// <summary>Every chunk a backup references is locked at least until the backup's manifest.</summary>
    private static async Task AssertChunksOutliveManifestsAsync(Repository repo, FakeLockStore store)
    {
        foreach (var b in await repo.ListBackupsAsync(Ct))
        {
            var manifestLock = store.RetentionOf("summaries/" + b.Id)!;
            foreach (var id in (await repo.ReadManifestAsync(b.Id, Ct)).Disks.SelectMany(d => d.Chunks).OfType<ChunkId>())
            {
                var chunkLock = store.RetentionOf($"chunks/{id.ToString()[..2]}/{id}")!;
                Assert.True(chunkLock.RetainUntil >= manifestLock.RetainUntil, $"chunk {id} of {b.Id} is locked until {chunkLock.RetainUntil}, the backup until {manifestLock.RetainUntil}");
                Assert.Equal(manifestLock.Mode, chunkLock.Mode);
            }
        }
    }

    [Fact]
    public async Task Init_with_immutability_is_refused_without_object_lock_and_writes_nothing()
    {
        using var dir = new TempDir();
        var clock = new ManualClock(Start);
        var plain = new LocalDirectoryStore(dir.File("repo"), clock);
        var e = await Assert.ThrowsAsync<ImmutabilityUnsupportedException>(() => Repository.InitAsync(plain, Passphrase, Options(30), clock, Ct));
        Assert.Contains("object lock", e.Message);
        Assert.False(Directory.Exists(dir.File("repo")) && Directory.EnumerateFileSystemEntries(dir.File("repo")).Any());

        var disabled = new FakeLockStore(clock, lockEnabled: false);
        e = await Assert.ThrowsAsync<ImmutabilityUnsupportedException>(() => Repository.InitAsync(disabled, Passphrase, Options(30), clock, Ct));
        Assert.Contains("not have object lock enabled", e.Message);
        Assert.True(disabled.Empty);

        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => Repository.InitAsync(new FakeLockStore(clock), Passphrase, Options(0), clock, Ct));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => Repository.InitAsync(new FakeLockStore(clock), Passphrase, Options(36501), clock, Ct));
    }

    [Fact]
    public async Task The_setting_is_in_the_config_authenticated_and_needs_a_lock_store_to_write()
    {
        var clock = new ManualClock(Start);
        var store = new FakeLockStore(clock);
        await (await Repository.InitAsync(store, Passphrase, Options(30, RetentionMode.Governance), clock, Ct)).DisposeAsync();
        var config = JsonDocument.Parse((await store.GetAsync("config", Ct))!).RootElement.GetProperty("immutability");
        Assert.Equal(("governance", 30), (config.GetProperty("mode").GetString(), config.GetProperty("days").GetInt32()));

        await using (var repo = await Repository.OpenAsync(store, Passphrase, clock, Ct))
            Assert.Equal(new RepositoryImmutability { Mode = RetentionMode.Governance, Days = 30 }, repo.Immutability);

        // Readable through a store without object lock (a mirror), but not writable through it.
        await using (var viaPlain = await Repository.OpenAsync(new CountingStore(store), Passphrase, clock, Ct))
        {
            await Assert.ThrowsAsync<ImmutabilityUnsupportedException>(() => viaPlain.BeginBackupAsync("h", Ct));
            Assert.Empty(await viaPlain.ListBackupsAsync(Ct));
        }

        // Weakening it in the config breaks the key wrap, as for every fixed parameter.
        var json = Encoding.UTF8.GetString((await store.GetAsync("config", Ct))!);
        foreach (var edited in new[] { json.Replace("\"days\": 30", "\"days\": 1"), json.Replace("\"governance\"", "\"compliance\"") })
        {
            Assert.NotEqual(json, edited);
            var copy = new FakeLockStore(clock);
            await copy.PutAsync("config", Encoding.UTF8.GetBytes(edited), Ct);
            await Assert.ThrowsAsync<WrongPassphraseException>(() => Repository.OpenAsync(copy, Passphrase, clock, Ct));
        }
    }

    [Fact]
    public async Task Backups_lock_their_manifest_and_chunks_and_reused_chunks_are_extended_once_per_slack()
    {
        using var dir = new TempDir();
        var clock = new ManualClock(Start);
        var store = new FakeLockStore(clock);
        await (await Repository.InitAsync(store, Passphrase, Options(8), clock, Ct)).DisposeAsync();
        var cache = new ChunkIndexCache(dir.File("cache"));
        await using var repo = await Repository.OpenAsync(store, Passphrase, cache, clock, Ct);
        Assert.Equal(TimeSpan.FromDays(2), repo.Immutability!.Slack);
        var (a, b, c) = (RandomChunk(), TextChunk("b"), RandomChunk());

        var first = await BackupAsync(repo, "vm", clock.GetUtcNow(), a, b);
        Assert.Equal(new ObjectRetention(RetentionMode.Compliance, Start.AddDays(8)), store.RetentionOf("summaries/" + first.Id));
        Assert.Equal(Start.AddDays(10), store.RetentionOf($"chunks/{first.Index[0].ToString()![..2]}/{first.Index[0]}")!.RetainUntil);
        Assert.Equal(0, store.Extends); // its own chunks already outlive it

        clock.Advance(TimeSpan.FromDays(1)); // within the slack: a's lock (day 10) covers a backup until day 9
        var second = await BackupAsync(repo, "vm", clock.GetUtcNow(), a, c);
        Assert.Equal((true, 0L, 0), (second.KnownFromCache, second.RetentionsExtended, store.Extends));

        clock.Advance(TimeSpan.FromDays(2)); // day 3: a backup until day 11 outlives a's lock: extended once
        var third = await BackupAsync(repo, "vm", clock.GetUtcNow(), a);
        Assert.Equal((1L, 1), (third.RetentionsExtended, store.Extends));
        Assert.Equal(Start.AddDays(13), store.RetentionOf($"chunks/{first.Index[0].ToString()![..2]}/{first.Index[0]}")!.RetainUntil);
        var fourth = await BackupAsync(repo, "vm", clock.GetUtcNow(), a, c);
        Assert.Equal(0, fourth.RetentionsExtended); // the cache remembers the new retain-until
        Assert.Equal(1, store.Extends);

        // A host without a cache knows no retention: it extends what it references once per backup.
        await using (var other = await Repository.OpenAsync(store, Passphrase, clock, Ct))
        {
            var made = await BackupAsync(other, "vm2", clock.GetUtcNow(), a, b, c);
            Assert.Equal(3, made.RetentionsExtended);
        }
        await AssertChunksOutliveManifestsAsync(repo, store);
        Assert.True((await repo.VerifyAsync(readData: true, Ct)).IsHealthy);
        Assert.Equal(Concat(ChunkSize, a, c), (await RestoreAsync(repo, fourth.Id))[0]);
    }

    [Fact]
    public async Task Prune_and_gc_keep_locked_objects_report_them_and_take_them_once_expired()
    {
        var clock = new ManualClock(Start);
        var store = new FakeLockStore(clock);
        await using var repo = await Repository.InitAsync(store, Passphrase, Options(1), clock, Ct);
        var old = await BackupAsync(repo, "vm", clock.GetUtcNow(), RandomChunk());
        clock.Advance(TimeSpan.FromHours(1));
        var recent = await BackupAsync(repo, "vm", clock.GetUtcNow(), RandomChunk());
        var policy = new RetentionPolicy { KeepLast = 1 };

        var dry = await repo.PruneAsync(policy, dryRun: true, Ct);
        Assert.Empty(dry.Removed);
        Assert.Equal((old.Id, (DateTimeOffset?)Start.AddDays(1)), (Assert.Single(dry.Locked).Backup.Id, dry.Locked[0].RetainUntil));
        var pruned = await repo.PruneAsync(policy, dryRun: false, Ct);
        Assert.Empty(pruned.Removed);
        Assert.Equal(old.Id, Assert.Single(pruned.Locked).Backup.Id);
        Assert.Equal(Start.AddDays(1), pruned.Locked[0].RetainUntil);
        Assert.Equal(2, (await repo.ListBackupsAsync(Ct)).Count);

        // Chunks of a backup that never committed: unreferenced, old, but locked (1 day + 1 day slack).
        await using (var crashed = await repo.BeginBackupAsync("crashed", Ct))
            for (var i = 0; i < 3; i++)
            {
                var data = RandomChunk();
                await crashed.PutChunkAsync(crashed.ComputeId(data), data, Ct);
            }
        clock.Advance(TimeSpan.FromHours(1));
        var gc = await repo.CollectGarbageAsync(Ct);
        Assert.Equal((0L, 3L), (gc.ChunksDeleted, gc.ChunksLocked));
        Assert.True(gc.BytesLocked > 3L * ChunkSize);

        clock.Advance(TimeSpan.FromDays(3)); // every retention has passed
        pruned = await repo.PruneAsync(policy, dryRun: false, Ct);
        Assert.Equal(old.Id, Assert.Single(pruned.Removed).Id);
        Assert.Empty(pruned.Locked);
        gc = await repo.CollectGarbageAsync(Ct);
        Assert.Equal((4L, 0L), (gc.ChunksDeleted, gc.ChunksLocked)); // three abandoned + the pruned backup's one
        Assert.Equal(recent.Id, Assert.Single(await repo.ListBackupsAsync(Ct)).Id);
        Assert.True((await repo.VerifyAsync(readData: true, Ct)).IsHealthy);
    }

    [Fact]
    public async Task Verify_reports_a_corrupt_locked_chunk_without_failing()
    {
        var clock = new ManualClock(Start);
        var store = new FakeLockStore(clock);
        await using var repo = await Repository.InitAsync(store, Passphrase, Options(5), clock, Ct);
        var made = await BackupAsync(repo, "vm", clock.GetUtcNow(), RandomChunk(), TextChunk("fine"));
        var key = $"chunks/{made.Index[0].ToString()![..2]}/{made.Index[0]}";
        store.Tamper(key, bytes => { bytes[40] ^= 4; return bytes; });

        var verify = await repo.VerifyAsync(readData: true, Ct);
        var problem = Assert.Single(verify.CorruptChunks);
        Assert.Equal((made.Index[0]!.Value, (string?)null, (DateTimeOffset?)Start.AddDays(5) + repo.Immutability!.Slack), (problem.ChunkId, problem.MovedTo, problem.LockedUntil));
        Assert.Equal([made.Id], verify.DamagedBackups);
        Assert.NotNull(await store.StatAsync(key, Ct)); // left in place
        Assert.DoesNotContain(store.Keys("chunks/"), k => k.EndsWith(".bad", StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_backup_referencing_a_chunk_that_is_gone_is_refused_before_its_manifest_is_locked()
    {
        var clock = new ManualClock(Start);
        var store = new FakeLockStore(clock);
        await using var repo = await Repository.InitAsync(store, Passphrase, Options(1), clock, Ct);
        var data = RandomChunk();
        await BackupAsync(repo, "vm", clock.GetUtcNow(), data);
        clock.Advance(TimeSpan.FromDays(3));

        await using var w = await repo.BeginBackupAsync("h", Ct);
        var id = w.ComputeId(data);
        var manifest = new BackupManifest
        {
            VmName = "vm",
            Disks = [new DiskManifest { Name = "disk0", SizeBytes = ChunkSize, ChunkSize = ChunkSize, Chunks = [id] }],
        };
        Assert.False(await w.PutChunkAsync(id, data, Ct)); // known from the listing
        // Removed behind the writer's back (its retention is over; as a GC after a prune would).
        Assert.True(await store.DeleteAsync($"chunks/{id.ToString()[..2]}/{id}", Ct));
        var e = await Assert.ThrowsAsync<ChunksMissingException>(() => w.CommitAsync(manifest, Ct));
        Assert.Equal([id], e.ChunkIds);
        Assert.Single(await repo.ListBackupsAsync(Ct)); // no locked, broken manifest was written
        Assert.True(await w.PutChunkAsync(id, data, Ct));
        var backupId = await w.CommitAsync(manifest, Ct);
        Assert.Equal(0, w.RetentionsExtended); // stored just now: its own retention covers the backup
        Assert.Equal(data, (await RestoreAsync(repo, backupId))[0]);
    }
}
