using Haven.Nbd;
using Haven.Repository;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Haven.Backup;

/// <summary>
/// One backed-up disk as a read-only block device (<see cref="INbdExport"/>), read straight from the repository:
/// chunks are fetched when a read touches them, verified (GCM tag and hash, <see cref="Repository.Repository.ReadChunkAsync"/>),
/// kept in a bounded least-recently-used cache, and fetched ahead while a reader goes forward. Entries with no chunk
/// read as zeros without a fetch and are reported as holes. Concurrent reads of one chunk share one fetch.
/// </summary>
public sealed class BackupDiskExport : INbdExport
{
    private readonly Repository.Repository _repository;
    private readonly IReadOnlyList<ChunkId?> _chunks;
    private readonly int _chunkSize;
    private readonly BackupDiskExportOptions _options;
    private readonly ILogger _log;
    private readonly object _gate = new();
    // Fetched chunks by id, most recently used last; a chunk the disk holds at several offsets is cached once.
    private readonly Dictionary<ChunkId, LinkedListNode<(ChunkId Id, byte[] Data)>> _cache = [];
    private readonly LinkedList<(ChunkId Id, byte[] Data)> _lru = new();
    private readonly Dictionary<ChunkId, Task<byte[]>> _fetching = [];
    private long _lastIndex = -2;
    private long _chunksFetched, _bytesFetched, _cacheHits;

    public BackupDiskExport(Repository.Repository repository, string backupId, string name, IReadOnlyList<ChunkId?> chunks, int chunkSize, long size,
        BackupDiskExportOptions? options = null, ILogger? log = null)
    {
        if (chunkSize <= 0) throw new ArgumentOutOfRangeException(nameof(chunkSize));
        if (DiskManifest.ChunkCount(size, chunkSize) != chunks.Count)
            throw new InvalidDataException($"backup {backupId}: the disk's index has {chunks.Count} entries, its size {size} needs {DiskManifest.ChunkCount(size, chunkSize)}");
        _repository = repository;
        BackupId = backupId;
        Name = name;
        _chunks = chunks;
        _chunkSize = chunkSize;
        Size = size;
        _options = options ?? new();
        _log = log ?? NullLogger.Instance;
    }

    public BackupDiskExport(Repository.Repository repository, BackupManifest backup, int disk, BackupDiskExportOptions? options = null, ILogger? log = null)
        : this(repository, backup.Id, backup.Disks[disk].Name, backup.Disks[disk].Chunks, backup.Disks[disk].ChunkSize, backup.Disks[disk].SizeBytes, options, log) { }

    public string BackupId { get; }
    public string Name { get; }
    public long Size { get; }

    /// <summary>Chunks fetched from the repository so far (read-ahead included); each distinct chunk counts once per fetch.</summary>
    public long ChunksFetched => Interlocked.Read(ref _chunksFetched);
    /// <summary>Plaintext bytes of those chunks.</summary>
    public long BytesFetched => Interlocked.Read(ref _bytesFetched);
    /// <summary>Chunk lookups answered from the cache.</summary>
    public long CacheHits => Interlocked.Read(ref _cacheHits);
    /// <summary>Index entries that name a chunk (what a full copy would fetch at most).</summary>
    public long ChunksReferenced => _chunks.Count(c => c is not null);

    public async ValueTask ReadAsync(long offset, Memory<byte> into, CancellationToken ct)
    {
        if (offset < 0 || into.Length > Size - offset) throw new ArgumentOutOfRangeException(nameof(offset), $"{offset}+{into.Length} is outside the disk (0..{Size})");
        while (!into.IsEmpty)
        {
            var index = offset / _chunkSize;
            var within = (int)(offset % _chunkSize);
            var take = (int)Math.Min(into.Length, Math.Min(_chunkSize - within, Size - offset));
            if (_chunks[(int)index] is { } id)
            {
                var data = await GetChunkAsync(id, index, ct);
                data.AsSpan(within, take).CopyTo(into.Span);
                ReadAhead(index);
            }
            else into.Span[..take].Clear();
            offset += take;
            into = into[take..];
        }
    }

