namespace Haven.Storage;

/// <summary>
/// An optional capability of a store: write-once retention (S3 Object Lock). An object created with a
/// retention cannot be deleted or overwritten by anyone holding ordinary credentials until
/// <see cref="ObjectRetention.RetainUntil"/>; deleting it throws <see cref="ObjectLockedException"/> and
/// leaves it whole. The repository uses it for manifests and chunks so that a compromised host cannot
/// destroy backups (docs/storage-backends.md, "Immutability").
/// </summary>
public interface IObjectLockStore : IObjectStore
{
    /// <summary>True when the bucket (or equivalent) has object lock enabled, so retentions can be set.</summary>
    Task<bool> IsObjectLockEnabledAsync(CancellationToken ct = default);

    /// <summary>
    /// <see cref="IObjectStore.TryCreateAsync"/> that also sets <paramref name="retention"/> on the new
    /// object in the same request. An existing object is left untouched (its retention too).
    /// </summary>
    Task<bool> TryCreateAsync(string key, ReadOnlyMemory<byte> data, ObjectRetention retention, CancellationToken ct = default);

    /// <summary>
    /// Moves the object's retention out to <paramref name="retention"/>; never shortens it (a later
    /// retain-until already set is kept). Throws <see cref="StoreException"/> if the object is missing.
    /// </summary>
    Task ExtendRetentionAsync(string key, ObjectRetention retention, CancellationToken ct = default);

    /// <summary>The object's retention, or null when it has none or does not exist.</summary>
    Task<ObjectRetention?> GetRetentionAsync(string key, CancellationToken ct = default);
}

/// <summary>S3 Object Lock modes: governance can be lifted by a specially privileged user; compliance by no one.</summary>
public enum RetentionMode
{
    Governance,
    Compliance,
}

public sealed record ObjectRetention(RetentionMode Mode, DateTimeOffset RetainUntil);
