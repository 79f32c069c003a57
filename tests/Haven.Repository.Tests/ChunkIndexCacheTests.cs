using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text.Json;
using Haven.Storage;
using Xunit;
using static Haven.Repository.Tests.Backups;
using static Haven.Repository.Tests.RepoFixture;

namespace Haven.Repository.Tests;

/// <summary>The host-local chunk index cache: when writers may skip the chunks/ listing, and that skipping never loses data.</summary>
public sealed class ChunkIndexCacheTests
{
    private const string Chunks = "chunks/";

    /// <summary>The fixture's repository opened as a host with its own cache folder, through a listing counter.</summary>
    private static async Task<(Repository Repo, CountingStore Store, ChunkIndexCache Cache)> HostAsync(RepoFixture f, string name, TimeSpan? maxAge = null)
    {
        var store = new CountingStore(new LocalDirectoryStore(f.StorePath, f.Clock));
        var cache = new ChunkIndexCache(f.Dir.File(name + "-cache"), maxAge);
        return (await Repository.OpenAsync(store, Passphrase, cache, f.Clock, Ct), store, cache);
    }

    [Fact]
    public async Task A_second_writer_with_the_cache_does_not_list_chunks()
    {
        await using var f = await CreateAsync();
        var (repo, store, cache) = await HostAsync(f, "a");
        await using var _ = repo;
        var (a, b, c) = (RandomChunk(), TextChunk("b"), RandomChunk());

        var first = await BackupAsync(repo, "vm", f.Clock.GetUtcNow(), a, b);
        Assert.False(first.KnownFromCache);
        Assert.Equal(1, store.Lists(Chunks));
        Assert.True(File.Exists(cache.PathFor(repo.Id)));

        var second = await BackupAsync(repo, "vm", f.Clock.GetUtcNow(), a, null, c);
        Assert.True(second.KnownFromCache);
        Assert.Equal(2, second.KnownChunkCount); // what the first writer stored
        Assert.Equal(1, second.ChunksNew); // a was deduplicated from the cache
        var third = await BackupAsync(repo, "vm", f.Clock.GetUtcNow(), c);
        Assert.Equal((true, 3, 0L), (third.KnownFromCache, third.KnownChunkCount, third.ChunksNew));
        Assert.Equal(1, store.Lists(Chunks)); // still the first writer's listing only
        Assert.Equal(2, cache.ListingsAvoided);
        Assert.Equal(3, f.CountChunkFiles());
        Assert.Equal(Concat(ChunkSize, a, null, c), (await RestoreAsync(repo, second.Id))[0]);
    }

    [Fact]
    public async Task A_gc_bumps_the_epoch_and_the_next_writer_lists_again()
    {
        await using var f = await CreateAsync(TimeSpan.FromMinutes(10));
        var (repo, store, cache) = await HostAsync(f, "a");
        await using var _ = repo;
        await BackupAsync(repo, "vm", f.Clock.GetUtcNow(), RandomChunk());
        Assert.True((await BackupAsync(repo, "vm", f.Clock.GetUtcNow(), RandomChunk())).KnownFromCache);

        // A writer that started on the cache and overlaps a GC saves it under the old epoch: never used again.
        await using (var w = await repo.BeginBackupAsync("h", Ct))
        {
            Assert.True(w.KnownFromCache);
            await f.Repo.CollectGarbageAsync(Ct);
            var data = RandomChunk();
            await w.PutChunkAsync(w.ComputeId(data), data, Ct);
            await w.CommitAsync(f.Manifest("vm", [w.ComputeId(data)], ChunkSize), Ct);
        }
        store.Reset();
        var after = await BackupAsync(repo, "vm", f.Clock.GetUtcNow(), RandomChunk());
        Assert.False(after.KnownFromCache);
        Assert.Equal(1, store.Lists(Chunks));
        Assert.Equal(3, after.KnownChunkCount);
        // The fresh listing was saved at the new epoch: the writer after that uses it again.
        Assert.True((await BackupAsync(repo, "vm", f.Clock.GetUtcNow(), RandomChunk())).KnownFromCache);
        Assert.Equal(1, store.Lists(Chunks));

        // An epoch bump by anyone (here another host's GC) is seen the same way.
        await f.Repo.CollectGarbageAsync(Ct);
        Assert.False((await BackupAsync(repo, "vm", f.Clock.GetUtcNow(), RandomChunk())).KnownFromCache);
        Assert.Equal(2, store.Lists(Chunks));
    }

