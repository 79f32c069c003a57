namespace Haven.Storage;

/// <summary>
/// A flat store of immutable named objects: the only thing the backup repository needs from a backend
/// (local directory today, S3 later). Contract every implementation must meet (tests/Haven.Storage.Tests
/// checks it):
/// <list type="bullet">
/// <item>Keys are checked by <see cref="ObjectKey.Validate"/> before any I/O; a bad key throws
///   <see cref="InvalidObjectKeyException"/>.</item>
/// <item>Writes are atomic: a reader sees the whole old object, the whole new one, or none — never a part.
///   A write that fails (including <see cref="StoreFullException"/>) leaves no object and no visible debris.</item>
/// <item>A completed write is durable: after the returned task completes, the object survives a crash of the
///   writer and of the machine holding the store.</item>
/// <item>Operations on one key are linearizable: once a write, create or delete has completed, every later
///   call (from any process or host) observes it, including <see cref="ListAsync"/>. The repository's
///   concurrency rules (docs/repository-format.md) depend on this.</item>
/// <item>Objects are whole values; there is no append or partial update.</item>
/// </list>
/// </summary>
public interface IObjectStore
{
    /// <summary>
    /// Creates <paramref name="key"/> only if it does not exist. Returns false, leaving the existing object
    /// untouched, when it does. Of several concurrent creators of one key exactly one gets true, and the
    /// stored object is that creator's data, whole.
    /// </summary>
    Task<bool> TryCreateAsync(string key, ReadOnlyMemory<byte> data, CancellationToken ct = default);

    /// <summary>
    /// Creates or replaces <paramref name="key"/> atomically. Meant for small mutable objects (locks,
    /// markers); content-addressed and write-once objects use <see cref="TryCreateAsync"/>.
    /// </summary>
    Task PutAsync(string key, ReadOnlyMemory<byte> data, CancellationToken ct = default);

    /// <summary>The whole object, or null if it does not exist.</summary>
    Task<byte[]?> GetAsync(string key, CancellationToken ct = default);

    /// <summary>
    /// Reads the object into <paramref name="into"/> without allocating. Returns the object's total length,
    /// or -1 if it does not exist. When the object is longer than the buffer, only the first
    /// <c>into.Length</c> bytes are copied and the caller sees the larger length.
    /// </summary>
    async Task<int> ReadAsync(string key, Memory<byte> into, CancellationToken ct = default)
    {
        var data = await GetAsync(key, ct);
        if (data is null) return -1;
        data.AsSpan(0, Math.Min(data.Length, into.Length)).CopyTo(into.Span);
        return data.Length;
    }

    /// <summary>Deletes the object; true if it existed. Deleting a missing key is not an error.</summary>
    Task<bool> DeleteAsync(string key, CancellationToken ct = default);

    /// <summary>
    /// Every object whose key starts with <paramref name="prefix"/> ("" for all), in no particular order.
    /// Objects created or deleted while the listing runs may or may not appear.
    /// </summary>
    IAsyncEnumerable<ObjectInfo> ListAsync(string prefix, CancellationToken ct = default);

    /// <summary>Size and modification time of one object, or null if it does not exist.</summary>
    Task<ObjectInfo?> StatAsync(string key, CancellationToken ct = default);

    /// <summary>
    /// Starts a batch of create-only writes made durable together by <see cref="IObjectBatch.FlushAsync"/>
    /// (one sync for many objects instead of one or two per object). Stores that are durable per write
    /// (S3) need nothing more than this default, whose creates are plain <see cref="TryCreateAsync"/> calls
    /// and whose flush does nothing.
    /// </summary>
    IObjectBatch BeginBatch() => new PerWriteBatch(this);
}

/// <summary>
/// Create-only writes of content-addressed objects (two creates of one key carry equivalent data) whose
/// durability is deferred. Contract (tests/Haven.Storage.Tests checks it):
/// <list type="bullet">
/// <item><see cref="TryCreateAsync"/> returns false when the key already exists (the object is left untouched),
///   true when this batch will create it.</item>
/// <item>Until <see cref="FlushAsync"/> completes, a staged object may or may not be visible, but a visible one
///   is always whole and durable: no reader, and no create-only writer after a crash or power loss, ever sees a
///   key whose bytes are not on stable storage.</item>
/// <item>After <see cref="FlushAsync"/> completes, every object this batch staged exists, whole and durable
///   (holding this batch's data, or that of another creator that published the key first).</item>
/// <item>Disposing without a flush drops what is not yet published and leaves no debris a listing shows.</item>
/// </list>
/// </summary>
public interface IObjectBatch : IAsyncDisposable
{
    Task<bool> TryCreateAsync(string key, ReadOnlyMemory<byte> data, CancellationToken ct = default);

    Task FlushAsync(CancellationToken ct = default);
}

/// <summary>The batch of a store whose every write is already durable: pass-through creates, nothing to flush.</summary>
internal sealed class PerWriteBatch(IObjectStore store) : IObjectBatch
{
    public Task<bool> TryCreateAsync(string key, ReadOnlyMemory<byte> data, CancellationToken ct = default) => store.TryCreateAsync(key, data, ct);

    public Task FlushAsync(CancellationToken ct = default) => Task.CompletedTask;

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}

/// <summary>
/// One stored object. <see cref="LastModified"/> is the time the object was written, by the store's clock;
/// garbage collection compares it with writers' start times, so the store's clock and the hosts' clocks
/// must agree within the repository's grace period.
/// </summary>
public sealed record ObjectInfo(string Key, long Size, DateTimeOffset LastModified);
