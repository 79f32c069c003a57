using Haven.Storage;

namespace Haven.Repository;

/// <summary>Settings fixed when a repository is created; all are stored in its config.</summary>
public sealed record RepositoryOptions
{
    public const int DefaultChunkSize = 1 << 20;
    public const int MinChunkSize = 64 << 10;
    public const int MaxChunkSize = 16 << 20;

    /// <summary>Fixed chunk size in bytes: a power of two from 64 KiB to 16 MiB.</summary>
    public int ChunkSize { get; init; } = DefaultChunkSize;

    /// <summary>How the passphrase is stretched: Argon2id by default; tests use <see cref="RepositoryKdf.Cheapest"/>. Refused outside its bounds.</summary>
    public RepositoryKdf Kdf { get; init; } = RepositoryKdf.Default;

    /// <summary>Unreferenced chunks younger than this (before the oldest live writer's start) are kept by GC.</summary>
    public TimeSpan GcGracePeriod { get; init; } = TimeSpan.FromHours(1);

    /// <summary>A lock not refreshed for this long is stale: its holder is presumed dead.</summary>
    public TimeSpan LockStaleAfter { get; init; } = TimeSpan.FromMinutes(30);

    /// <summary>
    /// Write-once retention for manifests and chunks (S3 Object Lock); null = none. Needs a store that is an
    /// <see cref="IObjectLockStore"/> with object lock enabled. Rules: docs/repository-format.md, "Immutability".
    /// </summary>
    public RepositoryImmutability? Immutability { get; init; }

    /// <summary>
    /// Format version of the new repository: 2. Version 1 exists only so tests can make the older layout that
    /// <c>repo upgrade</c> converts (a version-1 repository is read-only).
    /// </summary>
    internal int FormatVersion { get; init; } = RepositoryConfig.CurrentVersion;

    internal void Validate()
    {
        if (FormatVersion is < 1 or > RepositoryConfig.CurrentVersion)
            throw new ArgumentOutOfRangeException(nameof(FormatVersion), FormatVersion, "unknown repository format version");
        if (ChunkSize < MinChunkSize || ChunkSize > MaxChunkSize || (ChunkSize & (ChunkSize - 1)) != 0)
            throw new ArgumentOutOfRangeException(nameof(ChunkSize), ChunkSize, "chunk size must be a power of two from 64 KiB to 16 MiB");
        ArgumentNullException.ThrowIfNull(Kdf);
        Kdf.Validate();
        if (GcGracePeriod < TimeSpan.Zero || GcGracePeriod.TotalSeconds % 1 != 0)
            throw new ArgumentOutOfRangeException(nameof(GcGracePeriod), GcGracePeriod, "grace period must be whole seconds, not negative");
        if (LockStaleAfter < TimeSpan.FromSeconds(1) || LockStaleAfter.TotalSeconds % 1 != 0)
            throw new ArgumentOutOfRangeException(nameof(LockStaleAfter), LockStaleAfter, "lock staleness must be whole seconds, at least 1");
        Immutability?.Validate();
    }
}

/// <summary>
/// Every backup is locked (mode <see cref="Mode"/>) for <see cref="Days"/> days after it is committed, and
/// every chunk it references at least as long.
/// </summary>
public sealed record RepositoryImmutability
{
    public const int MaxDays = 36500;

    /// <summary>Governance (a privileged user can lift it) or compliance (no one can).</summary>
    public required RetentionMode Mode { get; init; }

    /// <summary>How long each backup stays locked after it is committed: 1..36500 days.</summary>
    public required int Days { get; init; }

    /// <summary>
    /// Extra retention given to chunks (max(1 day, Days/4)) so that a chunk reused by later backups needs
    /// its retention extended at most once per slack period.
    /// </summary>
    public TimeSpan Slack => TimeSpan.FromDays(Math.Max(1.0, Days / 4.0));

    /// <summary>Retain-until of a manifest committed at <paramref name="now"/>: now + Days, whole seconds rounded up.</summary>
    internal long ManifestRetainUntil(DateTimeOffset now) => CeilSeconds(now + TimeSpan.FromDays(Days));

    /// <summary>Retain-until given to a chunk created or extended at <paramref name="now"/>: now + Days + Slack, whole seconds rounded up.</summary>
    internal long ChunkRetainUntil(DateTimeOffset now) => CeilSeconds(now + TimeSpan.FromDays(Days) + Slack);

    internal ObjectRetention Retention(long unixSeconds) => new(Mode, DateTimeOffset.FromUnixTimeSeconds(unixSeconds));

    private static long CeilSeconds(DateTimeOffset t)
    {
        var s = t.ToUnixTimeSeconds();
        return DateTimeOffset.FromUnixTimeSeconds(s) < t ? s + 1 : s;
    }

    internal void Validate()
    {
        if (!Enum.IsDefined(Mode)) throw new ArgumentOutOfRangeException(nameof(Mode), Mode, "unknown retention mode");
        if (Days < 1 || Days > MaxDays) throw new ArgumentOutOfRangeException(nameof(Days), Days, $"immutability days must be 1..{MaxDays}");
    }
}
