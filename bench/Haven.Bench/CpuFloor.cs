using System.Buffers;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using Haven.Repository;
using Haven.Storage;

namespace Haven.Bench;

/// <summary>What hashing, compressing and encrypting the disk's data costs at all, with no I/O around it.</summary>
public sealed record FloorResult(double Wall, double Cpu, int Workers, long Chunks, long Bytes, long StoredBytes);

/// <summary>
/// The CPU floor of a full backup of the image: Haven's own chunk path (keyed hash, zero check, zstd, AES-GCM
/// through <see cref="BackupWriter.PutChunkAsync(ReadOnlyMemory{byte}, CancellationToken)"/>) over every
/// non-zero 1 MiB chunk of the raw file, one worker per core, into a store that keeps nothing. The file is read
/// into the page cache first, so this is the time no backup of this data can beat on this machine.
/// </summary>
public static class CpuFloor
{
    public static async Task<FloorResult> MeasureAsync(string rawPath, Action<string> log)
    {
        var store = new DiscardStore();
        await using var repo = await Repository.Repository.InitAsync(store, "floor", new RepositoryOptions { Kdf = RepositoryKdf.Cheapest });
        var chunkSize = repo.ChunkSize;
        using var file = File.OpenHandle(rawPath);
        var length = RandomAccess.GetLength(file);
        var count = (int)((length + chunkSize - 1) / chunkSize);
        // Warm the page cache and the JIT (a small pass) outside the timed one.
        await RunAsync(repo, file, length, chunkSize, Math.Min(count, 64), Environment.ProcessorCount);
        var buffer = new byte[chunkSize];
        for (long at = 0; at < length; at += chunkSize) RandomAccess.Read(file, buffer, at);
        log("CPU floor: hash + compress + encrypt of every chunk of the image, in process");
        var workers = Environment.ProcessorCount;
        var cpu = Process.GetCurrentProcess().TotalProcessorTime;
        var sw = Stopwatch.StartNew();
        var (chunks, bytes) = await RunAsync(repo, file, length, chunkSize, count, workers);
        var wall = sw.Elapsed.TotalSeconds;
        var used = (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds;
        log($"  {wall:F2} s wall, {used:F2} s CPU, {chunks} chunks");
        return new FloorResult(wall, used, workers, chunks, bytes, store.ChunkBytes);
    }

    private static async Task<(long Chunks, long Bytes)> RunAsync(Repository.Repository repo, Microsoft.Win32.SafeHandles.SafeFileHandle file, long length, int chunkSize, int count, int workers)
    {
        await using var writer = await repo.BeginBackupAsync("floor");
        var next = -1;
        long chunks = 0, bytes = 0;
        var tasks = new Task[workers];
        for (var w = 0; w < workers; w++)
            tasks[w] = Task.Run(async () =>
            {
                var buffer = ArrayPool<byte>.Shared.Rent(chunkSize);
                try
                {
                    int i;
                    while ((i = Interlocked.Increment(ref next)) < count)
                    {
                        var n = (int)Math.Min(chunkSize, length - (long)i * chunkSize);
                        RandomAccess.Read(file, buffer.AsSpan(0, n), (long)i * chunkSize);
                        if (buffer.AsSpan(0, n).IndexOfAnyExcept((byte)0) < 0) continue;
                        await writer.PutChunkAsync(buffer.AsMemory(0, n));
                        Interlocked.Increment(ref chunks);
                        Interlocked.Add(ref bytes, n);
                    }
                }
                finally { ArrayPool<byte>.Shared.Return(buffer); }
            });
        await Task.WhenAll(tasks);
        return (chunks, bytes);
    }

    /// <summary>Keeps small objects (config, locks) and only counts chunks: the floor must not include storage.</summary>
    private sealed class DiscardStore : IObjectStore
    {
        private readonly ConcurrentDictionary<string, byte[]> _small = new();
        private long _chunkBytes;

        public long ChunkBytes => Interlocked.Read(ref _chunkBytes);

        public Task<bool> TryCreateAsync(string key, ReadOnlyMemory<byte> data, CancellationToken ct = default)
        {
            if (key.StartsWith("chunks/", StringComparison.Ordinal))
            {
                Interlocked.Add(ref _chunkBytes, data.Length);
                return Task.FromResult(true);
            }
            return Task.FromResult(_small.TryAdd(key, data.ToArray()));
        }

        public Task PutAsync(string key, ReadOnlyMemory<byte> data, CancellationToken ct = default)
        {
            _small[key] = data.ToArray();
            return Task.CompletedTask;
        }

        public Task<byte[]?> GetAsync(string key, CancellationToken ct = default) => Task.FromResult(_small.TryGetValue(key, out var v) ? v : null);

        public Task<bool> DeleteAsync(string key, CancellationToken ct = default) => Task.FromResult(_small.TryRemove(key, out _));

        public async IAsyncEnumerable<ObjectInfo> ListAsync(string prefix, [EnumeratorCancellation] CancellationToken ct = default)
        {
            foreach (var (k, v) in _small)
                if (k.StartsWith(prefix, StringComparison.Ordinal)) yield return new ObjectInfo(k, v.Length, DateTimeOffset.UtcNow);
            await Task.CompletedTask;
        }

        public Task<ObjectInfo?> StatAsync(string key, CancellationToken ct = default)
            => Task.FromResult(_small.TryGetValue(key, out var v) ? new ObjectInfo(key, v.Length, DateTimeOffset.UtcNow) : null);
    }
}
