using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using Haven.Storage;

namespace Haven.Repository.Tests;

/// <summary>Passes everything to an inner store and counts ListAsync calls per prefix, and reads per first key segment.</summary>
public sealed class CountingStore(IObjectStore inner) : IObjectStore
{
    private readonly ConcurrentDictionary<string, int> _lists = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, int> _reads = new(StringComparer.Ordinal);

    /// <summary>Get and Read calls of keys in folder <paramref name="folder"/> (e.g. "indexes").</summary>
    public int Reads(string folder) => _reads.TryGetValue(folder, out var n) ? n : 0;

    private void CountRead(string key) => _reads.AddOrUpdate(key.Split('/')[0], 1, (_, n) => n + 1);

    public IObjectStore Inner => inner;

    public int Lists(string prefix) => _lists.TryGetValue(prefix, out var n) ? n : 0;

    public void Reset()
    {
        _lists.Clear();
        _reads.Clear();
    }

    public Task<bool> TryCreateAsync(string key, ReadOnlyMemory<byte> data, CancellationToken ct = default) => inner.TryCreateAsync(key, data, ct);
    public Task PutAsync(string key, ReadOnlyMemory<byte> data, CancellationToken ct = default) => inner.PutAsync(key, data, ct);
    public Task<byte[]?> GetAsync(string key, CancellationToken ct = default)
    {
        CountRead(key);
        return inner.GetAsync(key, ct);
    }

    public Task<int> ReadAsync(string key, Memory<byte> into, CancellationToken ct = default)
    {
        CountRead(key);
        return inner.ReadAsync(key, into, ct);
    }

    public Task<bool> DeleteAsync(string key, CancellationToken ct = default) => inner.DeleteAsync(key, ct);
    public Task<ObjectInfo?> StatAsync(string key, CancellationToken ct = default) => inner.StatAsync(key, ct);

    public IAsyncEnumerable<ObjectInfo> ListAsync(string prefix, CancellationToken ct = default)
    {
        _lists.AddOrUpdate(prefix, 1, (_, n) => n + 1);
        return inner.ListAsync(prefix, ct);
    }

    public override string ToString() => inner.ToString() ?? nameof(CountingStore);
}

/// <summary>
/// An in-memory object-lock store that enforces retention the way S3 Object Lock does: an object whose
/// retain-until is in the future (by <paramref name="clock"/>) cannot be deleted or overwritten, in either
/// mode (no bypass header here); retention is never shortened.
/// </summary>
public sealed class FakeLockStore(TimeProvider clock, bool lockEnabled = true) : IObjectLockStore
{
    private sealed record Entry(byte[] Data, DateTimeOffset LastModified, ObjectRetention? Retention);

    private readonly Dictionary<string, Entry> _objects = new(StringComparer.Ordinal);
    private int _extends, _lockedDeletes;

    public int Extends => Volatile.Read(ref _extends);
    public int LockedDeletes => Volatile.Read(ref _lockedDeletes);
    public bool Empty { get { lock (_objects) return _objects.Count == 0; } }

    public ObjectRetention? RetentionOf(string key) { lock (_objects) return _objects.TryGetValue(key, out var e) ? e.Retention : null; }
    public IReadOnlyList<string> Keys(string prefix) { lock (_objects) return [.. _objects.Keys.Where(k => k.StartsWith(prefix, StringComparison.Ordinal))]; }

    /// <summary>Bypasses everything (a test's hand): replaces an object's bytes keeping its retention.</summary>
    public void Tamper(string key, Func<byte[], byte[]> change) { lock (_objects) _objects[key] = _objects[key] with { Data = change(_objects[key].Data) }; }

    public Task<bool> IsObjectLockEnabledAsync(CancellationToken ct = default) => Task.FromResult(lockEnabled);

    public Task<bool> TryCreateAsync(string key, ReadOnlyMemory<byte> data, CancellationToken ct = default) => Create(key, data, null);

    public Task<bool> TryCreateAsync(string key, ReadOnlyMemory<byte> data, ObjectRetention retention, CancellationToken ct = default)
    {
        if (!lockEnabled) throw new StoreException("object lock is not enabled on this bucket");
        if (retention.RetainUntil <= clock.GetUtcNow()) throw new StoreException("retain-until must be in the future");
        return Create(key, data, retention);
    }

    private Task<bool> Create(string key, ReadOnlyMemory<byte> data, ObjectRetention? retention)
    {
        ObjectKey.Validate(key);
        lock (_objects)
        {
            if (_objects.ContainsKey(key)) return Task.FromResult(false);
            _objects[key] = new Entry(data.ToArray(), clock.GetUtcNow(), retention);
            return Task.FromResult(true);
        }
    }

    public Task PutAsync(string key, ReadOnlyMemory<byte> data, CancellationToken ct = default)
    {
        ObjectKey.Validate(key);
        lock (_objects)
        {
            if (_objects.TryGetValue(key, out var old)) ThrowIfLocked(key, old);
            _objects[key] = new Entry(data.ToArray(), clock.GetUtcNow(), null);
        }
        return Task.CompletedTask;
    }

    public Task<byte[]?> GetAsync(string key, CancellationToken ct = default)
    {
        lock (_objects) return Task.FromResult(_objects.TryGetValue(key, out var e) ? (byte[]?)e.Data.ToArray() : null);
    }

    public Task<bool> DeleteAsync(string key, CancellationToken ct = default)
    {
        lock (_objects)
        {
            if (!_objects.TryGetValue(key, out var e)) return Task.FromResult(false);
            ThrowIfLocked(key, e);
            return Task.FromResult(_objects.Remove(key));
        }
    }

    private void ThrowIfLocked(string key, Entry e)
    {
        if (e.Retention is { } r && r.RetainUntil > clock.GetUtcNow())
        {
            Interlocked.Increment(ref _lockedDeletes);
            throw new ObjectLockedException(key, r.RetainUntil);
        }
    }

    public async IAsyncEnumerable<ObjectInfo> ListAsync(string prefix, [EnumeratorCancellation] CancellationToken ct = default)
    {
        List<ObjectInfo> list;
        lock (_objects) list = [.. _objects.Where(o => o.Key.StartsWith(prefix, StringComparison.Ordinal)).Select(o => new ObjectInfo(o.Key, o.Value.Data.Length, o.Value.LastModified))];
        foreach (var o in list)
        {
            await Task.Yield();
            yield return o;
        }
    }

    public Task<ObjectInfo?> StatAsync(string key, CancellationToken ct = default)
    {
        lock (_objects) return Task.FromResult(_objects.TryGetValue(key, out var e) ? new ObjectInfo(key, e.Data.Length, e.LastModified) : null);
    }

    public Task ExtendRetentionAsync(string key, ObjectRetention retention, CancellationToken ct = default)
    {
        lock (_objects)
        {
            if (!_objects.TryGetValue(key, out var e)) throw new StoreException($"object {key} does not exist");
            Interlocked.Increment(ref _extends);
            if (e.Retention is { } r && r.RetainUntil >= retention.RetainUntil) return Task.CompletedTask;
            _objects[key] = e with { Retention = retention };
        }
        return Task.CompletedTask;
    }

    public Task<ObjectRetention?> GetRetentionAsync(string key, CancellationToken ct = default)
    {
        lock (_objects) return Task.FromResult(_objects.TryGetValue(key, out var e) ? e.Retention : null);
    }

    public override string ToString() => "memory://lock-store";
}
