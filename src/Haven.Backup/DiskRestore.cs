using System.Buffers;
using Haven.Repository;

namespace Haven.Backup;

/// <summary>
/// Writes one backed-up disk into an NBD target with several chunks fetched, verified and written at
/// once (restores are never sequential). A chunk that fails verification stops the restore: bad data
/// is never written. A chunk the disk holds at several offsets is fetched and decrypted once and written
/// to each of them (on object storage every fetch is a request).
/// </summary>
public static class DiskRestore
{
    public static async Task RunAsync(Repository.Repository repository, IReadOnlyList<ChunkId?> chunks, int chunkSize, long diskSize,
        IBlockTarget target, bool targetIsZeroed, Action<long>? progress, CancellationToken ct)
    {
        // Fetches wait on the store (a disk read after the page cache is gone, or a request): more in flight
        // than cores keep both the disk and the cores busy; each holds one chunk buffer.
        var parallelism = Math.Max(8, Environment.ProcessorCount * 4);
        var repeatOf = LinkRepeats(chunks, out var nextSame);
        var next = -1;
        Exception? firstFailure = null;
        using var failed = CancellationTokenSource.CreateLinkedTokenSource(ct);

        async Task Worker()
        {
            var buffer = ArrayPool<byte>.Shared.Rent(chunkSize);
            try
            {
                while (true)
                {
                    var i = Interlocked.Increment(ref next);
                    if (i >= chunks.Count) return;
                    if (repeatOf[i]) continue; // written with the entry where its chunk first appears
                    var offset = (long)i * chunkSize;
                    var length = (int)Math.Min(chunkSize, diskSize - offset);
                    if (chunks[i] is not { } id)
                    {
                        if (!targetIsZeroed) await target.WriteZeroesAsync(offset, length, failed.Token);
                        progress?.Invoke(length);
                        continue;
                    }
                    var n = await repository.ReadChunkAsync(id, buffer.AsMemory(0, chunkSize), failed.Token);
                    for (var j = i; j >= 0; j = nextSame[j])
                    {
                        var at = (long)j * chunkSize;
                        var want = (int)Math.Min(chunkSize, diskSize - at);
                        if (n != want) throw new InvalidDataException($"chunk {id} holds {n} bytes where the disk needs {want} at offset {at}");
                        await target.WriteAsync(at, buffer.AsMemory(0, want), failed.Token);
                        progress?.Invoke(want);
                    }
                }
            }
            catch (Exception e)
            {
                Interlocked.CompareExchange(ref firstFailure, e, null);
                failed.Cancel();
                throw;
            }
            finally { ArrayPool<byte>.Shared.Return(buffer); }
        }

        var workers = new Task[parallelism];
        for (var w = 0; w < parallelism; w++) workers[w] = Task.Run(Worker, CancellationToken.None);
        try { await Task.WhenAll(workers); }
        catch when (firstFailure is not null)
        {
            // The other workers only saw the cancellation: report the cause (e.g. the corrupt chunk).
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(firstFailure);
        }
        await target.FlushAsync(ct);
    }

    /// <summary>
    /// For each entry: whether its chunk appeared at an earlier entry, and the next entry with the same
    /// chunk (-1 for none) — one pass, so each distinct chunk is fetched once.
    /// </summary>
    private static bool[] LinkRepeats(IReadOnlyList<ChunkId?> chunks, out int[] nextSame)
    {
        var repeat = new bool[chunks.Count];
        nextSame = new int[chunks.Count];
        Array.Fill(nextSame, -1);
        var lastSeen = new Dictionary<ChunkId, int>();
        for (var i = 0; i < chunks.Count; i++)
        {
            if (chunks[i] is not { } id) continue;
            if (lastSeen.TryGetValue(id, out var previous))
            {
                nextSame[previous] = i;
                repeat[i] = true;
            }
            lastSeen[id] = i;
        }
        return repeat;
    }
}
