using System.Text.Json;
using System.Text.Json.Serialization;

namespace Haven.Repository;

/// <summary>
/// What one backup is: the VM it came from and, per disk, the ordered chunk index that rebuilds the disk.
/// Stored encrypted at <c>backups/&lt;id&gt;</c>; docs/repository-format.md has the JSON schema.
/// The caller fills it in and hands it to <see cref="BackupWriter.CommitAsync"/>, which sets
/// <see cref="Id"/> and <see cref="Stats"/>.
/// </summary>
public sealed record BackupManifest
{
    /// <summary>Version of the v1 manifest JSON (<c>backups/&lt;id&gt;</c>); format version 2 stores a summary and index objects instead.</summary>
    public const int CurrentVersion = 1;

    [JsonPropertyName("version")]
    public int FormatVersion { get; init; } = CurrentVersion;

    /// <summary>Assigned by CommitAsync (<c>yyyyMMdd-HHmmss-xxxxxxxx</c>, UTC); ignored on input.</summary>
    public string Id { get; init; } = "";

    public required string VmName { get; init; }

    /// <summary>The VM's definition as the caller describes it; the repository never looks inside.</summary>
    public JsonElement VmDefinition { get; init; }

    public string HostName { get; init; } = "";

    /// <summary>The backup's point in time; CommitAsync uses its clock when left default.</summary>
    public DateTimeOffset CreatedAt { get; init; }

    public string? ParentBackupId { get; init; }

    /// <summary>"full" or "incremental".</summary>
    public string Mode { get; init; } = "full";

    /// <summary>Why this mode (e.g. why a full backup was needed).</summary>
    public string? ModeReason { get; init; }

    /// <summary>Consistency level, e.g. "ApplicationConsistent" or "CrashConsistent".</summary>
    public string Consistency { get; init; } = "";

    /// <summary>Opaque description of the point in time (checkpoint, bitmaps); null when none.</summary>
    public JsonElement? Checkpoint { get; init; }

    public required List<DiskManifest> Disks { get; init; }

    /// <summary>Set on a backup made by <see cref="BackupCopy.CopyAsync"/>: the backup it is a copy of.</summary>
    public BackupOrigin? CopiedFrom { get; init; }

    /// <summary>Filled in by CommitAsync.</summary>
    public ManifestStats Stats { get; init; } = new();
}

/// <summary>Where a copied backup came from: the source repository's id and the backup's id there.</summary>
public sealed record BackupOrigin
{
    public required string RepositoryId { get; init; }
    public required string BackupId { get; init; }
    /// <summary>When the copy was committed.</summary>
    public DateTimeOffset CopiedAt { get; init; }
}

/// <summary>One disk: its size and fixed-size chunk index. Entry i covers bytes [i·ChunkSize, min((i+1)·ChunkSize, SizeBytes)).</summary>
public sealed record DiskManifest
{
    public required string Name { get; init; }
    public required long SizeBytes { get; init; }
    public required int ChunkSize { get; init; }

    /// <summary>One entry per chunk: the chunk's id, or null where the disk reads as zeros (never stored).</summary>
    public required ChunkId?[] Chunks { get; init; }

    public static long ChunkCount(long sizeBytes, int chunkSize) => (sizeBytes + chunkSize - 1) / chunkSize;
}

/// <summary>Numbers about one backup, computed by the writer at commit.</summary>
public sealed record ManifestStats
{
    /// <summary>Sum of the disks' sizes.</summary>
    public long SizeBytes { get; init; }
    /// <summary>Index entries that name a chunk.</summary>
    public long ChunksReferenced { get; init; }
    /// <summary>Index entries that are all-zero (null).</summary>
    public long ChunksZero { get; init; }
    /// <summary>Chunks this backup's writer stored (the rest were already in the repository).</summary>
    public long ChunksNew { get; init; }
    /// <summary>Plaintext bytes of those new chunks.</summary>
    public long BytesNew { get; init; }
    /// <summary>Bytes those new chunks take in the store (compressed, encrypted).</summary>
    public long StoredBytesNew { get; init; }
}

/// <summary>A line in the backup list.</summary>
public sealed record BackupSummary(
    string Id,
    string VmName,
    string HostName,
    DateTimeOffset CreatedAt,
    string Mode,
    string? ParentBackupId,
    string Consistency,
    int DiskCount,
    long SizeBytes,
    long StoredBytesNew);

/// <summary>
/// The summary object of format version 2 (<c>summaries/&lt;id&gt;</c>): everything about a backup but its chunk
/// indexes, which are separate objects it names (with their SHA-256). Listing and prune read only these.
/// </summary>
internal sealed record SummaryDocument
{
    public const int CurrentVersion = 2;

    public int Version { get; init; } = CurrentVersion;
    public required string Id { get; init; }
    public required string VmName { get; init; }
    public JsonElement VmDefinition { get; init; }
    public string HostName { get; init; } = "";
    public DateTimeOffset CreatedAt { get; init; }
    public string? ParentBackupId { get; init; }
    public string Mode { get; init; } = "full";
    public string? ModeReason { get; init; }
    public string Consistency { get; init; } = "";
    public JsonElement? Checkpoint { get; init; }
    public BackupOrigin? CopiedFrom { get; init; }
    public ManifestStats Stats { get; init; } = new();
    public required List<DiskSummary> Disks { get; init; }

    public static SummaryDocument Of(BackupManifest m, List<DiskSummary> disks) => new()
    {
        Id = m.Id, VmName = m.VmName, VmDefinition = m.VmDefinition, HostName = m.HostName, CreatedAt = m.CreatedAt,
        ParentBackupId = m.ParentBackupId, Mode = m.Mode, ModeReason = m.ModeReason, Consistency = m.Consistency,
        Checkpoint = m.Checkpoint, CopiedFrom = m.CopiedFrom, Stats = m.Stats, Disks = disks,
    };

    public BackupManifest ToManifest(List<DiskManifest> disks) => new()
    {
        FormatVersion = BackupManifest.CurrentVersion, Id = Id, VmName = VmName, VmDefinition = VmDefinition, HostName = HostName,
        CreatedAt = CreatedAt, ParentBackupId = ParentBackupId, Mode = Mode, ModeReason = ModeReason, Consistency = Consistency,
        Checkpoint = Checkpoint, CopiedFrom = CopiedFrom, Stats = Stats, Disks = disks,
    };

    public BackupSummary ToListing() => new(Id, VmName, HostName, CreatedAt, Mode, ParentBackupId, Consistency, Disks.Count, Stats.SizeBytes, Stats.StoredBytesNew);
}

/// <summary>One disk in a summary: its size and the index object that holds its chunk ids.</summary>
internal sealed record DiskSummary
{
    public required string Name { get; init; }
    public required long SizeBytes { get; init; }
    public required int ChunkSize { get; init; }
    /// <summary>Name of the index object (key <c>indexes/&lt;name&gt;</c>).</summary>
    public required string Index { get; init; }
    /// <summary>SHA-256 (hex) of the index object's whole plaintext: ties the summary to exactly that index.</summary>
    public required string IndexSha256 { get; init; }
}
