using System.Buffers;
using System.Collections.Concurrent;
using Haven.Storage;
using Microsoft.Extensions.Logging;

namespace Haven.Repository;

public sealed partial class Repository
{
    /// <summary>
    /// Applies <paramref name="policy"/> to each VM's backups and, unless <paramref name="dryRun"/>, deletes
    /// the manifests it does not keep (under the exclusive lock). Chunks are left for <see cref="CollectGarbageAsync"/>.
    /// A manifest that cannot be read is left alone and reported (<see cref="PruneResult.Unreadable"/>).
    /// </summary>
    public async Task<PruneResult> PruneAsync(RetentionPolicy policy, bool dryRun, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(policy);
        if (policy.IsEmpty) throw new ArgumentException("the retention policy keeps nothing; set at least one keep rule", nameof(policy));
        if (!dryRun) ThrowIfReadOnly("prune");
        var exclusive = dryRun ? null : await HeldLock.AcquireExclusiveAsync(this, "prune", ct);
        try
        {
            var backups = await ListBackupsAsync(ct);
            // Read after the exclusive lock is held: a reader that locks later sees prune's lock and backs off.
            var inUse = await ReadBackupsInUseAsync(ct);
            var kept = new List<KeptBackup>();
            var doomed = new List<BackupSummary>();
            foreach (var vm in backups.GroupBy(b => b.VmName, StringComparer.Ordinal))
                foreach (var d in policy.Apply(vm, b => b.CreatedAt, b => b.Id))
                    if (d.Keep) kept.Add(new KeptBackup(d.Backup, d.Reasons));
                    else if (inUse.TryGetValue(d.Backup.Id, out var reader)) kept.Add(new KeptBackup(d.Backup, ["in use: " + reader]));
                    else doomed.Add(d.Backup);
            var removed = new List<BackupSummary>();
            var locked = new List<LockedBackup>();
            var lockStore = Immutability is null ? null : Store as IObjectLockStore;
            if (exclusive is not null) Step("prune.after-lock");
            if (exclusive is not null && doomed.Count > 0) await exclusive.EnsureHeldAsync(ct);
            foreach (var b in doomed)
            {
                if (exclusive is null)
                {
                    // Dry run: say which removals object lock would refuse.
                    var retention = lockStore is null ? null : await lockStore.GetRetentionAsync(FormatVersion >= 2 ? RepoKeys.Summary(b.Id) : RepoKeys.Backup(b.Id), ct);
                    if (retention is not null && retention.RetainUntil > Clock.GetUtcNow()) locked.Add(new LockedBackup(b, retention.RetainUntil));
                    else removed.Add(b);
                    continue;
                }
                exclusive.ThrowIfLost();
                try
                {
                    // Version 2: the summary is the backup; its index objects become garbage for GC.
                    await Store.DeleteAsync(FormatVersion >= 2 ? RepoKeys.Summary(b.Id) : RepoKeys.Backup(b.Id), ct);
                    removed.Add(b);
                    Step("prune.after-delete");
                }
                catch (ObjectLockedException e) { locked.Add(new LockedBackup(b, e.RetainUntil)); } // kept: not an error
            }
            return new PruneResult(dryRun, kept, removed) { Locked = locked, Unreadable = backups.Unreadable };
        }
        finally
        {
            if (exclusive is not null) await exclusive.DisposeAsync();
        }
    }

