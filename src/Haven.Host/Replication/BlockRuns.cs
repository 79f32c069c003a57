using System.Buffers;
using System.Runtime.CompilerServices;
using Haven.Backup;
using Haven.Nbd;

namespace Haven.Host.Replication;

/// <summary>Consecutive blocks of one kind: data to read (<see cref="IsData"/>), or blocks known to be zero.</summary>
public readonly record struct BlockRun(int FirstBlock, int Blocks, long Offset, int Length, bool IsData)
{
    public int EndBlock => FirstBlock + Blocks;
}

/// <summary>
/// Walks a <see cref="ChunkPlan"/> block by block and groups its blocks into runs: data runs of up to
/// <see cref="ReplicationService.MaxDataExtent"/>, zero runs of up to <see cref="ReplicaService.MaxExtentBytes"/>.
/// Every replication read (cycles, extended cycles, block hashes) goes through it, then through
/// <see cref="ReadAsync"/>, which keeps several NBD reads in flight while the caller sends or hashes the previous run.
/// </summary>
public static class BlockRuns
{
    /// <summary>NBD reads kept in flight ahead of the caller: enough to hide the round trip, at most this many MiB held.</summary>
    public const int ReadDepth = 4;

    /// <summary>
    /// The plan's blocks to read (<see cref="ChunkPlan.Read"/>) and blocks known to be zero (<see cref="ChunkPlan.Zero"/>),
    /// in disk order, as runs; a block <paramref name="wanted"/> refuses is skipped and ends the run. Offsets and
    /// lengths are 64-bit until a run's length (at most the larger maximum) is known; the last block may be short.
    /// </summary>
    public static IEnumerable<BlockRun> Of(ChunkPlan plan, Func<int, bool>? wanted = null,
        int maxDataBytes = ReplicationService.MaxDataExtent, int maxZeroBytes = ReplicaService.MaxExtentBytes)
    {
        if (maxDataBytes < plan.ChunkSize || maxZeroBytes < plan.ChunkSize)
            throw new ArgumentOutOfRangeException(nameof(maxDataBytes), "a run holds at least one block");
        var perData = maxDataBytes / plan.ChunkSize;
        var perZero = maxZeroBytes / plan.ChunkSize;
        var count = plan.ChunkCount;
        var i = 0;
        while (i < count)
        {
            var kind = KindOf(plan, i);
            if (kind == 0 || wanted is not null && !wanted(i)) { i++; continue; }
            var first = i;
            var limit = kind == 1 ? perData : perZero;
            do i++;
            while (i < count && i - first < limit && KindOf(plan, i) == kind && (wanted is null || wanted(i)));
            var offset = (long)first * plan.ChunkSize;
            var end = Math.Min(plan.DiskSize, (long)i * plan.ChunkSize);
            yield return new BlockRun(first, i - first, offset, checked((int)(end - offset)), kind == 1);
        }
    }

    /// <summary>0: neither read nor known zero (unchanged), 1: data, 2: zero.</summary>
    private static int KindOf(ChunkPlan plan, int i) => plan.Read[i] ? 1 : plan.Zero[i] ? 2 : 0;

    /// <summary>
    /// Each run with its data (empty for a zero run), in order, read from <paramref name="nbd"/> with up to
    /// <see cref="ReadDepth"/> reads in flight into pooled buffers. The data is valid until the next run is asked for;
    /// then its buffer goes back to the pool. Ending early (or a failed read) waits for the reads in flight first, so
    /// no buffer goes back to the pool while NBD still writes into it.
    /// </summary>
    public static async IAsyncEnumerable<(BlockRun Run, ReadOnlyMemory<byte> Data)> ReadAsync(NbdClient nbd, IEnumerable<BlockRun> runs,
        [EnumeratorCancellation] CancellationToken ct)
    {
        var pending = new Queue<(BlockRun Run, byte[]? Buffer, Task Read)>();
        using var next = runs.GetEnumerator();
        var reads = 0;
        byte[]? current = null;
        try
        {
            while (true)
            {
                // Zero runs need no read; a bound on them too keeps the queue small on a sparse disk.
                while (reads < ReadDepth && pending.Count < ReadDepth * 16 && next.MoveNext())
                {
                    var run = next.Current;
                    if (!run.IsData) { pending.Enqueue((run, null, Task.CompletedTask)); continue; }
                    var buffer = ArrayPool<byte>.Shared.Rent(run.Length);
                    Task read;
                    try { read = nbd.ReadAsync(run.Offset, buffer.AsMemory(0, run.Length), ct); }
                    catch { ArrayPool<byte>.Shared.Return(buffer); throw; }
                    pending.Enqueue((run, buffer, read));
                    reads++;
                }
                if (!pending.TryPeek(out var head)) yield break;
                await head.Read; // a failure leaves it queued: the finally below waits for the others and returns every buffer
                pending.Dequeue();
                if (head.Buffer is not null) reads--;
                current = head.Buffer;
                yield return (head.Run, current is null ? ReadOnlyMemory<byte>.Empty : current.AsMemory(0, head.Run.Length));
                if (current is not null) ArrayPool<byte>.Shared.Return(current);
                current = null;
            }
        }
        finally
        {
            if (current is not null) ArrayPool<byte>.Shared.Return(current);
            foreach (var (_, buffer, read) in pending)
            {
                try { await read; }
                catch (Exception) { /* already failed or cancelled: the cause reached the caller from the read it awaited */ }
                if (buffer is not null) ArrayPool<byte>.Shared.Return(buffer);
            }
        }
    }
}
