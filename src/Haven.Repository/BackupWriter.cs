using System.Buffers;
using System.Collections.Concurrent;
using Haven.Storage;
using Microsoft.Extensions.Logging;

namespace Haven.Repository;

/// <summary>
/// One backup being written: chunks first (<see cref="PutChunkAsync"/>, from many workers at once), then the
/// manifest (<see cref="CommitAsync"/>). Holds a shared writer lock from start to dispose, which keeps GC
/// from deleting the chunks it stores (grace rule). Dedup needs no round trip per chunk: the ids in the
/// store are listed once at start, and only ids outside that set (and outside what this writer stored)
/// reach the store. Why that stays safe next to a concurrent GC: docs/repository-format.md, "Writers and GC".
/// With a <see cref="ChunkIndexCache"/> the listing is skipped while the cache is valid ("Chunk index cache");
/// with immutability, chunks and the manifest get object-lock retention ("Immutability").
/// </summary>
public sealed class BackupWriter : IAsyncDisposable
{
    private static readonly TimeSpan GcPollInterval = TimeSpan.FromSeconds(2);
    /// <summary>Retention extensions in flight at commit (each is one small request).</summary>
    private const int ExtendParallelism = 8;

    private readonly Repository _repo;
    private readonly string _hostName;
    private readonly HeldLock _lock;
    private readonly long _epochAtStart;
    private readonly bool _deletionsAtStart;
    // Present when this writer began, id → retain-until (unix seconds, 0 = unknown). Read-only after start,
    // replaced whole if chunks turn out missing.
    private volatile Dictionary<ChunkId, long> _known;
    // Stored (or being stored) by this writer; the task says whether this writer created it.
    private readonly ConcurrentDictionary<ChunkId, Task<bool>> _mine = new();
    // Retain-until this writer set (creates with retention, extensions): recorded in the cache afterwards.
    private readonly ConcurrentDictionary<ChunkId, long> _retainUntil = new();
    private readonly IObjectLockStore? _lockStore;
    private readonly RepositoryImmutability? _immutability;
    // True when _known is valid at _epochAtStart (a valid cache, or a listing with no deletion running).
    private readonly bool _cacheable;
    private readonly DateTimeOffset _cacheBuiltAt;
    private long _chunksNew, _bytesNew, _storedBytesNew, _retentionsExtended;
    private int _state; // 0 open, 1 committed, 2 disposed
    private int _cacheUpdated;
    // Chunks stored by PutChunkAsync(plaintext): durable together at commit (docs/repository-format.md, "Batched durability").
    private IObjectBatch? _batch;
    private readonly Lock _batchLock = new();

    private BackupWriter(Repository repo, string hostName, HeldLock held, long epoch, bool deletions, Dictionary<ChunkId, long> known,
        bool fromCache, bool cacheable, DateTimeOffset cacheBuiltAt)
    {
        _repo = repo;
        _hostName = hostName;
        _lock = held;
        _epochAtStart = epoch;
        _deletionsAtStart = deletions;
        _known = known;
        KnownFromCache = fromCache;
        _cacheable = cacheable;
        _cacheBuiltAt = cacheBuiltAt;
        _immutability = repo.Immutability;
        _lockStore = _immutability is null ? null : repo.Store as IObjectLockStore;
    }

    /// <summary>The writer's id (its lock is <c>locks/writer-&lt;id&gt;</c>).</summary>
    public string WriterId => _lock.Record.OwnerId;

    /// <summary>When this writer registered; GC keeps every chunk written after this (minus the grace period).</summary>
    public DateTimeOffset StartedAt => _lock.Record.StartedAt;

    /// <summary>Chunks already in the repository when the writer started (as far as the listing or cache knows).</summary>
    public int KnownChunkCount => _known.Count;

    /// <summary>True when the known set came from the <see cref="ChunkIndexCache"/> and <c>chunks/</c> was not listed.</summary>
    public bool KnownFromCache { get; }

    /// <summary>Chunks whose object-lock retention this writer extended at commit (immutable repositories only).</summary>
    public long RetentionsExtended => Interlocked.Read(ref _retentionsExtended);

