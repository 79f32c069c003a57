using System.Collections.Concurrent;
using System.Diagnostics;
using Haven.Api;
using Haven.Repository;
using Haven.Storage;
using Haven.Storage.S3;

namespace Haven.Host.Backups;

/// <summary>
/// Where repositories are opened: a location (a folder, or "s3://bucket/prefix") becomes a store, and the
/// store a <see cref="Repository.Repository"/> with this host's chunk-index cache. Also the repository
/// commands the daemon offers that need no VM: init, list, verify, prune, gc and copy.
/// </summary>
public sealed class RepositoryAccess(HavenHost host) : IDisposable
{
    // One S3 client per distinct location and settings, so connections are reused across requests.
    private readonly ConcurrentDictionary<(S3Location, S3Settings), S3ObjectStore> _s3Stores = new();

    /// <summary>This host's cache of which chunks each repository holds (docs/repository-format.md, "Chunk-index cache").</summary>
    public ChunkIndexCache ChunkCache { get; } = new(Path.Combine(host.Paths.Root, "cache")) { Log = host.Log };

    public IObjectStore OpenStore(string location, S3Options? s3)
    {
        if (string.IsNullOrWhiteSpace(location)) throw HavenException.Invalid("a repository location is needed");
        if (S3Location.IsS3(location))
        {
            if (!S3Location.TryParse(location, out var parsed, out var error)) throw HavenException.Invalid($"{location}: {error}");
            var settings = ToSettings(s3);
            return _s3Stores.GetOrAdd((parsed!, settings), key => new S3ObjectStore(key.Item1, key.Item2));
        }
        if (s3 is not null) throw HavenException.Invalid($"S3 settings were given, but {location} is not an s3:// location");
        return new LocalDirectoryStore(Path.GetFullPath(location));
    }

    /// <summary>How a location is shown back: absolute folder paths, S3 locations as given.</summary>
    public static string Describe(string location) => S3Location.IsS3(location) ? location : Path.GetFullPath(location);

    private static S3Settings ToSettings(S3Options? o) => new()
    {
        Endpoint = NullIfEmpty(o?.Endpoint),
        Region = NullIfEmpty(o?.Region),
        PathStyle = o?.PathStyle,
        AccessKeyId = NullIfEmpty(o?.AccessKeyId),
        SecretAccessKey = NullIfEmpty(o?.SecretAccessKey),
        SessionToken = NullIfEmpty(o?.SessionToken),
    };

    private static string? NullIfEmpty(string? s) => string.IsNullOrEmpty(s) ? null : s;

    public async Task<Repository.Repository> OpenAsync(RepositoryRef r, CancellationToken ct)
        => await OpenAsync(r.Repository, r.Passphrase, r.S3, ct);

    public async Task<Repository.Repository> OpenAsync(string location, string passphrase, S3Options? s3, CancellationToken ct)
    {
        try
        {
            var repo = await Repository.Repository.OpenAsync(OpenStore(location, s3), passphrase, ChunkCache, ct);
            repo.AtStep = CrashPoints.Hit; // prune, GC and copy steps are crash points too
            repo.Log = host.Log;
            return repo;
        }
        catch (NotARepositoryException e) { throw HavenException.Invalid(e.Message); }
        catch (WrongPassphraseException e) { throw HavenException.Invalid(e.Message); }
    }

    public async Task<RepositoryInfo> InitAsync(RepositoryInitRequest req, CancellationToken ct)
    {
        if (string.IsNullOrEmpty(req.Passphrase)) throw HavenException.Invalid("a repository needs a passphrase");
        var chunkSize = req.ChunkSize ?? RepositoryOptions.DefaultChunkSize;
        if (chunkSize < RepositoryOptions.MinChunkSize || chunkSize > RepositoryOptions.MaxChunkSize || (chunkSize & (chunkSize - 1)) != 0)
            throw HavenException.Invalid("chunk size must be a power of two from 64 KiB to 16 MiB");
        var immutability = ParseImmutability(req);
        var store = OpenStore(req.Repository, req.S3);
        if (store is S3ObjectStore s3) await s3.EnsureBucketAsync(objectLock: immutability is not null, ct);
        else Directory.CreateDirectory(Path.GetFullPath(req.Repository));
        try
        {
            var options = new RepositoryOptions { ChunkSize = chunkSize, Immutability = immutability };
            await using var repo = await Repository.Repository.InitAsync(store, req.Passphrase, options, ct);
            return new RepositoryInfo { Id = repo.Id, Location = Describe(req.Repository), ChunkSize = repo.ChunkSize, Immutability = DescribeImmutability(immutability) };
        }
        catch (RepositoryExistsException e) { throw HavenException.Conflict(e.Message); }
        catch (ImmutabilityUnsupportedException e) { throw HavenException.Invalid(e.Message); }
    }

