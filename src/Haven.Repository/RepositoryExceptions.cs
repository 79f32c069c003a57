namespace Haven.Repository;

/// <summary>Base of the repository's typed failures; every message is one line meant for the user.</summary>
public abstract class RepositoryException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>The store holds no repository (no <c>config</c> object), or its config is not a Haven repository config.</summary>
public sealed class NotARepositoryException(string message, Exception? inner = null) : RepositoryException(message, inner);

/// <summary>InitAsync found a repository already there; nothing was changed.</summary>
public sealed class RepositoryExistsException(string location) : RepositoryException($"{location} already holds a Haven repository");

/// <summary>The repository was written by a newer format version than this code understands.</summary>
public sealed class UnsupportedFormatException(string message) : RepositoryException(message);

/// <summary>The passphrase did not unwrap the master key (AES-GCM tag mismatch).</summary>
public sealed class WrongPassphraseException(string repositoryId)
    : RepositoryException($"wrong passphrase for repository {repositoryId} (or its config object was altered)")
{
    public string RepositoryId { get; } = repositoryId;
}

/// <summary>A chunk failed authentication, decompression or the id check: its bytes are not the data its id names.</summary>
public sealed class CorruptChunkException(ChunkId chunkId, string reason)
    : RepositoryException($"chunk {chunkId} is corrupt: {reason}")
{
    public ChunkId ChunkId { get; } = chunkId;
    public string Reason { get; } = reason;
}

/// <summary>A referenced chunk is not in the store.</summary>
public sealed class MissingChunkException(ChunkId chunkId)
    : RepositoryException($"chunk {chunkId} is missing from the repository")
{
    public ChunkId ChunkId { get; } = chunkId;
}

/// <summary>A manifest failed authentication (truncated, edited, swapped) or holds inconsistent content.</summary>
public sealed class CorruptManifestException(string backupId, string reason)
    : RepositoryException($"manifest of backup {backupId} is corrupt: {reason}")
{
    public string BackupId { get; } = backupId;
    public string Reason { get; } = reason;
}

/// <summary>No backup with that id (or the id is not a well-formed backup id).</summary>
public sealed class BackupNotFoundException(string backupId)
    : RepositoryException($"no backup {backupId} in the repository")
{
    public string BackupId { get; } = backupId;
}

/// <summary>Another process holds the exclusive lock (prune, GC, verify), or this one lost it.</summary>
public sealed class RepositoryLockedException(string message) : RepositoryException(message);

/// <summary>
/// CommitAsync found that chunks the manifest references are not in the store: a concurrent GC or verify
/// deleted them (they were unreferenced or corrupt when this writer started), or they were never stored.
/// The manifest was not kept. The writer has forgotten these ids, so putting their data again stores them;
/// then commit again.
/// </summary>
public sealed class ChunksMissingException(IReadOnlyList<ChunkId> chunkIds)
    : RepositoryException($"{chunkIds.Count} chunk(s) the backup references are not in the repository (first {chunkIds[0]}); store them again and commit again")
{
    public IReadOnlyList<ChunkId> ChunkIds { get; } = chunkIds;
}

/// <summary>
/// The repository asks for immutability (object lock) and the store cannot provide it: it is not an
/// object-lock capable store, or object lock is not enabled on its bucket. Nothing was written.
/// </summary>
public sealed class ImmutabilityUnsupportedException(string message) : RepositoryException(message);

/// <summary>Two repositories cannot exchange backups (e.g. their chunk sizes differ).</summary>
public sealed class RepositoryFormatMismatchException(string message) : RepositoryException(message);

/// <summary>A version-1 repository is read-only: backup, prune and GC into it are refused until <c>haven repo upgrade</c>.</summary>
public sealed class RepositoryReadOnlyException(string message) : RepositoryException(message);

/// <summary><see cref="Repository.UpgradeAsync"/> cannot convert the repository (an unreadable manifest); nothing was changed.</summary>
public sealed class UpgradeRefusedException(string message) : RepositoryException(message);
