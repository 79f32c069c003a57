using System.Text.Json;
using Microsoft.Extensions.Logging;

namespace Haven.Repository;

/// <summary>
/// A lock object (plain JSON, no secrets): a backup writer's shared lock at <c>locks/writer-&lt;id&gt;</c>,
/// a reader's lock on the backups it serves at <c>locks/reader-&lt;id&gt;</c> (prune keeps those backups),
/// or the exclusive lock of prune/GC/verify at <c>locks/exclusive</c>. Holders refresh it every few
/// minutes; one not refreshed for the repository's LockStaleAfter is stale and ignored.
/// </summary>
internal sealed record LockRecord
{
    public const string Shared = "shared";
    public const string Exclusive = "exclusive";

    public required string Kind { get; init; }
    /// <summary>Random id of the holder; the exclusive lock's owner checks it before acting.</summary>
    public required string OwnerId { get; init; }
    /// <summary>"backup" (shared), "gc", "prune" or "verify" (exclusive).</summary>
    public required string Operation { get; init; }
    public required string Host { get; init; }
    public required int Pid { get; init; }
    public required DateTimeOffset StartedAt { get; init; }
    public required DateTimeOffset RefreshedAt { get; init; }
    /// <summary>Exclusive only: set before the holder deletes or renames its first chunk.</summary>
    public bool Deleting { get; init; }
    /// <summary>Reader only: the backups it reads (prune keeps them while the lock is live).</summary>
    public List<string>? Backups { get; init; }

    public byte[] ToJson() => JsonSerializer.SerializeToUtf8Bytes(this, RepositoryJson.Indented);

    public static LockRecord? TryParse(byte[]? json)
    {
        if (json is null) return null;
        try { return JsonSerializer.Deserialize<LockRecord>(json, RepositoryJson.Options); }
        catch (JsonException) { return null; }
    }

    public override string ToString() => $"{Operation} on {Host} (pid {Pid}) since {StartedAt:yyyy-MM-dd HH:mm:ss}Z";
}

/// <summary>The <c>chunk-epoch</c> object: bumped by every operation before it deletes or renames a chunk.</summary>
internal sealed record ChunkEpoch
{
    public required long Epoch { get; init; }
    public required string Operation { get; init; }
    public required DateTimeOffset At { get; init; }
}

/// <summary>
/// A held lock object and its refresh loop. Refreshing rewrites the object with a new RefreshedAt; for the
/// exclusive lock it first checks that the object still names this owner, and if not marks the lock lost
/// so the holder stops before its next destructive step.
/// </summary>
internal sealed class HeldLock : IAsyncDisposable
{
    public static readonly TimeSpan RefreshInterval = TimeSpan.FromMinutes(5);

    private readonly Repository _repo;
    private readonly CancellationTokenSource _stop = new();
    // Serialises rewrites: a periodic refresh must not write back a record older than BeginDeleting's.
    private readonly SemaphoreSlim _gate = new(1, 1);
    private LockRecord _record;
    private Task? _loop;
    private int _released;

    private HeldLock(Repository repo, string key, LockRecord record)
    {
        _repo = repo;
        Key = key;
        _record = record;
        LastRefreshed = record.RefreshedAt;
    }

    public string Key { get; }
    public LockRecord Record => _record;
    public DateTimeOffset LastRefreshed { get; private set; }
    public bool Lost { get; private set; }
    private bool _lapsedBefore;

    /// <summary>
    /// True when the lock is, or at some point was, unrefreshed longer than the staleness limit: others may
    /// have ignored it then (sticky, since a late refresh does not undo what happened meanwhile).
    /// </summary>
    public bool Lapsed => Lost || _lapsedBefore || _repo.Clock.GetUtcNow() - LastRefreshed > _repo.LockStaleAfter;