    /// <summary>
    /// Mark and sweep under the exclusive lock. Deletes a chunk only if no manifest references it and it was
    /// written before min(GC start, oldest live writer's start) − grace period, so chunks of backups still
    /// being written survive. If any manifest cannot be read, nothing is deleted (what it references is
    /// unknown): the result says so (<see cref="GcResult.SweepSkipped"/>) and names the manifests.
    /// Rules and their reasons: docs/repository-format.md, "Garbage collection".
    /// </summary>
    public async Task<GcResult> CollectGarbageAsync(CancellationToken ct = default)
    {
        ThrowIfReadOnly("gc");
        await using var exclusive = await HeldLock.AcquireExclusiveAsync(this, "gc", ct);
        Step("gc.after-lock");
        var start = Clock.GetUtcNow();
        var (writers, staleRemoved) = await ReadWriterLocksAsync(removeStale: true, ct);
        var oldest = start;
        foreach (var w in writers) if (w < oldest) oldest = w;
        var cutoff = oldest - GcGracePeriod;

        // Prefixes of referenced ids (ChunkId.Prefix): a quarter of the memory of whole ids for millions of chunks.
        var referenced = new HashSet<ulong>();
        var marked = new HashSet<string>(StringComparer.Ordinal);
        var indexes = new HashSet<string>(StringComparer.Ordinal);
        var unreadable = new List<ManifestProblem>();
        await MarkAsync(referenced, marked, indexes, unreadable, ct);
        if (unreadable.Count == 0)
        {
            // Announce deletions, then mark again: a manifest committed during the first pass is seen now, and
            // any later commit sees the announcement and re-checks its chunks (BackupWriter.CommitAsync).
            await BeginDeletingChunksAsync(exclusive, ct);
            Step("gc.after-announce");
            await MarkAsync(referenced, marked, indexes, unreadable, ct);
        }
        // An unreadable manifest may reference any chunk: sweeping anything could destroy its backup.
        var sweep = unreadable.Count == 0;

        var candidates = new List<ObjectInfo>();
        long young = 0, youngBytes = 0, notSwept = 0, notSweptBytes = 0;
        await foreach (var (id, info) in ListChunksAsync(ct))
        {
            if (referenced.Contains(id.Prefix)) continue;
            if (info.LastModified >= cutoff) { young++; youngBytes += info.Size; continue; }
            if (sweep) candidates.Add(info);
            else { notSwept++; notSweptBytes += info.Size; }
        }
        // Index objects no summary names (a writer that died before its summary, a pruned backup): same cutoff.
        await foreach (var o in Store.ListAsync(RepoKeys.IndexesPrefix, ct))
        {
            var name = o.Key[RepoKeys.IndexesPrefix.Length..];
            if (sweep && IsIndexName(name) && !indexes.Contains(name) && o.LastModified < cutoff) candidates.Add(o);
        }
        if (sweep) await exclusive.EnsureHeldAsync(ct);
        long deleted = 0, deletedBytes = 0, locked = 0, lockedBytes = 0, indexesDeleted = 0;
        foreach (var c in candidates)
        {
            exclusive.ThrowIfLost();
            try
            {
                var isChunk = c.Key.StartsWith(RepoKeys.ChunksPrefix, StringComparison.Ordinal);
                if (await Store.DeleteAsync(c.Key, ct) && isChunk) { deleted++; deletedBytes += c.Size; }
                else if (!isChunk) indexesDeleted++;
                Step("gc.after-delete");
            }
            catch (ObjectLockedException) { locked++; lockedBytes += c.Size; } // retention not over yet: a later GC takes it
        }
        return new GcResult
        {
            BackupsMarked = marked.Count,
            ChunksReferenced = referenced.Count,
            ChunksDeleted = deleted,
            BytesDeleted = deletedBytes,
            ChunksKeptYoung = young,
            BytesKeptYoung = youngBytes,
            Cutoff = cutoff,
            LiveWriters = writers.Count,
            StaleLocksRemoved = staleRemoved,
            ChunksLocked = locked,
            BytesLocked = lockedBytes,
            SweepSkipped = !sweep,
            UnreadableManifests = [.. unreadable.OrderBy(m => m.BackupId, StringComparer.Ordinal)],
            ChunksKeptUnreadable = notSwept,
            BytesKeptUnreadable = notSweptBytes,
            IndexesDeleted = indexesDeleted,
        };
    }

    /// <summary>
    /// Adds the chunks of every manifest not yet in <paramref name="marked"/>; one that cannot be read goes to
    /// <paramref name="unreadable"/> (what it references is unknown, so the caller must not sweep).
    /// </summary>
    private async Task MarkAsync(HashSet<ulong> referenced, HashSet<string> marked, HashSet<string> indexes, List<ManifestProblem> unreadable, CancellationToken ct)
    {
        var buffer = new IndexBuffer();
        foreach (var backupId in await ListBackupIdsAsync(ct))
        {
            if (marked.Contains(backupId)) continue;
            // Pruned meanwhile, or unreadable (then in unreadable). Each index object is read once per run.
            if (await VisitReferencesAsync(backupId, id => referenced.Add(id.Prefix), indexes, unreadable, ct, buffer)) marked.Add(backupId);
        }
    }

