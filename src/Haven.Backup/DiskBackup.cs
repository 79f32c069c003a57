using System.Buffers;
using System.Threading.Channels;
using Haven.Nbd;
using Haven.Repository;

namespace Haven.Backup;

/// <summary>
/// Backs up one disk: reads the planned chunks over NBD (several requests in flight per connection),
/// then hashes, compresses, encrypts and stores them on every core. Readers and workers meet in a
/// bounded channel, so memory stays at a few chunks per worker whatever the disk size.
/// </summary>
public static class DiskBackup
{
    public static async Task<ChunkId?[]> RunAsync(BackupWriter writer, IReadOnlyList<NbdClient> sources, ChunkPlan plan,
        IReadOnlyList<ChunkId?>? previous, BackupStats stats, Action<long>? progress, CancellationToken ct)
    {
        var index = new ChunkId?[plan.ChunkCount];
        var toRead = new List<int>();
        for (var i = 0; i < plan.ChunkCount; i++)
        {
            if (plan.Read[i]) toRead.Add(i);
            else if (plan.Zero[i]) stats.AddZero();
            else
            {
                index[i] = previous is not null && i < previous.Count ? previous[i] : throw new InvalidOperationException($"chunk {i} is neither read nor in the previous backup");
                stats.AddReused();
            }
        }

        // One more worker than cores (at least two more): a worker waiting for the disk (writing its chunk
        // file) must not leave a core without a chunk to hash, compress and encrypt.
        var workers = Environment.ProcessorCount + 2;
        var channel = Channel.CreateBounded<(int Index, byte[] Buffer, int Length)>(new BoundedChannelOptions(workers * 2) { SingleWriter = false, SingleReader = false });
        using var failed = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var next = -1;
        Exception? firstFailure = null;

        async Task ReadLoop(NbdClient source)
        {
            while (true)
            {
                var n = Interlocked.Increment(ref next);
                if (n >= toRead.Count) return;
                var chunk = toRead[n];
                var length = plan.ChunkLength(chunk);
                var buffer = ArrayPool<byte>.Shared.Rent(plan.ChunkSize);
                try
                {
                    await source.ReadAsync((long)chunk * plan.ChunkSize, buffer.AsMemory(0, length), failed.Token);
                    stats.AddRead(length);
                    await channel.Writer.WriteAsync((chunk, buffer, length), failed.Token);
                }
                catch
                {
                    ArrayPool<byte>.Shared.Return(buffer);
                    throw;
                }
            }
        }

        async Task StoreLoop()
        {
            await foreach (var (chunk, buffer, length) in channel.Reader.ReadAllAsync(failed.Token))
            {
                try
                {
                    var data = buffer.AsMemory(0, length);
                    if (data.Span.IndexOfAnyExcept((byte)0) < 0)
                    {
                        stats.AddZero(); // allocated but all zero: recorded as a zero chunk, never stored
                        progress?.Invoke(length);
                        continue;
                    }
                    // Hashed once; stored without its own fsync, durable with the others before the manifest.
                    var (id, created) = await writer.PutChunkAsync(data, failed.Token);
                    if (created) stats.AddNew(length);
                    index[chunk] = id;
                    progress?.Invoke(length);
                }
                finally { ArrayPool<byte>.Shared.Return(buffer); }
            }
        }

        // Two reads in flight per connection hide the round trip; more only add memory.
        var readers = new List<Task>();
        foreach (var s in sources) { readers.Add(Guard(ReadLoop(s))); readers.Add(Guard(ReadLoop(s))); }
        var stores = new List<Task>();
        for (var i = 0; i < workers; i++) stores.Add(Guard(Task.Run(StoreLoop, CancellationToken.None)));
        try
        {
            await Task.WhenAll(readers);
            channel.Writer.TryComplete();
            await Task.WhenAll(stores);
        }
        catch when (firstFailure is not null)
        {
            await Task.WhenAll(readers.Concat(stores)).ContinueWith(_ => { }, TaskScheduler.Default);
            // The other tasks only saw the cancellation or the closed channel: report the cause.
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(firstFailure);
        }
        finally
        {
            channel.Writer.TryComplete();
            while (channel.Reader.TryRead(out var left)) ArrayPool<byte>.Shared.Return(left.Buffer);
        }
        return index;

        async Task Guard(Task t)
        {
            try { await t; }
            catch (Exception e)
            {
                Interlocked.CompareExchange(ref firstFailure, e, null);
                failed.Cancel(); // one failure stops every reader and worker
                channel.Writer.TryComplete();
                throw;
            }
        }
    }
}
