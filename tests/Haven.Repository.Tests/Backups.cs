using Xunit;
using static Haven.Repository.Tests.RepoFixture;

namespace Haven.Repository.Tests;

/// <summary>Backup and restore helpers for any repository (the fixture's own helpers use its one repository).</summary>
public static class Backups
{
    public sealed record Made(string Id, ChunkId?[] Index, bool KnownFromCache, int KnownChunkCount, long ChunksNew, long RetentionsExtended);

    /// <summary>One-disk backup of <paramref name="chunks"/> (null = zero chunk) through <paramref name="repo"/>.</summary>
    public static async Task<Made> BackupAsync(Repository repo, string vm, DateTimeOffset createdAt, params byte[]?[] chunks)
    {
        await using var writer = await repo.BeginBackupAsync("host", Ct);
        var index = new ChunkId?[chunks.Length];
        for (var i = 0; i < chunks.Length; i++)
        {
            if (chunks[i] is not { } data) continue;
            index[i] = writer.ComputeId(data);
            await writer.PutChunkAsync(index[i]!.Value, data, Ct);
        }
        var size = (long)(chunks.Length - 1) * repo.ChunkSize + (chunks[^1]?.Length ?? repo.ChunkSize);
        var manifest = new BackupManifest
        {
            VmName = vm,
            CreatedAt = createdAt,
            Disks = [new DiskManifest { Name = "disk0", SizeBytes = size, ChunkSize = repo.ChunkSize, Chunks = index }],
        };
        var id = await writer.CommitAsync(manifest, Ct);
        var stats = (await repo.ReadManifestAsync(id, Ct)).Stats;
        return new Made(id, index, writer.KnownFromCache, writer.KnownChunkCount, stats.ChunksNew, writer.RetentionsExtended);
    }

    /// <summary>Every disk of a backup, rebuilt from its chunks (zeros for null entries).</summary>
    public static async Task<List<byte[]>> RestoreAsync(Repository repo, string backupId)
    {
        var manifest = await repo.ReadManifestAsync(backupId, Ct);
        var disks = new List<byte[]>();
        var buffer = new byte[repo.ChunkSize];
        foreach (var disk in manifest.Disks)
        {
            var bytes = new byte[disk.SizeBytes];
            for (var i = 0; i < disk.Chunks.Length; i++)
            {
                if (disk.Chunks[i] is not { } id) continue;
                var n = await repo.ReadChunkAsync(id, buffer, Ct);
                Assert.Equal((int)Math.Min(disk.ChunkSize, disk.SizeBytes - (long)i * disk.ChunkSize), n);
                buffer.AsSpan(0, n).CopyTo(bytes.AsSpan(i * disk.ChunkSize));
            }
            disks.Add(bytes);
        }
        return disks;
    }

    public static byte[] Concat(int chunkSize, params byte[]?[] chunks)
    {
        var size = (chunks.Length - 1) * chunkSize + (chunks[^1]?.Length ?? chunkSize);
        var all = new byte[size];
        for (var i = 0; i < chunks.Length; i++) chunks[i]?.CopyTo(all, i * chunkSize);
        return all;
    }
}

/// <summary>An IProgress that records synchronously (Progress&lt;T&gt; posts to the thread pool).</summary>
public sealed class LastProgress : IProgress<long>
{
    private long _max;
    public long Max => Interlocked.Read(ref _max);
    public void Report(long value)
    {
        long seen;
        while ((seen = Interlocked.Read(ref _max)) < value && Interlocked.CompareExchange(ref _max, value, seen) != seen) { }
    }
}
