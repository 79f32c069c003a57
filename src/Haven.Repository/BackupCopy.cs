using System.Buffers;

namespace Haven.Repository;

/// <summary>Copying a backup from one repository into another (docs/repository-format.md, "Copying a backup").</summary>
public static class BackupCopy
{
    /// <summary>Chunks in flight during a copy: enough to keep a remote store busy, bounded so memory stays at a few chunk buffers per core.</summary>
    private static int CopyParallelism => Math.Clamp(Environment.ProcessorCount * 4, 8, 32);

    /// <summary>
    /// Copies one backup from <paramref name="source"/> into <paramref name="target"/> (another repository,
    /// with its own keys). Chunk ids are keyed per repository, so every distinct source chunk is read once,
    /// verified, re-hashed under the target's key and handed to a target <see cref="BackupWriter"/>, which
    /// uploads only chunks the target lacks. The new manifest keeps the VM, time, mode, definition and disk
    /// layout and records its origin in <see cref="BackupManifest.CopiedFrom"/>. Copying a backup the target
    /// already has a copy of does nothing and returns that copy. A missing or corrupt source chunk fails the
    /// copy before any manifest is written. <paramref name="progress"/> gets the bytes of the backup's disks
    /// done so far (zero regions count at once, a chunk once per place it is used); it ends at the backup's size.
    /// Format rules: docs/repository-format.md, "Copying a backup".
    /// </summary>
    public static async Task<CopyResult> CopyAsync(Repository source, string backupId, Repository target, string hostName,
        IProgress<long>? progress = null, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(target);
        ArgumentException.ThrowIfNullOrWhiteSpace(hostName);
        if (source.Id == target.Id)
            throw new RepositoryFormatMismatchException($"source and target are the same repository ({source.Id})");
        if (source.ChunkSize != target.ChunkSize)
            throw new RepositoryFormatMismatchException($"cannot copy between repositories with different chunk sizes (source {source.ChunkSize} bytes, target {target.ChunkSize} bytes)");

        target.ThrowIfReadOnly("copy into it");
        var manifest = await source.ReadManifestAsync(backupId, ct);
        if (await FindCopyAsync(target, source.Id, manifest, ct) is { } existing)
            return new CopyResult(existing, AlreadyPresent: true, 0, 0, 0);

        // Distinct source chunks, each read once; mapped[i] is the target id of distinct[i].
        var slot = new Dictionary<ChunkId, int>();
        var distinct = new List<ChunkId>();
        var uses = new List<int>();
        long zeroBytes = 0;
        foreach (var disk in manifest.Disks)
            for (var i = 0; i < disk.Chunks.Length; i++)
            {
                if (disk.Chunks[i] is not { } id) { zeroBytes += Math.Min(disk.ChunkSize, disk.SizeBytes - (long)i * disk.ChunkSize); continue; }
                if (slot.TryAdd(id, distinct.Count)) { distinct.Add(id); uses.Add(1); }
                else uses[slot[id]]++;
            }
        var mapped = new ChunkId[distinct.Count];
        var all = new int[distinct.Count];
        for (var i = 0; i < all.Length; i++) all[i] = i;

        await using var writer = await target.BeginBackupAsync(hostName, ct);
        target.Step("copy.after-lock");
        var counters = new CopyCounters { Bytes = zeroBytes, Uses = uses };
        if (zeroBytes > 0) progress?.Report(zeroBytes);
        await CopyChunksAsync(source, writer, distinct, all, mapped, counters, progress, ct);
        target.Step("copy.after-chunks");

        var disks = new List<DiskManifest>(manifest.Disks.Count);
        foreach (var disk in manifest.Disks)
        {
            var chunks = new ChunkId?[disk.Chunks.Length];
            for (var i = 0; i < chunks.Length; i++)
                if (disk.Chunks[i] is { } id) chunks[i] = mapped[slot[id]];
            disks.Add(new DiskManifest { Name = disk.Name, SizeBytes = disk.SizeBytes, ChunkSize = target.ChunkSize, Chunks = chunks });
        }
        var copy = manifest with
        {
            Id = "",
            Disks = disks,
            // The parent is a backup of the source repository: its id means nothing in the target.
            ParentBackupId = null,
            Stats = new ManifestStats(),
            CopiedFrom = new BackupOrigin { RepositoryId = source.Id, BackupId = manifest.Id, CopiedAt = target.Clock.GetUtcNow() },
        };

        for (var attempt = 0; ; attempt++)
        {
            try
            {
                var id = await writer.CommitAsync(copy, ct);
                target.Step("copy.after-commit");
                return new CopyResult(id, AlreadyPresent: false, counters.ChunksRead, writer.ChunksStoredNew, writer.StoredBytesNew);
            }
            catch (ChunksMissingException e) when (attempt < 3)
            {
                // A GC or verify in the target removed chunks the writer had deduplicated against: copy those again
                // (progress may then pass the backup's size a little).
                var gone = new HashSet<ChunkId>(e.ChunkIds);
                var again = new List<int>();
                for (var i = 0; i < mapped.Length; i++)
                    if (gone.Contains(mapped[i])) again.Add(i);
                await CopyChunksAsync(source, writer, distinct, again, mapped, counters, progress, ct);
            }
        }
    }