    internal long ChunksStoredNew => Interlocked.Read(ref _chunksNew);
    internal long StoredBytesNew => Interlocked.Read(ref _storedBytesNew);

    internal static async Task<BackupWriter> StartAsync(Repository repo, string hostName, CancellationToken ct)
    {
        repo.ThrowIfReadOnly("backup");
        if (repo.Immutability is not null && repo.Store is not IObjectLockStore)
            throw new ImmutabilityUnsupportedException($"repository {repo.Id} is immutable but {repo.Location} does not support object lock; backups cannot be written through it");
        // Order matters: lock, then epoch, then the exclusive lock, then the listing (see the format doc).
        var held = await HeldLock.AcquireSharedAsync(repo, hostName, ct);
        try
        {
            var epoch = await repo.ReadChunkEpochAsync(ct);
            var (live, record) = await repo.ReadExclusiveLockAsync(ct);
            var deletions = live && (record is null || record.Deleting);
            var cache = repo.Cache;
            var now = repo.Clock.GetUtcNow();
            ChunkIndexCache.Snapshot? previous = null;
            if (cache is not null && epoch >= 0)
            {
                previous = await Task.Run(() => cache.TryLoad(repo.Id), ct);
                // Valid only if nothing was deleted since the listing it holds (same epoch) and nobody is
                // deleting now; the age limit bounds what objects removed behind Haven's back can cost.
                if (!deletions && previous is { } p && p.Epoch == epoch && now - p.BuiltAt <= cache.MaxAge && p.BuiltAt <= now + cache.MaxAge)
                {
                    cache.CountListingAvoided();
                    return new BackupWriter(repo, hostName, held, epoch, deletions, p.Chunks, fromCache: true, cacheable: true, p.BuiltAt);
                }
            }

            var known = new Dictionary<ChunkId, long>();
            var previousChunks = previous?.Chunks;
            await foreach (var (id, _) in repo.ListChunksAsync(ct))
            {
                // Retain-until learned earlier stays a lower bound while the object exists (retention never shrinks).
                known[id] = previousChunks is not null && previousChunks.TryGetValue(id, out var until) ? until : 0;
            }
            previous = null;
            var cacheable = false;
            if (cache is not null && !deletions && epoch >= 0 && await repo.ReadChunkEpochAsync(ct) == epoch)
            {
                cacheable = true;
                await Task.Run(() => cache.Save(repo.Id, epoch, now, known, mergeExisting: false), ct);
            }
            return new BackupWriter(repo, hostName, held, epoch, deletions, known, fromCache: false, cacheable, now);
        }
        catch
        {
            await held.DisposeAsync();
            throw;
        }
    }

    /// <summary>The chunk id of <paramref name="plaintext"/> in this repository (keyed hash).</summary>
    public ChunkId ComputeId(ReadOnlySpan<byte> plaintext) => _repo.ComputeId(plaintext);

    /// <summary>
    /// Stores a chunk unless the repository has it. Returns true if this call stored it, false if it was
    /// already there (dedup) or another worker of this writer stored it. Safe to call from many workers at
    /// once; compression and encryption run on the calling thread. The plaintext must not be all zeros
    /// (zero chunks are null in the index, never stored) and must match <paramref name="id"/>.
    /// </summary>
    public Task<bool> PutChunkAsync(ChunkId id, ReadOnlyMemory<byte> plaintext, CancellationToken ct = default)
        => PutAsync(id, plaintext, batched: false, ct);

    /// <summary>
    /// The backup's hot path: computes the chunk's id (once) and stores it unless the repository has it; returns
    /// the id and whether this call stored it. The chunk is written without its own sync and made durable with
    /// every other such chunk before <see cref="CommitAsync"/> writes the manifest (one sync for the batch); until
    /// then it may not be visible in the store. Same rules otherwise as <see cref="PutChunkAsync(ChunkId, ReadOnlyMemory{byte}, CancellationToken)"/>;
    /// the caller must not change <paramref name="plaintext"/> until the task completes.
    /// </summary>
    public async Task<(ChunkId Id, bool Created)> PutChunkAsync(ReadOnlyMemory<byte> plaintext, CancellationToken ct = default)
    {
        var id = _repo.ComputeId(plaintext.Span);
        return (id, await PutAsync(id, plaintext, batched: true, ct));
    }

