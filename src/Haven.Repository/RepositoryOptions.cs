namespace Haven.Repository;

/// <summary>Settings fixed when a repository is created; all are stored in its config.</summary>
public sealed record RepositoryOptions
{
    public const int DefaultChunkSize = 1 << 20;
    public const int MinChunkSize = 64 << 10;
    public const int MaxChunkSize = 16 << 20;
    public const int DefaultKdfIterations = 600_000;

    /// <summary>Fixed chunk size in bytes: a power of two from 64 KiB to 16 MiB.</summary>
    public int ChunkSize { get; init; } = DefaultChunkSize;

    /// <summary>PBKDF2-HMAC-SHA256 iterations for the passphrase. Tests use small values; production keeps the default.</summary>
    public int KdfIterations { get; init; } = DefaultKdfIterations;

    /// <summary>Unreferenced chunks younger than this (before the oldest live writer's start) are kept by GC.</summary>
    public TimeSpan GcGracePeriod { get; init; } = TimeSpan.FromHours(1);

    /// <summary>A lock not refreshed for this long is stale: its holder is presumed dead.</summary>
    public TimeSpan LockStaleAfter { get; init; } = TimeSpan.FromMinutes(30);

    internal void Validate()
    {
        if (ChunkSize < MinChunkSize || ChunkSize > MaxChunkSize || (ChunkSize & (ChunkSize - 1)) != 0)
            throw new ArgumentOutOfRangeException(nameof(ChunkSize), ChunkSize, "chunk size must be a power of two from 64 KiB to 16 MiB");
        if (KdfIterations < 1 || KdfIterations > RepositoryConfig.MaxKdfIterations)
            throw new ArgumentOutOfRangeException(nameof(KdfIterations), KdfIterations, $"KDF iterations must be 1..{RepositoryConfig.MaxKdfIterations}");
        if (GcGracePeriod < TimeSpan.Zero || GcGracePeriod.TotalSeconds % 1 != 0)
            throw new ArgumentOutOfRangeException(nameof(GcGracePeriod), GcGracePeriod, "grace period must be whole seconds, not negative");
        if (LockStaleAfter < TimeSpan.FromSeconds(1) || LockStaleAfter.TotalSeconds % 1 != 0)
            throw new ArgumentOutOfRangeException(nameof(LockStaleAfter), LockStaleAfter, "lock staleness must be whole seconds, at least 1");
    }
}