    public IEnumerable<NbdExtent> GetAllocation(long offset, long length)
    {
        var end = Math.Min(Size, offset + length);
        while (offset < end)
        {
            var index = (int)(offset / _chunkSize);
            var stored = _chunks[index] is not null;
            var runEnd = offset;
            // One run per stretch of entries that are all stored or all empty.
            while (runEnd < end && (_chunks[(int)(runEnd / _chunkSize)] is not null) == stored)
                runEnd = Math.Min(end, (runEnd / _chunkSize + 1) * _chunkSize);
            yield return new NbdExtent(offset, runEnd - offset, stored ? 0 : NbdFlags.Hole | NbdFlags.Zero);
            offset = runEnd;
        }
    }

    private Task<byte[]> GetChunkAsync(ChunkId id, long index, CancellationToken ct)
    {
        lock (_gate)
        {
            if (_cache.TryGetValue(id, out var node))
            {
                _lru.Remove(node);
                _lru.AddLast(node);
                Interlocked.Increment(ref _cacheHits);
                return Task.FromResult(node.Value.Data);
            }
            if (_fetching.TryGetValue(id, out var pending)) return pending.WaitAsync(ct);
            var fetch = FetchAsync(id, index);
            _fetching[id] = fetch;
            return fetch.WaitAsync(ct);
        }
    }

    /// <summary>
    /// Fetches a chunk into the cache. The fetch belongs to no one caller (others may wait for it), so it is not
    /// cancelled with a caller. A failure is not cached: the next read tries again (a repository that comes back).
    /// </summary>
    private async Task<byte[]> FetchAsync(ChunkId id, long index)
    {
        await Task.Yield();
        try
        {
            var data = new byte[_chunkSize];
            var n = await _repository.ReadChunkAsync(id, data, CancellationToken.None);
            var want = (int)Math.Min(_chunkSize, Size - index * _chunkSize);
            if (n != want) throw new CorruptChunkException(id, $"holds {n} bytes where disk '{Name}' of backup {BackupId} needs {want} at offset {index * _chunkSize}");
            Interlocked.Increment(ref _chunksFetched);
            Interlocked.Add(ref _bytesFetched, n);
            lock (_gate)
            {
                _fetching.Remove(id);
                _cache[id] = _lru.AddLast((id, data));
                while (_lru.Count > _options.CacheChunks)
                {
                    _cache.Remove(_lru.First!.Value.Id);
                    _lru.RemoveFirst();
                }
            }
            return data;
        }
        catch (Exception e)
        {
            lock (_gate) _fetching.Remove(id);
            _log.LogWarning("backup {Backup} disk {Disk}: chunk {Chunk} at offset {Offset} could not be read: {Error}", BackupId, Name, id, index * _chunkSize, e.Message);
            throw new BackupChunkReadException(BackupId, Name, id, index * _chunkSize, e);
        }
    }

    /// <summary>A reader that moved on to the next chunk is likely reading forward: fetch the next few before it asks.</summary>
    private void ReadAhead(long index)
    {
        bool sequential;
        lock (_gate)
        {
            sequential = index == _lastIndex + 1;
            _lastIndex = index;
        }
        if (!sequential) return;
        for (var next = index + 1; next <= index + _options.ReadAheadChunks && next < _chunks.Count; next++)
        {
            if (_chunks[(int)next] is not { } id) continue;
            lock (_gate)
            {
                if (_cache.ContainsKey(id) || _fetching.ContainsKey(id)) continue;
                _fetching[id] = FetchAsync(id, next);
                // Read-ahead is a guess: its failure is logged by the fetch and surfaces only if the reader gets there.
                _fetching[id].ContinueWith(t => _ = t.Exception, TaskContinuationOptions.OnlyOnFaulted);
            }
        }
    }
}

public sealed record BackupDiskExportOptions
{
    /// <summary>Fetched chunks kept in memory (each one chunk size: 64 × 1 MiB by default).</summary>
    public int CacheChunks { get; init; } = 64;
    /// <summary>Chunks fetched ahead of a reader that goes forward.</summary>
    public int ReadAheadChunks { get; init; } = 8;
}

/// <summary>A chunk of a backup's disk could not be read (missing, corrupt, or the repository unreachable).</summary>
public sealed class BackupChunkReadException(string backupId, string disk, ChunkId chunk, long offset, Exception inner)
    : IOException($"backup {backupId} disk {disk}: chunk {chunk} at offset {offset}: {inner.Message}", inner)
{
    public string BackupId { get; } = backupId;
    public ChunkId Chunk { get; } = chunk;
}
