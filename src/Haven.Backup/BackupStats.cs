namespace Haven.Backup;

/// <summary>What one disk's backup did; counters are updated from several workers.</summary>
public sealed class BackupStats
{
    private long _bytesRead, _chunksRead, _chunksNew, _bytesNew, _chunksZero, _chunksReused;

    public long BytesRead => Interlocked.Read(ref _bytesRead);
    public long ChunksRead => Interlocked.Read(ref _chunksRead);
    /// <summary>Chunks the repository did not have (stored by this backup).</summary>
    public long ChunksNew => Interlocked.Read(ref _chunksNew);
    /// <summary>Plaintext bytes of the new chunks.</summary>
    public long BytesNew => Interlocked.Read(ref _bytesNew);
    public long ChunksZero => Interlocked.Read(ref _chunksZero);
    /// <summary>Unchanged chunks taken from the previous backup without reading.</summary>
    public long ChunksReused => Interlocked.Read(ref _chunksReused);

    internal void AddRead(long bytes) { Interlocked.Add(ref _bytesRead, bytes); Interlocked.Increment(ref _chunksRead); }
    internal void AddNew(long bytes) { Interlocked.Add(ref _bytesNew, bytes); Interlocked.Increment(ref _chunksNew); }
    internal void AddZero() => Interlocked.Increment(ref _chunksZero);
    internal void AddReused() => Interlocked.Increment(ref _chunksReused);

    public void Add(BackupStats other)
    {
        Interlocked.Add(ref _bytesRead, other.BytesRead);
        Interlocked.Add(ref _chunksRead, other.ChunksRead);
        Interlocked.Add(ref _chunksNew, other.ChunksNew);
        Interlocked.Add(ref _bytesNew, other.BytesNew);
        Interlocked.Add(ref _chunksZero, other.ChunksZero);
        Interlocked.Add(ref _chunksReused, other.ChunksReused);
    }
}