    private async Task<bool> PutAsync(ChunkId id, ReadOnlyMemory<byte> plaintext, bool batched, CancellationToken ct)
    {
        ThrowIfNotOpen();
        if (plaintext.Length == 0 || plaintext.Length > _repo.ChunkSize)
            throw new ArgumentException($"a chunk is 1..{_repo.ChunkSize} bytes, not {plaintext.Length}", nameof(plaintext));
        if (_known.ContainsKey(id)) return false;

        var mine = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        while (true)
        {
            var existing = _mine.GetOrAdd(id, mine.Task);
            if (existing == mine.Task) break;
            try
            {
                await existing.WaitAsync(ct);
                return false;
            }
            catch (Exception) when (existing.IsFaulted || existing.IsCanceled)
            {
                // The worker that was storing it failed; try to store it ourselves.
            }
        }

        try
        {
            var (blob, length) = Seal(id, plaintext.Span, checkId: !batched);
            bool created;
            try
            {
                if (_lockStore is not null)
                {
                    // Days + slack, so later backups reusing it rarely need to extend it (see "Immutability").
                    var until = _immutability!.ChunkRetainUntil(_repo.Clock.GetUtcNow());
                    created = await _lockStore.TryCreateAsync(RepoKeys.Chunk(id), blob.AsMemory(0, length), _immutability.Retention(until), ct);
                    if (created) _retainUntil[id] = until;
                }
                else if (batched) created = await Batch().TryCreateAsync(RepoKeys.Chunk(id), blob.AsMemory(0, length), ct);
                else created = await _repo.Store.TryCreateAsync(RepoKeys.Chunk(id), blob.AsMemory(0, length), ct);
            }
            finally { ArrayPool<byte>.Shared.Return(blob); }
            if (created)
            {
                Interlocked.Increment(ref _chunksNew);
                Interlocked.Add(ref _bytesNew, plaintext.Length);
                Interlocked.Add(ref _storedBytesNew, length);
            }
            mine.SetResult(created);
            return created;
        }
        catch (Exception e)
        {
            _mine.TryRemove(new KeyValuePair<ChunkId, Task<bool>>(id, mine.Task));
            mine.SetException(e);
            _ = mine.Task.Exception; // observed: waiters retry on their own
            throw;
        }
    }

    /// <summary>CPU part of a put (no awaits, so spans are fine): check, then compress and encrypt into a pooled buffer.</summary>
    private (byte[] Blob, int Length) Seal(ChunkId id, ReadOnlySpan<byte> plaintext, bool checkId)
    {
        if (plaintext.IndexOfAnyExcept((byte)0) < 0)
            throw new ArgumentException("all-zero chunks are not stored: mark them null in the disk's chunk index", nameof(plaintext));
        // Recomputing a caller's id catches a buffer reused before its put finished, which would otherwise store
        // data under the wrong id and surface only at restore. (The batched put computed the id itself, just now.)
        if (checkId && _repo.ComputeId(plaintext) != id)
            throw new ArgumentException($"chunk id {id} does not match the data given", nameof(id));
        var blob = SealedObject.Rent(plaintext.Length);
        try { return (blob, _repo.SealChunk(id, plaintext, blob)); }
        catch
        {
            ArrayPool<byte>.Shared.Return(blob);
            throw;
        }
    }

