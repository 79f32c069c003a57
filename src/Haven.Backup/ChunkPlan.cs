using Haven.Nbd;

namespace Haven.Backup;

/// <summary>
/// Which chunks of a disk a backup must read. Chunks are fixed-size and aligned, so changed-block
/// tracking (a dirty bitmap with the chunk size as granularity) and allocation both map to chunk
/// indexes: a chunk is read when it holds data and (incremental) is dirty; a chunk with no data is
/// recorded as zero without reading; a clean chunk reuses the previous backup's entry.
/// </summary>
public sealed class ChunkPlan
{
    private ChunkPlan(int chunkSize, long diskSize, bool[] read, bool[] zero)
    {
        ChunkSize = chunkSize;
        DiskSize = diskSize;
        Read = read;
        Zero = zero;
    }

    public int ChunkSize { get; }
    public long DiskSize { get; }
    public int ChunkCount => Read.Length;
    /// <summary>Chunks to read from the source.</summary>
    public bool[] Read { get; }
    /// <summary>Chunks known to be all zero without reading (unallocated or zero extents).</summary>
    public bool[] Zero { get; }

    public long BytesToRead
    {
        get
        {
            long total = 0;
            for (var i = 0; i < Read.Length; i++) if (Read[i]) total += ChunkLength(i);
            return total;
        }
    }

    public int ChunkLength(int index) => (int)Math.Min(ChunkSize, DiskSize - (long)index * ChunkSize);

    public static int CountChunks(long diskSize, int chunkSize) => checked((int)((diskSize + chunkSize - 1) / chunkSize));

    /// <summary>Builds the plan from the source's allocation map and, for an incremental, its dirty map.</summary>
    public static async Task<ChunkPlan> BuildAsync(NbdClient source, int chunkSize, string? dirtyContext, CancellationToken ct)
    {
        var size = source.ExportSize;
        var count = CountChunks(size, chunkSize);
        var hasData = new bool[count];
        await foreach (var e in source.MapAsync("base:allocation", 0, size, ct))
        {
            if ((e.Flags & NbdFlags.Zero) != 0) continue; // reads as zeros (holes are also reported as zero by QEMU)
            Mark(hasData, e, chunkSize);
        }
        bool[]? dirty = null;
        if (dirtyContext is not null)
        {
            dirty = new bool[count];
            await foreach (var e in source.MapAsync(dirtyContext, 0, size, ct))
                if ((e.Flags & NbdFlags.Dirty) != 0) Mark(dirty, e, chunkSize);
        }
        var read = new bool[count];
        var zero = new bool[count];
        for (var i = 0; i < count; i++)
        {
            var changed = dirty is null || dirty[i];
            read[i] = changed && hasData[i];
            zero[i] = changed && !hasData[i];
        }
        return new ChunkPlan(chunkSize, size, read, zero);
    }

    /// <summary>A plan from maps already known (tests, and callers that track changes themselves).</summary>
    public static ChunkPlan FromMaps(int chunkSize, long diskSize, bool[] read, bool[] zero)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(chunkSize);
        ArgumentOutOfRangeException.ThrowIfNegative(diskSize);
        var count = CountChunks(diskSize, chunkSize);
        if (read.Length != count || zero.Length != count) throw new ArgumentException($"a disk of {diskSize} bytes has {count} chunks of {chunkSize}");
        for (var i = 0; i < count; i++)
            if (read[i] && zero[i]) throw new ArgumentException($"chunk {i} cannot be both read and known zero");
        return new ChunkPlan(chunkSize, diskSize, read, zero);
    }

    private static void Mark(bool[] chunks, NbdExtent e, int chunkSize)
    {
        var first = (int)(e.Offset / chunkSize);
        var last = (int)((e.Offset + e.Length - 1) / chunkSize);
        for (var i = first; i <= last && i < chunks.Length; i++) chunks[i] = true;
    }
}