    private static LockRecord NewRecord(Repository repo, string kind, string operation, string host)
    {
        var now = repo.Clock.GetUtcNow();
        return new LockRecord
        {
            Kind = kind,
            OwnerId = Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(16)),
            Operation = operation,
            Host = host,
            Pid = Environment.ProcessId,
            StartedAt = now,
            RefreshedAt = now,
        };
    }

    public static async Task<HeldLock> AcquireSharedAsync(Repository repo, string host, CancellationToken ct)
    {
        var record = NewRecord(repo, LockRecord.Shared, "backup", host);
        var key = RepoKeys.WriterLockPrefix + record.OwnerId;
        if (!await repo.Store.TryCreateAsync(key, record.ToJson(), ct))
            throw new RepositoryLockedException($"writer lock {key} already exists");
        return new HeldLock(repo, key, record).Start();
    }

    /// <summary>
    /// A reader's lock on <paramref name="backups"/>. Written first, then the exclusive lock is checked: a prune that
    /// took it earlier may be deleting these backups now (refused), and one that takes it later reads this lock
    /// before it deletes anything.
    /// </summary>
    public static async Task<HeldLock> AcquireReaderAsync(Repository repo, string host, string operation, IReadOnlyList<string> backups, CancellationToken ct)
    {
        var record = NewRecord(repo, LockRecord.Shared, operation, host) with { Backups = [.. backups] };
        var key = RepoKeys.ReaderLockPrefix + record.OwnerId;
        if (!await repo.Store.TryCreateAsync(key, record.ToJson(), ct))
            throw new RepositoryLockedException($"reader lock {key} already exists");
        var held = new HeldLock(repo, key, record);
        var (live, other) = await repo.ReadExclusiveLockAsync(ct);
        if (live && other?.Operation is null or "prune")
        {
            await repo.Store.DeleteAsync(key, ct);
            throw new RepositoryLockedException($"repository is locked by {other?.ToString() ?? "an unreadable exclusive lock"}; cannot {operation} until it ends");
        }
        return held.Start();
    }

    /// <summary>Takes <c>locks/exclusive</c>, replacing it only when stale; refuses while another holder is live.</summary>
    public static async Task<HeldLock> AcquireExclusiveAsync(Repository repo, string operation, CancellationToken ct)
    {
        var record = NewRecord(repo, LockRecord.Exclusive, operation, Environment.MachineName);
        var json = record.ToJson();
        for (var attempt = 0; attempt < 3; attempt++)
        {
            if (await repo.Store.TryCreateAsync(RepoKeys.ExclusiveLock, json, ct))
                return new HeldLock(repo, RepoKeys.ExclusiveLock, record).Start();
            var seen = await repo.Store.GetAsync(RepoKeys.ExclusiveLock, ct);
            if (seen is null) continue; // released meanwhile
            var other = LockRecord.TryParse(seen);
            if (!await repo.IsStaleAsync(RepoKeys.ExclusiveLock, other, ct))
                throw new RepositoryLockedException($"repository is locked by {other?.ToString() ?? "an unreadable exclusive lock"}; cannot {operation}");
            // Stale: remove exactly the lock we judged, not one a competitor may have just taken.
            var again = await repo.Store.GetAsync(RepoKeys.ExclusiveLock, ct);
            if (again is not null && again.AsSpan().SequenceEqual(seen)) await repo.Store.DeleteAsync(RepoKeys.ExclusiveLock, ct);
        }
        throw new RepositoryLockedException($"could not take the exclusive lock for {operation}: other processes compete for it");
    }

    private HeldLock Start()
    {
        _loop = Task.Run(RefreshLoopAsync, CancellationToken.None);
        return this;
    }

    private async Task RefreshLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(RefreshInterval, _repo.Clock, _stop.Token);
                await RefreshAsync(_stop.Token);
            }
            catch (OperationCanceledException) { return; }
            catch (Exception) when (!_stop.IsCancellationRequested)
            {
                // A store hiccup: try again next round. Lapsed tells users of the lock if it went stale.
            }
        }
    }

    /// <summary>Rewrites the lock with a fresh RefreshedAt (and any change in <paramref name="update"/>).</summary>
    public async Task RefreshAsync(CancellationToken ct, Func<LockRecord, LockRecord>? update = null)
    {
        await _gate.WaitAsync(ct);
        try
        {
            await EnsureHeldAsync(ct);
            var now = _repo.Clock.GetUtcNow();
            if (now - LastRefreshed > _repo.LockStaleAfter) _lapsedBefore = true;
            var record = _record with { RefreshedAt = now };
            if (update is not null) record = update(record);
            await _repo.Store.PutAsync(Key, record.ToJson(), ct);
            _record = record;
            LastRefreshed = now;
        }
        finally { _gate.Release(); }
    }

    /// <summary>For the exclusive lock: throws <see cref="RepositoryLockedException"/> if another process took it over.</summary>
    public async Task EnsureHeldAsync(CancellationToken ct)
    {
        if (_record.Kind != LockRecord.Exclusive) return;
        if (!Lost)
        {
            var current = LockRecord.TryParse(await _repo.Store.GetAsync(Key, ct));
            if (current?.OwnerId == _record.OwnerId) return;
            Lost = true;
        }
        throw new RepositoryLockedException($"the exclusive lock for {_record.Operation} was taken over by another process; stopped");
    }

    /// <summary>Cheap in-memory check between destructive steps; the refresh loop sets <see cref="Lost"/>.</summary>
    public void ThrowIfLost()
    {
        if (Lost) throw new RepositoryLockedException($"the exclusive lock for {_record.Operation} was taken over by another process; stopped");
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _released, 1) == 1) return;
        _stop.Cancel();
        if (_loop is not null) await _loop.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        _stop.Dispose();
        await _gate.WaitAsync(CancellationToken.None);
        try
        {
            if (_record.Kind == LockRecord.Exclusive)
            {
                var current = LockRecord.TryParse(await _repo.Store.GetAsync(Key, CancellationToken.None));
                if (current?.OwnerId != _record.OwnerId) return; // not ours any more: leave the new holder's lock alone
            }
            await _repo.Store.DeleteAsync(Key, CancellationToken.None);
        }
        catch (Exception e) when (e is Haven.Storage.StoreException or IOException)
        {
            // Release is best effort: a lock left behind goes stale and is then ignored and cleaned up.
            _repo.Log.LogWarning(e, "cleanup failed: release repository lock {Key}: {Error}", Key, e.Message);
        }
        finally { _gate.Release(); }
    }
}