    /// <summary>
    /// Writes the manifest (create-only) after checking that every chunk it references is stored, and
    /// returns the new backup id. Call after every <see cref="PutChunkAsync"/> has completed. Throws
    /// <see cref="ChunksMissingException"/> (manifest not kept) when referenced chunks are not in the
    /// store; store those again and commit again.
    /// </summary>
    public async Task<string> CommitAsync(BackupManifest manifest, CancellationToken ct = default)
    {
        ThrowIfNotOpen();
        ArgumentNullException.ThrowIfNull(manifest);
        // Every batched chunk durable (and visible) before anything can name it.
        if (_batch is { } batch) await batch.FlushAsync(ct);
        var notStored = Validate(manifest);
        if (notStored.Count > 0) throw new ChunksMissingException(notStored);

        ObjectRetention? manifestRetention = null;
        if (_lockStore is not null)
        {
            var until = _immutability!.ManifestRetainUntil(_repo.Clock.GetUtcNow());
            var gone = await ExtendRetentionsAsync(manifest, until, ct);
            if (gone.Count > 0)
            {
                Forget(gone);
                throw new ChunksMissingException(gone);
            }
            manifestRetention = _immutability.Retention(until);
        }

        var now = _repo.Clock.GetUtcNow();
        var final = manifest with
        {
            FormatVersion = BackupManifest.CurrentVersion,
            HostName = string.IsNullOrEmpty(manifest.HostName) ? _hostName : manifest.HostName,
            CreatedAt = manifest.CreatedAt == default ? now : manifest.CreatedAt,
            Stats = ComputeStats(manifest),
        };
        string id;
        var v1 = _repo.FormatVersion < 2; // only tests write version 1 (Repository.WriteVersion1ForTests)
        while (true)
        {
            id = BackupIds.New(final.CreatedAt);
            final = final with { Id = id };
            bool created;
            if (!v1)
            {
                // Index objects first, the summary last: the summary is the commit point (an index without
                // one is garbage GC removes after the grace period).
                created = await _repo.WriteSummaryAndIndexesAsync(final, manifestRetention, reuseExisting: false, ct);
            }
            else created = manifestRetention is not null
                ? await _lockStore!.TryCreateAsync(RepoKeys.Backup(id), _repo.SealManifest(final), manifestRetention, ct)
                : await _repo.Store.TryCreateAsync(RepoKeys.Backup(id), _repo.SealManifest(final), ct);
            if (created) break;
        }

        List<ChunkId> missing;
        try { missing = await CheckAfterWriteAsync(final, ct); }
        catch
        {
            // Unchecked after an overlapping deletion it might be broken: a failed commit leaves no backup.
            await WithdrawAsync(id, final.Disks.Count, v1);
            throw;
        }
        if (missing.Count > 0)
        {
            // Under object lock the withdrawal fails (ObjectLockedException) and the backup stays; that needs
            // a chunk gone despite its retention, i.e. retention bypassed by hand (see "Immutability").
            await WithdrawAsync(id, final.Disks.Count, v1);
            Forget(missing);
            throw new ChunksMissingException(missing);
        }
        _state = 1;
        await UpdateCacheAsync();
        return id;
    }

    /// <summary>
    /// Immutable repositories, before the manifest is written: every referenced chunk whose retain-until is
    /// unknown or earlier than the manifest's gets now + Days + Slack, so no chunk of a locked backup can be
    /// deleted before the backup. Returns chunks found missing (extension of a missing object fails).
    /// </summary>
    private async Task<List<ChunkId>> ExtendRetentionsAsync(BackupManifest manifest, long manifestUntil, CancellationToken ct)
    {
        var known = _known;
        var seen = new HashSet<ChunkId>();
        var toExtend = new List<ChunkId>();
        foreach (var disk in manifest.Disks)
            foreach (var entry in disk.Chunks)
            {
                if (entry is not { } id || !seen.Add(id)) continue;
                var recorded = known.TryGetValue(id, out var k) ? k : 0;
                if (_retainUntil.TryGetValue(id, out var mine) && mine > recorded) recorded = mine;
                if (recorded < manifestUntil) toExtend.Add(id);
            }
        var gone = new ConcurrentBag<ChunkId>();
        if (toExtend.Count == 0) return [];
        var until = _immutability!.ChunkRetainUntil(_repo.Clock.GetUtcNow());
        var retention = _immutability.Retention(until);
        var options = new ParallelOptions { MaxDegreeOfParallelism = ExtendParallelism, CancellationToken = ct };
        await Parallel.ForEachAsync(toExtend, options, async (id, token) =>
        {
            var key = RepoKeys.Chunk(id);
            try
            {
                await _lockStore!.ExtendRetentionAsync(key, retention, token);
            }
            catch (StoreException) when (!token.IsCancellationRequested)
            {
                if (await _repo.Store.StatAsync(key, token) is null) { gone.Add(id); return; }
                throw;
            }
            _retainUntil.AddOrUpdate(id, until, (_, old) => Math.Max(old, until));
            Interlocked.Increment(ref _retentionsExtended);
        });
        return [.. gone];
    }