    [Fact]
    public async Task A_corrupt_foreign_old_or_invalidated_cache_file_is_ignored_and_rebuilt()
    {
        await using var f = await CreateAsync();
        await using var g = await CreateAsync();
        var (repo, store, cache) = await HostAsync(f, "a", maxAge: TimeSpan.FromDays(7));
        await using var _ = repo;
        var kept = RandomChunk();
        await BackupAsync(repo, "vm", f.Clock.GetUtcNow(), kept);
        var path = cache.PathFor(repo.Id);
        var good = await File.ReadAllBytesAsync(path, Ct);

        async Task ExpectRelistAsync(string why)
        {
            var before = store.Lists(Chunks);
            var data = RandomChunk();
            var made = await BackupAsync(repo, "vm", f.Clock.GetUtcNow(), kept, data);
            Assert.False(made.KnownFromCache, why);
            Assert.Equal(before + 1, store.Lists(Chunks));
            Assert.Equal(0 + 1, made.ChunksNew); // the listing knew "kept"
            Assert.Equal(Concat(ChunkSize, kept, data), (await RestoreAsync(repo, made.Id))[0]);
            Assert.True((await BackupAsync(repo, "vm", f.Clock.GetUtcNow(), kept)).KnownFromCache, why + ": rebuilt");
        }

        var flipped = (byte[])good.Clone();
        flipped[ChunkIndexCache.HeaderSize + 5] ^= 1; // an id bit: the checksum catches it
        await File.WriteAllBytesAsync(path, flipped, Ct);
        await ExpectRelistAsync("bit flip");

        await File.WriteAllBytesAsync(path, (await File.ReadAllBytesAsync(path, Ct))[..100], Ct);
        await ExpectRelistAsync("truncated");

        // g's cache file (valid, but another repository's) under f's name.
        var gCache = new ChunkIndexCache(f.Dir.File("g-cache"));
        await using (var gRepo = await Repository.OpenAsync(g.Store, Passphrase, gCache, g.Clock, Ct))
            await BackupAsync(gRepo, "vm", g.Clock.GetUtcNow(), RandomChunk());
        File.Copy(gCache.PathFor(g.Repo.Id), path, overwrite: true);
        await ExpectRelistAsync("other repository");

        f.Clock.Advance(TimeSpan.FromDays(8));
        await ExpectRelistAsync("older than the maximum age");

        cache.Invalidate(repo.Id);
        Assert.False(File.Exists(path));
        await ExpectRelistAsync("invalidated");
    }

