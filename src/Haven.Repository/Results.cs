namespace Haven.Repository;

/// <summary>What prune decided (and, unless DryRun, did): manifests removed; chunks are GC's business.</summary>
public sealed record PruneResult(bool DryRun, IReadOnlyList<KeptBackup> Kept, IReadOnlyList<BackupSummary> Removed);

/// <summary>A backup prune keeps, and the rules that keep it ("last", "daily", "oldest (weekly)", …).</summary>
public sealed record KeptBackup(BackupSummary Backup, IReadOnlyList<string> Reasons);

/// <summary>What a garbage collection found and deleted.</summary>
public sealed record GcResult
{
    /// <summary>Manifests read in the mark phase.</summary>
    public required int BackupsMarked { get; init; }
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
public sealed record ChunkProblem(ChunkId ChunkId, IReadOnlyList<string> BackupIds, string Reason, string? MovedTo = null);