    /// <summary>
    /// Adds what this writer learned (chunks it created or found present, retentions it set) to the chunk
    /// index cache, labelled with the start epoch. No need to re-read the epoch: if a GC has moved it since,
    /// the label no longer matches and no writer will use the file (the next one lists and rebuilds it).
    /// </summary>
    private async Task UpdateCacheAsync()
    {
        var cache = _repo.Cache;
        if (cache is null || Interlocked.Exchange(ref _cacheUpdated, 1) == 1) return;
        try
        {
            if (!_cacheable)
            {
                cache.Invalidate(_repo.Id);
                return;
            }
            var all = new Dictionary<ChunkId, long>(_known);
            foreach (var (id, task) in _mine)
                if (task.IsCompletedSuccessfully) all.TryAdd(id, 0);
            foreach (var (id, until) in _retainUntil)
                if (all.TryGetValue(id, out var old) && old < until) all[id] = until;
            await Task.Run(() => cache.Save(_repo.Id, _epochAtStart, _cacheBuiltAt, all, mergeExisting: true));
        }
        catch (Exception e) when (e is StoreException or IOException or UnauthorizedAccessException)
        {
            cache.Invalidate(_repo.Id);
        }
    }

    /// <summary>Checks the manifest's shape; returns referenced ids that this writer has no reason to believe are stored.</summary>
    private List<ChunkId> Validate(BackupManifest manifest)
    {
        if (string.IsNullOrWhiteSpace(manifest.VmName)) throw new ArgumentException("the manifest needs a VM name", nameof(manifest));
        if (manifest.Disks is null) throw new ArgumentException("the manifest needs a disk list", nameof(manifest));
        var notStored = new List<ChunkId>();
        var reported = new HashSet<ChunkId>();
        var known = _known;
        foreach (var disk in manifest.Disks)
        {
            if (string.IsNullOrWhiteSpace(disk.Name)) throw new ArgumentException("every disk needs a name", nameof(manifest));
            if (disk.ChunkSize != _repo.ChunkSize)
                throw new ArgumentException($"disk {disk.Name} uses chunk size {disk.ChunkSize}; this repository's is {_repo.ChunkSize}", nameof(manifest));
            if (disk.SizeBytes < 0 || disk.Chunks is null || disk.Chunks.LongLength != DiskManifest.ChunkCount(disk.SizeBytes, disk.ChunkSize))
                throw new ArgumentException($"disk {disk.Name}: a {disk.SizeBytes}-byte disk needs {DiskManifest.ChunkCount(Math.Max(0, disk.SizeBytes), disk.ChunkSize)} index entries", nameof(manifest));
            foreach (var entry in disk.Chunks)
            {
                if (entry is not { } id || known.ContainsKey(id)) continue;
                if ((!_mine.TryGetValue(id, out var task) || !task.IsCompletedSuccessfully) && reported.Add(id)) notStored.Add(id);
            }
        }
        return notStored;
    }

    private ManifestStats ComputeStats(BackupManifest manifest)
    {
        long size = 0, referenced = 0, zero = 0;
        foreach (var disk in manifest.Disks)
        {
            size += disk.SizeBytes;
            foreach (var entry in disk.Chunks)
                if (entry.HasValue) referenced++; else zero++;
        }
        return new ManifestStats
        {
            SizeBytes = size,
            ChunksReferenced = referenced,
            ChunksZero = zero,
            ChunksNew = Interlocked.Read(ref _chunksNew),
            BytesNew = Interlocked.Read(ref _bytesNew),
            StoredBytesNew = Interlocked.Read(ref _storedBytesNew),
        };
    }