    [Fact]
    public async Task A_chunk_deleted_by_gc_is_never_treated_as_known_afterwards()
    {
        var grace = TimeSpan.FromMinutes(10);
        await using var f = await CreateAsync(grace);
        var (repo, _, cache) = await HostAsync(f, "a");
        await using var __ = repo;
        var reused = TextChunk("comes back");
        await BackupAsync(repo, "vm", f.Clock.GetUtcNow(), reused);
        f.Clock.Advance(TimeSpan.FromMinutes(1));
        await BackupAsync(repo, "vm", f.Clock.GetUtcNow(), RandomChunk());
        Assert.Single((await f.Repo.PruneAsync(new RetentionPolicy { KeepLast = 1 }, dryRun: false, Ct)).Removed);
        f.Clock.Advance(TimeSpan.FromHours(1));

        // A writer that started on the cache (which knows "reused") while GC deletes it: told to store it again.
        await using (var w = await repo.BeginBackupAsync("h", Ct))
        {
            Assert.True(w.KnownFromCache);
            var id = w.ComputeId(reused);
            Assert.False(await w.PutChunkAsync(id, reused, Ct));
            Assert.Equal(1, (await f.Repo.CollectGarbageAsync(Ct)).ChunksDeleted);
            await Assert.ThrowsAsync<ChunksMissingException>(() => w.CommitAsync(f.Manifest("vm", [id], ChunkSize), Ct));
            Assert.True(await w.PutChunkAsync(id, reused, Ct));
            var fixedId = await w.CommitAsync(f.Manifest("vm", [id], ChunkSize), Ct);
            Assert.Equal(reused, (await RestoreAsync(repo, fixedId))[0]);
        }
        // The epoch moved under that writer: whatever it saved carries the old epoch, and is not used again.

        // Prune and GC again, with no writer running: the chunk goes, and the next backup must store it.
        f.Clock.Advance(TimeSpan.FromMinutes(1));
        await BackupAsync(repo, "vm", f.Clock.GetUtcNow(), RandomChunk());
        Assert.True((await BackupAsync(repo, "vm", f.Clock.GetUtcNow(), RandomChunk())).KnownFromCache);
        await f.Repo.PruneAsync(new RetentionPolicy { KeepLast = 1 }, dryRun: false, Ct);
        f.Clock.Advance(TimeSpan.FromHours(1));
        Assert.True((await f.Repo.CollectGarbageAsync(Ct)).ChunksDeleted >= 1);
        Assert.False(File.Exists(f.ChunkPath(repo.ComputeId(reused))));

        var again = await BackupAsync(repo, "vm", f.Clock.GetUtcNow(), reused);
        Assert.False(again.KnownFromCache);
        Assert.Equal(1, again.ChunksNew); // stored anew, not deduplicated against the stale cache
        Assert.Equal(reused, (await RestoreAsync(repo, again.Id))[0]);
        Assert.True((await f.Repo.VerifyAsync(readData: true, Ct)).IsHealthy);
    }

    [Fact]
    public async Task A_writer_that_starts_during_a_deletion_neither_uses_nor_saves_the_cache()
    {
        await using var f = await CreateAsync();
        var (repo, store, cache) = await HostAsync(f, "a");
        await using var _ = repo;
        await BackupAsync(repo, "vm", f.Clock.GetUtcNow(), RandomChunk());
        Assert.True(File.Exists(cache.PathFor(repo.Id)));
        var now = f.Clock.GetUtcNow();
        var gcLock = JsonSerializer.SerializeToUtf8Bytes(new { kind = "exclusive", ownerId = "0123", operation = "gc", host = "other", pid = 1, startedAt = now, refreshedAt = now, deleting = true });
        Assert.True(await f.Store.TryCreateAsync("locks/exclusive", gcLock, Ct));

        await using (var w = await repo.BeginBackupAsync("h", Ct))
        {
            Assert.False(w.KnownFromCache);
            Assert.Equal(2, store.Lists(Chunks));
            await f.Store.DeleteAsync("locks/exclusive", Ct);
            var data = RandomChunk();
            await w.PutChunkAsync(w.ComputeId(data), data, Ct);
            await w.CommitAsync(f.Manifest("vm", [w.ComputeId(data)], ChunkSize), Ct);
        }
        Assert.False(File.Exists(cache.PathFor(repo.Id)));
        Assert.False((await BackupAsync(repo, "vm", f.Clock.GetUtcNow(), RandomChunk())).KnownFromCache);
    }

