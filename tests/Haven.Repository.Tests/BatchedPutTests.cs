using Haven.TestSupport;
using Xunit;
using static Haven.Repository.Tests.RepoFixture;

namespace Haven.Repository.Tests;

/// <summary>The backup's hot path: PutChunkAsync(plaintext) stores without a sync per chunk and the commit makes the batch durable first.</summary>
public sealed class BatchedPutTests
{
    [Fact]
    public async Task Batched_chunks_are_not_in_the_store_before_the_commit_and_restore_byte_exact_after_it()
    {
        await using var f = await CreateAsync();
        var random = RandomChunk();
        var text = TextChunk("batched");
        string backupId;
        ChunkId a, b;
        await using (var w = await f.Repo.BeginBackupAsync("host-a", Ct))
        {
            (a, var createdA) = await w.PutChunkAsync(random, Ct);
            (b, var createdB) = await w.PutChunkAsync(text, Ct);
            Assert.True(createdA && createdB);
            Assert.Equal(w.ComputeId(random), a);
            Assert.False((await w.PutChunkAsync(random, Ct)).Created); // the same writer again: deduplicated
            // Staged, not yet durable: nothing names them yet, not even a chunk key.
            Assert.Equal(0, f.CountChunkFiles());
            backupId = await w.CommitAsync(f.Manifest("vm", [a, null, b], 3L * ChunkSize), Ct);
            Assert.Equal(2, f.CountChunkFiles());
        }
        var manifest = await (await f.OpenAgainAsync()).ReadManifestAsync(backupId, Ct);
        Assert.Equal((2L, 2L), (manifest.Stats.ChunksNew, manifest.Stats.ChunksReferenced));
        var buffer = new byte[ChunkSize];
        Assert.Equal(ChunkSize, await f.Repo.ReadChunkAsync(a, buffer, Ct));
        Assert.Equal(random, buffer);
        Assert.Equal(ChunkSize, await f.Repo.ReadChunkAsync(b, buffer, Ct));
        Assert.Equal(text, buffer);
        Assert.False(Directory.EnumerateFileSystemEntries(Path.Combine(f.StorePath, ".staging")).Any());
    }

    [Fact]
    public async Task Batched_chunks_of_a_backup_that_is_not_committed_are_kept_for_the_next_one()
    {
        await using var f = await CreateAsync();
        var data = RandomChunk();
        await using (var w = await f.Repo.BeginBackupAsync("host-a", Ct))
            await w.PutChunkAsync(data, Ct); // the backup fails before its commit
        Assert.Equal(1, f.CountChunkFiles());
        await using var next = await f.Repo.BeginBackupAsync("host-a", Ct);
        Assert.False((await next.PutChunkAsync(data, Ct)).Created); // reused, not stored again
    }

    [Fact]
    public async Task Incompressible_chunks_are_stored_raw_and_compressible_ones_compressed()
    {
        await using var f = await CreateAsync(chunkSize: 1 << 20);
        var random = RandomChunk(1 << 20);
        var text = TextChunk("compress me", 1 << 20);
        // Mostly random with one compressible quarter: the whole chunk still compresses by more than 1/32.
        var mixed = RandomChunk(1 << 20);
        TextChunk("a quarter", 1 << 18).CopyTo(mixed, 1 << 19);
        await using var w = await f.Repo.BeginBackupAsync("host-a", Ct);
        var ids = new List<ChunkId>();
        foreach (var c in new[] { random, text, mixed }) ids.Add((await w.PutChunkAsync(c, Ct)).Id);
        await w.CommitAsync(f.Manifest("vm", [.. ids.Select(i => (ChunkId?)i)], 3L << 20) with
        {
            Disks = [new DiskManifest { Name = "disk0", SizeBytes = 3L << 20, ChunkSize = 1 << 20, Chunks = [.. ids.Select(i => (ChunkId?)i)] }],
        }, Ct);
        long Stored(ChunkId id) => new FileInfo(f.ChunkPath(id)).Length;
        Assert.Equal((1 << 20) + 34, Stored(ids[0]));           // raw: header + payload + tag, no zstd frame
        Assert.Equal(0, File.ReadAllBytes(f.ChunkPath(ids[0]))[5]); // flags 0
        Assert.InRange(Stored(ids[1]), 0, 64 << 10);
        Assert.Equal(1, File.ReadAllBytes(f.ChunkPath(ids[2]))[5]);  // flags 1: compressed
        Assert.InRange(Stored(ids[2]), 0, (1 << 20) - (1 << 17));
    }
}
