namespace Haven.Api;

/// <summary>POST /v1/mounts: serve one disk of a backup as a read-only NBD export (docs/backup.md "Mounting a backup").</summary>
public sealed record BackupMountRequest : RepositoryRef
{
    public required string BackupId { get; init; }
    /// <summary>Index of the disk in the backup (0 for the first).</summary>
    public int Disk { get; init; }
}

/// <summary>A backup disk havend serves over NBD until it is unmounted or havend stops.</summary>
public sealed record MountInfo
{
    /// <summary>Handle for unmount.</summary>
    public required string Id { get; init; }
    public required string BackupId { get; init; }
    public required string Vm { get; init; }
    public required int Disk { get; init; }
    /// <summary>The disk's name in the backup, also the NBD export name.</summary>
    public required string Export { get; init; }
    public required long SizeBytes { get; init; }
    /// <summary>The unix socket (0600) the export is served on.</summary>
    public required string Socket { get; init; }
    /// <summary>The NBD URI for qemu-img, nbdinfo, nbdfuse, guestfish...: nbd+unix:///EXPORT?socket=SOCKET.</summary>
    public required string Uri { get; init; }
    public required DateTimeOffset MountedAt { get; init; }
    public int Clients { get; init; }
    /// <summary>Chunks fetched from the repository so far, and their plaintext bytes.</summary>
    public long ChunksFetched { get; init; }
    public long BytesFetched { get; init; }
    /// <summary>Chunks the disk's index names: what reading all of it fetches at most.</summary>
    public long ChunksReferenced { get; init; }
}