    private static RepositoryImmutability? ParseImmutability(RepositoryInitRequest req)
    {
        if (req.ImmutableDays is null)
        {
            if (req.ImmutableMode is not null) throw HavenException.Invalid("an immutability mode needs a number of days");
            return null;
        }
        if (req.ImmutableDays is < 1 or > 36500) throw HavenException.Invalid("immutable days must be 1..36500");
        var mode = (req.ImmutableMode ?? "governance") switch
        {
            "governance" => RetentionMode.Governance,
            "compliance" => RetentionMode.Compliance,
            var other => throw HavenException.Invalid($"immutability mode must be governance or compliance, not '{other}'"),
        };
        return new RepositoryImmutability { Mode = mode, Days = req.ImmutableDays.Value };
    }

    private static string? DescribeImmutability(RepositoryImmutability? i)
        => i is null ? null : $"{i.Mode.ToString().ToLowerInvariant()} {i.Days}d";

    public async Task<List<BackupInfo>> ListAsync(RepositoryRef req, CancellationToken ct)
    {
        await using var repo = await OpenAsync(req, ct);
        var list = new List<BackupInfo>();
        var backups = await repo.ListBackupsAsync(ct);
        foreach (var b in backups)
            list.Add(new BackupInfo { Id = b.Id, Vm = b.VmName, CreatedAt = b.CreatedAt, Mode = b.Mode, Host = b.HostName, SizeBytes = b.SizeBytes });
        // Shown, not hidden: an unreadable manifest is a damaged backup the user has to know about.
        foreach (var u in backups.Unreadable)
            list.Add(new BackupInfo { Id = u.BackupId, Vm = "", CreatedAt = TimeOfBackupId(u.BackupId), Mode = "", Host = "", SizeBytes = 0, Unreadable = u.Reason });
        list.Sort((a, b) => a.CreatedAt != b.CreatedAt ? a.CreatedAt.CompareTo(b.CreatedAt) : string.CompareOrdinal(a.Id, b.Id));
        return list;
    }

    /// <summary>A backup id starts with its creation time, "yyyyMMdd-HHmmss" in UTC.</summary>
    private static DateTimeOffset TimeOfBackupId(string id)
        => DateTimeOffset.TryParseExact(id.Length >= 15 ? id[..15] : id, "yyyyMMdd-HHmmss", System.Globalization.CultureInfo.InvariantCulture,
            System.Globalization.DateTimeStyles.AssumeUniversal, out var t) ? t : DateTimeOffset.UnixEpoch;

    public async Task<VerifyResult> VerifyAsync(RepositoryVerifyRequest req, CancellationToken ct)
    {
        await using var repo = await OpenAsync(req, ct);
        return await repo.VerifyAsync(req.ReadData, ct);
    }

    public static RetentionPolicy ToPolicy(RepositoryPruneRequest req) => new()
    {
        KeepLast = req.KeepLast,
        KeepHourly = req.KeepHourly,
        KeepDaily = req.KeepDaily,
        KeepWeekly = req.KeepWeekly,
        KeepMonthly = req.KeepMonthly,
        KeepYearly = req.KeepYearly,
    };

    public async Task<PruneResult> PruneAsync(RepositoryPruneRequest req, CancellationToken ct)
    {
        var policy = ToPolicy(req);
        if (policy.IsEmpty) throw HavenException.Invalid("prune needs at least one --keep-* rule (it would remove every backup)");
        await using var repo = await OpenAsync(req, ct);
        return await repo.PruneAsync(policy, req.DryRun, ct);
    }