    /// <summary>Backups named by live reader locks, each with who reads it; stale reader locks are removed.</summary>
    private async Task<Dictionary<string, string>> ReadBackupsInUseAsync(CancellationToken ct)
    {
        var keys = new List<string>();
        await foreach (var o in Store.ListAsync(RepoKeys.ReaderLockPrefix, ct)) keys.Add(o.Key);
        var inUse = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var key in keys)
        {
            var record = LockRecord.TryParse(await Store.GetAsync(key, ct));
            if (await IsStaleAsync(key, record, ct))
            {
                await Store.DeleteAsync(key, ct);
                continue;
            }
            foreach (var id in record?.Backups ?? []) inUse.TryAdd(id, record!.ToString());
        }
        return inUse;
    }

    /// <summary>Start times of live writers; stale writer locks are removed when asked.</summary>
    private async Task<(List<DateTimeOffset> LiveStarts, int StaleRemoved)> ReadWriterLocksAsync(bool removeStale, CancellationToken ct)
    {
        var keys = new List<string>();
        await foreach (var o in Store.ListAsync(RepoKeys.WriterLockPrefix, ct)) keys.Add(o.Key);
        var live = new List<DateTimeOffset>();
        var removed = 0;
        foreach (var key in keys)
        {
            var json = await Store.GetAsync(key, ct);
            if (json is null) continue; // released meanwhile
            var record = LockRecord.TryParse(json);
            if (await IsStaleAsync(key, record, ct))
            {
                if (removeStale && await Store.DeleteAsync(key, ct)) removed++;
                continue;
            }
            // A live lock we cannot read could be any age: protect everything.
            live.Add(record?.StartedAt ?? DateTimeOffset.MinValue + GcGracePeriod);
        }
        return (live, removed);
    }

    /// <summary>
    /// Checks the repository. Always: the config, that every manifest authenticates, that every referenced
    /// chunk exists. With <paramref name="readData"/>: reads and re-hashes every chunk, and moves corrupt
    /// ones aside to "&lt;key&gt;.bad" (under the exclusive lock) so the next backup of that data stores it anew.
    /// </summary>
    public async Task<VerifyResult> VerifyAsync(bool readData, CancellationToken ct = default)
    {
        var exclusive = readData ? await HeldLock.AcquireExclusiveAsync(this, "verify", ct) : null;
        try
        {
            var configProblem = await CheckConfigAsync(ct);
            var users = new Dictionary<ChunkId, List<string>>();
            var corruptManifests = new List<ManifestProblem>();
            var backupsChecked = 0;
            var buffer = new IndexBuffer(); // every backup's indexes are read: one buffer, as in GC's marking
            foreach (var backupId in await ListBackupIdsAsync(ct))
            {
                var found = await VisitReferencesAsync(backupId, id =>
                {
                    if (!users.TryGetValue(id, out var list)) users[id] = list = [];
                    if (list.Count == 0 || list[^1] != backupId) list.Add(backupId);
                }, null, corruptManifests, ct, buffer);
                if (found) backupsChecked++;
            }

            var present = new Dictionary<ChunkId, ObjectInfo>();
            await foreach (var (id, info) in ListChunksAsync(ct)) present[id] = info;
            var missing = new List<ChunkProblem>();
            foreach (var (id, backups) in users)
                if (!present.ContainsKey(id)) missing.Add(new ChunkProblem(id, Sorted(backups), "missing"));

            var corrupt = new ConcurrentBag<ChunkProblem>();
            long chunksRead = 0;
            if (exclusive is not null)
            {
                using var announce = new SemaphoreSlim(1, 1);
                var announced = false;
                var options = new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount, CancellationToken = ct };
                await Parallel.ForEachAsync(present, options, async (chunk, token) =>
                {
                    var problem = await CheckChunkAsync(chunk.Key, token);
                    Interlocked.Increment(ref chunksRead);
                    if (problem is null) return;
                    await announce.WaitAsync(token);
                    try
                    {
                        if (!announced) { await BeginDeletingChunksAsync(exclusive, token); announced = true; }
                    }
                    finally { announce.Release(); }
                    exclusive.ThrowIfLost();
                    var (movedTo, lockedUntil) = await MoveAsideAsync(chunk.Value.Key, token);
                    var backups = users.TryGetValue(chunk.Key, out var list) ? Sorted(list) : [];
                    corrupt.Add(new ChunkProblem(chunk.Key, backups, problem, movedTo) { LockedUntil = lockedUntil });
                });
            }

            return new VerifyResult
            {
                DataRead = readData,
                ConfigProblem = configProblem,
                BackupsChecked = backupsChecked,
                ChunksReferenced = users.Count,
                ChunksPresent = present.Count,
                ChunksRead = chunksRead,
                CorruptManifests = [.. corruptManifests.OrderBy(m => m.BackupId, StringComparer.Ordinal)],
                MissingChunks = [.. missing.OrderBy(c => c.ChunkId.ToString(), StringComparer.Ordinal)],
                CorruptChunks = [.. corrupt.OrderBy(c => c.ChunkId.ToString(), StringComparer.Ordinal)],
            };
        }
        finally
        {
            if (exclusive is not null) await exclusive.DisposeAsync();
        }
    }

    private static string[] Sorted(List<string> ids)
    {
        var array = ids.ToArray();
        Array.Sort(array, StringComparer.Ordinal);
        return array;
    }

    private async Task<string?> CheckConfigAsync(CancellationToken ct)
    {
        var json = await Store.GetAsync(RepoKeys.Config, ct);
        if (json is null) return "the config object is missing";
        try
        {
            var now = RepositoryConfig.Parse(json, Location);
            return now.Id == _config.Id && now.AssociatedData().AsSpan().SequenceEqual(_config.AssociatedData())
                && now.MasterKey.Ciphertext.AsSpan().SequenceEqual(_config.MasterKey.Ciphertext)
                ? null : "the config object changed since the repository was opened";
        }
        catch (RepositoryException e) { return e.Message; }
    }

    /// <summary>Reads one chunk and checks it fully; returns what is wrong, or null.</summary>
    private async Task<string?> CheckChunkAsync(ChunkId id, CancellationToken ct)
    {
        var max = SealedObject.Overhead + ChunkSize;
        var buffer = ArrayPool<byte>.Shared.Rent(max + 1);
        var plain = ArrayPool<byte>.Shared.Rent(ChunkSize);
        try
        {
            var n = await Store.ReadAsync(RepoKeys.Chunk(id), buffer.AsMemory(0, max + 1), ct);
            if (n < 0) return null; // gone since the listing: nothing to check (the missing check covers references)
            if (n > max) return $"object is {n} bytes, larger than any chunk of this repository";
            try { OpenChunk(id, buffer.AsSpan(0, n), plain.AsSpan(0, ChunkSize)); }
            catch (CorruptChunkException e) { return e.Reason; }
            return null;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
            ArrayPool<byte>.Shared.Return(plain);
        }
    }

    /// <summary>
    /// "Renames" a chunk to &lt;key&gt;.bad (or &lt;key&gt;.N.bad if taken): create the copy, then delete the original.
    /// A chunk under object lock cannot be moved: it is left in place and its retain-until returned instead.
    /// </summary>
    private async Task<(string? MovedTo, DateTimeOffset? LockedUntil)> MoveAsideAsync(string key, CancellationToken ct)
    {
        if (Immutability is not null && Store is IObjectLockStore lockStore
            && await lockStore.GetRetentionAsync(key, ct) is { } retention && retention.RetainUntil > Clock.GetUtcNow())
            return (null, retention.RetainUntil);
        var bytes = await Store.GetAsync(key, ct);
        if (bytes is null) return (null, null);
        for (var i = 0; i < 1000; i++)
        {
            var target = i == 0 ? key + ".bad" : $"{key}.{i}.bad";
            if (!await Store.TryCreateAsync(target, bytes, ct)) continue;
            try { await Store.DeleteAsync(key, ct); }
            catch (ObjectLockedException e)
            {
                // The copy is pointless now; one left behind is only a stray object.
                try { await Store.DeleteAsync(target, ct); }
                catch (StoreException x) { Log.LogWarning(x, "cleanup failed: delete the quarantine copy {Key}: {Error}", target, x.Message); }
                return (null, e.RetainUntil ?? DateTimeOffset.MaxValue);
            }
            return (target, null);
        }
        throw new StoreException($"cannot move {key} aside: too many .bad copies already");
    }
}
