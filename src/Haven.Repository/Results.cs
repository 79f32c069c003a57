namespace Haven.Repository;

/// <summary>What prune decided (and, unless DryRun, did): manifests removed; chunks are GC's business.</summary>
public sealed record PruneResult(bool DryRun, IReadOnlyList<KeptBackup> Kept, IReadOnlyList<BackupSummary> Removed)
{
    /// <summary>
    /// Backups the policy would remove but object lock keeps (their manifest's retention has not expired);
    /// not in <see cref="Removed"/>. A later prune removes them once the retention has passed.
    /// </summary>
    public IReadOnlyList<LockedBackup> Locked { get; init; } = [];

    /// <summary>Manifests that could not be read (sorted by id): neither kept by a rule nor removed — left as they are.</summary>
    public IReadOnlyList<ManifestProblem> Unreadable { get; init; } = [];
}

/// <summary>A backup prune wanted to remove but could not: its manifest is under object-lock retention until <see cref="RetainUntil"/> (null when the store did not say).</summary>
public sealed record LockedBackup(BackupSummary Backup, DateTimeOffset? RetainUntil);

/// <summary>A backup prune keeps, and the rules that keep it ("last", "daily", "oldest (weekly)", …).</summary>
public sealed record KeptBackup(BackupSummary Backup, IReadOnlyList<string> Reasons);

/// <summary>What <see cref="BackupCopy.CopyAsync"/> did.</summary>
/// <param name="TargetBackupId">The backup in the target repository (new, or the earlier copy).</param>
/// <param name="AlreadyPresent">The target already held a copy of this backup; nothing was written.</param>
/// <param name="ChunksRead">Distinct source chunks read (each once).</param>
/// <param name="ChunksUploaded">Chunks the target lacked and that were stored in it.</param>
/// <param name="BytesUploaded">Bytes those chunks take in the target store (compressed, encrypted).</param>
public sealed record CopyResult(string TargetBackupId, bool AlreadyPresent, long ChunksRead, long ChunksUploaded, long BytesUploaded);

/// <summary>What a garbage collection found and deleted.</summary>
public sealed record GcResult
{
    /// <summary>Manifests read in the mark phase.</summary>
    public required int BackupsMarked { get; init; }
    /// <summary>Distinct referenced ids, counted by their 8-byte prefix (see CollectGarbageAsync).</summary>
    public required long ChunksReferenced { get; init; }
    public required long ChunksDeleted { get; init; }
    public required long BytesDeleted { get; init; }
    /// <summary>Unreferenced chunks kept because they are newer than the cutoff (a live writer may need them).</summary>
    public required long ChunksKeptYoung { get; init; }
    public required long BytesKeptYoung { get; init; }
    /// <summary>Only unreferenced chunks written before this were deleted: min(GC start, oldest live writer's start) − grace period.</summary>
    public required DateTimeOffset Cutoff { get; init; }
    public required int LiveWriters { get; init; }
    public required int StaleLocksRemoved { get; init; }
    /// <summary>Unreferenced chunks GC would have deleted but object lock kept (retention not expired); a later GC takes them.</summary>
    public long ChunksLocked { get; init; }
    public long BytesLocked { get; init; }
    /// <summary>
    /// True when some manifest could not be read (<see cref="UnreadableManifests"/>): GC then deletes no chunk,
    /// since that backup may reference any of them. Repair or remove the manifest, then run GC again.
    /// </summary>
    public bool SweepSkipped { get; init; }
    public IReadOnlyList<ManifestProblem> UnreadableManifests { get; init; } = [];
    /// <summary>Unreferenced chunks older than the cutoff that were kept only because the sweep was skipped.</summary>
    public long ChunksKeptUnreadable { get; init; }
    public long BytesKeptUnreadable { get; init; }
    /// <summary>Index objects no summary names any more (pruned backups, writers that died before their summary), deleted after the grace period.</summary>
    public long IndexesDeleted { get; init; }
}

/// <summary>What verify found. Healthy means nothing is missing or corrupt.</summary>
public sealed record VerifyResult
{
    public required bool DataRead { get; init; }
    /// <summary>Null when the config object is as it was when the repository was opened.</summary>
    public string? ConfigProblem { get; init; }
    public required int BackupsChecked { get; init; }
    public required long ChunksReferenced { get; init; }
    public required long ChunksPresent { get; init; }
    /// <summary>Chunks whose data was read and checked (readData only).</summary>
    public required long ChunksRead { get; init; }
    public required IReadOnlyList<ManifestProblem> CorruptManifests { get; init; }
    public required IReadOnlyList<ChunkProblem> MissingChunks { get; init; }
    public required IReadOnlyList<ChunkProblem> CorruptChunks { get; init; }

    /// <summary>Every backup that cannot be fully restored, sorted.</summary>
    public IReadOnlyList<string> DamagedBackups
    {
        get
        {
            var set = new SortedSet<string>(StringComparer.Ordinal);
            foreach (var m in CorruptManifests) set.Add(m.BackupId);
            foreach (var c in MissingChunks) set.UnionWith(c.BackupIds);
            foreach (var c in CorruptChunks) set.UnionWith(c.BackupIds);
            return [.. set];
        }
    }

    public bool IsHealthy => ConfigProblem is null && CorruptManifests.Count == 0 && MissingChunks.Count == 0 && CorruptChunks.Count == 0;
}

public sealed record ManifestProblem(string BackupId, string Reason);

/// <summary>A missing or corrupt chunk, the backups that reference it (sorted), and where a corrupt one was moved.</summary>
public sealed record ChunkProblem(ChunkId ChunkId, IReadOnlyList<string> BackupIds, string Reason, string? MovedTo = null)
{
    /// <summary>A corrupt chunk verify could not set aside because object lock keeps it until then (MovedTo is null).</summary>
    public DateTimeOffset? LockedUntil { get; init; }
}

/// <summary>
/// The readable backups, oldest first (the list itself), and the manifests that could not be read, with why
/// (<see cref="Unreadable"/>, sorted by id). Unreadable manifests are reported, never deleted.
/// </summary>
public sealed class BackupListing(List<BackupSummary> backups, List<ManifestProblem> unreadable) : IReadOnlyList<BackupSummary>
{
    private readonly List<BackupSummary> _backups = backups;

    public IReadOnlyList<ManifestProblem> Unreadable { get; } = [.. unreadable.OrderBy(m => m.BackupId, StringComparer.Ordinal)];

    public BackupSummary this[int index] => _backups[index];
    public int Count => _backups.Count;
    public IEnumerator<BackupSummary> GetEnumerator() => _backups.GetEnumerator();
    System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
}