    /// <summary>
    /// After the manifest is written: if a chunk deletion (GC, verify) may have overlapped this writer,
    /// wait for it to end and check that every referenced chunk is still there. Returns the missing ones.
    /// </summary>
    private async Task<List<ChunkId>> CheckAfterWriteAsync(BackupManifest manifest, CancellationToken ct)
    {
        var mustCheck = _deletionsAtStart || _lock.Lapsed;
        var (live, record) = await _repo.ReadExclusiveLockAsync(ct);
        if (live && (record is null || record.Deleting))
        {
            // It may have listed manifests before ours was written: let it finish before checking.
            mustCheck = true;
            while (live && (record is null || record.Deleting))
            {
                await Task.Delay(GcPollInterval, _repo.Clock, ct);
                LockRecord? next;
                (live, next) = await _repo.ReadExclusiveLockAsync(ct);
                if (next is not null && record is not null && next.OwnerId != record.OwnerId) break; // a new holder lists manifests after ours
                record = next;
            }
        }
        if (await _repo.ReadChunkEpochAsync(ct) != _epochAtStart) mustCheck = true;
        var missing = new List<ChunkId>();
        if (!mustCheck) return missing;

        var present = new HashSet<ChunkId>();
        await foreach (var (id, _) in _repo.ListChunksAsync(ct)) present.Add(id);
        var reported = new HashSet<ChunkId>();
        foreach (var disk in manifest.Disks)
            foreach (var entry in disk.Chunks)
                if (entry is { } id && !present.Contains(id) && reported.Add(id)) missing.Add(id);
        return missing;
    }

    /// <summary>Removes a just-committed backup: the summary first (the backup is gone at once), then its indexes.</summary>
    private async Task WithdrawAsync(string backupId, int disks, bool v1)
    {
        if (v1)
        {
            await DeleteQuietlyAsync(RepoKeys.Backup(backupId));
            return;
        }
        await DeleteQuietlyAsync(RepoKeys.Summary(backupId));
        for (var i = 0; i < disks; i++) await DeleteQuietlyAsync(RepoKeys.Index($"{backupId}.{i}"));
    }

    private async Task DeleteQuietlyAsync(string key)
    {
        try { await _repo.Store.DeleteAsync(key, CancellationToken.None); }
        catch (Exception e) when (e is Haven.Storage.StoreException or IOException)
        {
            _repo.Log.LogWarning(e, "cleanup failed: delete {Key}: {Error}", key, e.Message);
        }
    }

    private void Forget(List<ChunkId> missing)
    {
        var known = new Dictionary<ChunkId, long>(_known);
        foreach (var id in missing)
        {
            known.Remove(id);
            _mine.TryRemove(id, out _);
            _retainUntil.TryRemove(id, out _);
        }
        _known = known;
    }

    private IObjectBatch Batch()
    {
        if (_batch is { } b) return b;
        lock (_batchLock) return _batch ??= _repo.Store.BeginBatch();
    }

    private void ThrowIfNotOpen()
    {
        if (_state == 1) throw new InvalidOperationException("this backup was already committed");
        if (_state == 2) throw new ObjectDisposedException(nameof(BackupWriter));
    }

    /// <summary>Releases the writer lock (and updates the chunk index cache). Chunks stored without a commit stay until GC collects them.</summary>
    public async ValueTask DisposeAsync()
    {
        if (_state == 2) return;
        _state = 2;
        if (_batch is { } batch)
        {
            // Batched chunks of a backup that was not committed are kept like the others (a retry reuses them).
            try { await batch.FlushAsync(CancellationToken.None); }
            catch (Exception e) when (e is StoreException or IOException)
            {
                _repo.Log.LogWarning(e, "chunks of an uncommitted backup were not kept: {Error}", e.Message);
                Forget([.. _mine.Keys]);
            }
            await batch.DisposeAsync();
        }
        await UpdateCacheAsync();
        await _lock.DisposeAsync();
    }
}
