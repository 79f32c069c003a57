using System.Buffers;
using Haven.Repository;

namespace Haven.Backup;

/// <summary>
/// Writes one backed-up disk into an NBD target with several chunks fetched, verified and written at
/// once (restores are never sequential). A chunk that fails verification stops the restore: bad data
/// is never written.
/// </summary>
public static class DiskRestore
{
    public static async Task RunAsync(Repository.Repository repository, IReadOnlyList<ChunkId?> chunks, int chunkSize, long diskSize,
        IBlockTarget target, bool targetIsZeroed, Action<long>? progress, CancellationToken ct)
    {
        var parallelism = Math.Max(4, Environment.ProcessorCount * 2);
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
                    var offset = (long)i * chunkSize;
                    var length = (int)Math.Min(chunkSize, diskSize - offset);
                    if (chunks[i] is not { } id)
                    {
                        if (!targetIsZeroed) await target.WriteZeroesAsync(offset, length, failed.Token);
                    }
                    else
                    {
                        var n = await repository.ReadChunkAsync(id, buffer.AsMemory(0, chunkSize), failed.Token);
                        if (n != length) throw new InvalidDataException($"chunk {id} holds {n} bytes where the disk needs {length} at offset {offset}");
                        await target.WriteAsync(offset, buffer.AsMemory(0, length), failed.Token);
                    }
                    progress?.Invoke(length);
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
}