    public async Task<GcResult> CollectGarbageAsync(RepositoryRef req, CancellationToken ct)
    {
        await using var repo = await OpenAsync(req, ct);
        return await repo.CollectGarbageAsync(ct);
    }

    /// <summary>Converts a version-1 repository to version 2 in place (docs/repository-format.md, "Upgrading from version 1").</summary>
    public async Task<UpgradeResult> UpgradeAsync(RepositoryRef req, CancellationToken ct)
    {
        await using var repo = await OpenAsync(req, ct);
        return await repo.UpgradeAsync(req.Passphrase, ct);
    }

    /// <summary>Copies the chosen backups, oldest first, so each copy dedups against the ones before it.</summary>
    public async Task<RepositoryCopyResult> CopyAsync(RepositoryCopyRequest req, CancellationToken ct, Action<OperationEvent>? progress = null)
    {
        var clock = Stopwatch.StartNew();
        var selectors = (req.BackupIds is { Count: > 0 } ? 1 : 0) + (req.Vm is not null ? 1 : 0) + (req.All ? 1 : 0);
        if (selectors != 1) throw HavenException.Invalid("copy takes exactly one of: backup ids, a VM name, or all");
        if (string.IsNullOrEmpty(req.TargetPassphrase)) throw HavenException.Invalid("the target repository needs its passphrase");
        if (SameLocation(req.Repository, req.Target)) throw HavenException.Invalid("source and target are the same repository");
        await using var source = await OpenAsync(req, ct);
        await using var target = await OpenAsync(req.Target, req.TargetPassphrase, req.TargetS3, ct);
        if (source.Id == target.Id) throw HavenException.Invalid("source and target are the same repository");

        var all = await source.ListBackupsAsync(ct);
        var chosen = new List<BackupSummary>();
        if (req.BackupIds is { Count: > 0 } ids)
        {
            foreach (var id in ids)
            {
                var found = FindBackup(all, id) ?? throw HavenException.NotFound($"backup {id} not found in {Describe(req.Repository)}");
                if (!chosen.Contains(found)) chosen.Add(found);
            }
            chosen.Sort((a, b) => a.CreatedAt.CompareTo(b.CreatedAt));
        }
        else
        {
            foreach (var b in all) if (req.All || b.VmName == req.Vm) chosen.Add(b);
            if (chosen.Count == 0 && req.Vm is not null) throw HavenException.NotFound($"no backups of VM '{req.Vm}' in {Describe(req.Repository)}");
        }

        var copied = new List<CopiedBackup>(chosen.Count);
        for (var i = 0; i < chosen.Count; i++)
        {
            var b = chosen[i];
            var index = i;
            var reporter = progress is null ? null : new Progress<long>(bytes => progress(new OperationEvent
            {
                Type = "progress", Phase = "copy", Disk = index, DiskCount = chosen.Count, BytesDone = bytes, BytesTotal = b.SizeBytes,
            }));
            CopyResult r;
            try { r = await BackupCopy.CopyAsync(source, b.Id, target, Environment.MachineName, reporter, ct); }
            catch (RepositoryFormatMismatchException e) { throw HavenException.Invalid(e.Message); }
            copied.Add(new CopiedBackup
            {
                SourceId = b.Id, TargetId = r.TargetBackupId, Vm = b.VmName, AlreadyPresent = r.AlreadyPresent,
                ChunksRead = r.ChunksRead, ChunksUploaded = r.ChunksUploaded, BytesUploaded = r.BytesUploaded,
            });
        }
        return new RepositoryCopyResult { Backups = copied, WallMilliseconds = clock.Elapsed.TotalMilliseconds };
    }

    private static BackupSummary? FindBackup(IReadOnlyList<BackupSummary> all, string id)
    {
        foreach (var b in all) if (b.Id == id) return b;
        return null;
    }

    private static bool SameLocation(string a, string b) => Describe(a).TrimEnd('/') == Describe(b).TrimEnd('/');

    public void Dispose()
    {
        foreach (var store in _s3Stores.Values) store.Dispose();
        _s3Stores.Clear();
    }
}