    private sealed class CopyCounters
    {
        public long ChunksRead;
        public long Bytes;
        public required List<int> Uses;
    }

    /// <summary>
    /// Reads, verifies and re-keys the chosen source chunks and stores them through <paramref name="writer"/>.
    /// Workers run read and write back to back; with many in flight, reads of some overlap writes of others.
    /// </summary>
    private static async Task CopyChunksAsync(Repository source, BackupWriter writer, List<ChunkId> distinct, IReadOnlyList<int> which,
        ChunkId[] mapped, CopyCounters counters, IProgress<long>? progress, CancellationToken ct)
    {
        var options = new ParallelOptions { MaxDegreeOfParallelism = CopyParallelism, CancellationToken = ct };
        await Parallel.ForEachAsync(which, options, async (i, token) =>
        {
            var buffer = ArrayPool<byte>.Shared.Rent(source.ChunkSize);
            try
            {
                // ReadChunkAsync checks the tag and the source id: nothing unverified reaches the target.
                var n = await source.ReadChunkAsync(distinct[i], buffer, token);
                var plaintext = buffer.AsMemory(0, n);
                var id = writer.ComputeId(plaintext.Span);
                await writer.PutChunkAsync(id, plaintext, token);
                mapped[i] = id;
                Interlocked.Increment(ref counters.ChunksRead);
                if (progress is not null) progress.Report(Interlocked.Add(ref counters.Bytes, (long)n * counters.Uses[i]));
            }
            finally { ArrayPool<byte>.Shared.Return(buffer); }
        });
    }

    /// <summary>
    /// The id of a backup in this repository that is a copy of <paramref name="original"/> from repository
    /// <paramref name="sourceId"/>, or null. A copy keeps createdAt, so its id starts with the same
    /// "yyyyMMdd-HHmmss-": only those few manifests are listed and read.
    /// </summary>
    private static async Task<string?> FindCopyAsync(Repository target, string sourceId, BackupManifest original, CancellationToken ct)
    {
        var root = target.FormatVersion >= 2 ? RepoKeys.SummariesPrefix : RepoKeys.BackupsPrefix;
        var prefix = root + BackupIds.TimePrefix(original.CreatedAt);
        var candidates = new List<string>();
        await foreach (var o in target.Store.ListAsync(prefix, ct))
        {
            var id = o.Key[root.Length..];
            if (BackupIds.IsValid(id)) candidates.Add(id);
        }
        candidates.Sort(StringComparer.Ordinal);
        foreach (var id in candidates)
        {
            SummaryDocument? m;
            try { m = await target.ReadSummaryAsync(id, ct); }
            catch (Exception e) when (e is CorruptManifestException or UnsupportedFormatException) { continue; }
            if (m?.CopiedFrom is { } from && from.RepositoryId == sourceId && from.BackupId == original.Id) return id;
        }
        return null;
    }
}