    [Fact]
    public async Task Two_hosts_with_their_own_caches_write_the_same_repository_correctly()
    {
        var grace = TimeSpan.FromMinutes(10);
        await using var f = await CreateAsync(grace);
        var (hostA, _, cacheA) = await HostAsync(f, "a");
        var (hostB, _, cacheB) = await HostAsync(f, "b");
        await using var _a = hostA;
        await using var _b = hostB;
        var pool = Enumerable.Range(0, 12).Select(i => i % 2 == 0 ? TextChunk("pool" + i) : RandomChunk()).ToArray();
        var made = new List<(Repository Repo, string Id, byte[] Expected)>();

        for (var round = 0; round < 4; round++)
        {
            // Both hosts at once, overlapping data: each learns of the other's chunks only by TryCreate saying "exists".
            var results = await Task.WhenAll(new[] { hostA, hostB }.Select((repo, h) => Task.Run(async () =>
            {
                var picks = Enumerable.Range(0, 6).Select(k => pool[(round * 3 + h * 2 + k) % pool.Length]).ToArray();
                var m = await BackupAsync(repo, "vm" + h, f.Clock.GetUtcNow(), picks);
                return (repo, m.Id, Concat(ChunkSize, picks));
            }, Ct)));
            made.AddRange(results);
            if (round == 1)
            {
                f.Clock.Advance(TimeSpan.FromHours(1));
                await f.Repo.CollectGarbageAsync(Ct); // the epoch moves: both caches are rebuilt next round
            }
        }
        Assert.True(cacheA.ListingsAvoided + cacheB.ListingsAvoided >= 2);
        Assert.Equal(pool.Length, f.CountChunkFiles());
        foreach (var (repo, id, expected) in made)
        {
            Assert.Equal(expected, (await RestoreAsync(repo, id))[0]);
            Assert.Equal(expected, (await RestoreAsync(repo == hostA ? hostB : hostA, id))[0]);
        }
        Assert.True((await f.Repo.VerifyAsync(readData: true, Ct)).IsHealthy);
    }

    [Fact]
    public async Task The_cache_file_has_the_documented_layout()
    {
        await using var f = await CreateAsync();
        var (repo, _, cache) = await HostAsync(f, "a");
        await using var _ = repo;
        var made = await BackupAsync(repo, "vm", f.Clock.GetUtcNow(), RandomChunk(), RandomChunk(), TextChunk("x"));

        // Read as docs/repository-format.md, "Chunk index cache", describes it.
        var file = await File.ReadAllBytesAsync(Path.Combine(cache.Directory, repo.Id + ".chunk-index"), Ct);
        Assert.Equal("HVCI"u8.ToArray(), file[..4]);
        Assert.Equal([1, 0, 0, 0], file[4..8]);
        Assert.Equal(Convert.FromHexString(repo.Id), file[8..40]);
        Assert.Equal(0, BinaryPrimitives.ReadInt64LittleEndian(file.AsSpan(40))); // chunk-epoch: never bumped
        Assert.Equal(f.Clock.GetUtcNow().ToUnixTimeSeconds(), BinaryPrimitives.ReadInt64LittleEndian(file.AsSpan(48)));
        var count = (int)BinaryPrimitives.ReadInt64LittleEndian(file.AsSpan(56));
        Assert.Equal(3, count);
        Assert.Equal(64 + count * 40 + 32, file.Length);
        Assert.Equal(SHA256.HashData(file.AsSpan(0, file.Length - 32)), file[^32..]);
        var ids = Enumerable.Range(0, count).Select(i => Convert.ToHexStringLower(file, 64 + 32 * i, 32)).ToList();
        Assert.Equal(ids.Order(StringComparer.Ordinal), ids);
        Assert.Equal(made.Index.Select(i => i!.Value.ToString()).Order(StringComparer.Ordinal), ids);
        for (var i = 0; i < count; i++) Assert.Equal(0, BinaryPrimitives.ReadInt64LittleEndian(file.AsSpan(64 + 32 * count + 8 * i)));
    }
}
