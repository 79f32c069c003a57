using System.Buffers;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Haven.Storage;

namespace Haven.Repository;

/// <summary>
/// A deduplicating, encrypted backup repository on an <see cref="IObjectStore"/>. The format, its
/// invariants and the concurrency rules are in docs/repository-format.md; this class is their one
/// implementation. Many hosts may use one repository at once: backups run concurrently with each other
/// and with prune/GC (which exclude each other).
/// </summary>
public sealed partial class Repository : IAsyncDisposable
{
    /// <summary>Largest manifest plaintext accepted (a 1 MiB-chunk index of a 10 TiB disk is about 700 MB).</summary>
    internal const int MaxManifestBytes = 1 << 30;

    private static readonly JsonElement JsonNull = JsonDocument.Parse("null").RootElement.Clone();

    private RepositoryConfig _config; // replaced once, by UpgradeAsync
    private readonly KeySet _keys;

    /// <summary>Where clean-up failures (a lock not released, a copy not deleted) are reported; nothing by default.</summary>
    public Microsoft.Extensions.Logging.ILogger Log { get; set; } = Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance;

    private Repository(IObjectStore store, RepositoryConfig config, byte[] masterKey, TimeProvider clock, ChunkIndexCache? cache = null)
    {
        Store = store;
        _config = config;
        Clock = clock;
        Cache = cache;
        Immutability = config.Immutability?.ToPolicy();
        try { _keys = new KeySet(masterKey); }
        finally { CryptographicOperations.ZeroMemory(masterKey); }
    }

    /// <summary>The repository's id: 64 hex digits, random, fixed at creation.</summary>
    public string Id => _config.Id;

    /// <summary>The fixed chunk size in bytes.</summary>
    public int ChunkSize => _config.ChunkSize;

    public TimeSpan GcGracePeriod => _config.GcGracePeriod;
    public TimeSpan LockStaleAfter => _config.LockStaleAfter;

    /// <summary>Object-lock retention of this repository's backups, or null (fixed at creation, stored in the config).</summary>
    public RepositoryImmutability? Immutability { get; }

    /// <summary>The host-local chunk index cache writers use instead of listing <c>chunks/</c>, if one was given.</summary>
    public ChunkIndexCache? Cache { get; }

    /// <summary>
    /// Called with the name of each step of prune, GC and copy as it is reached (the host's crash points:
    /// tests kill the process there). Null: nothing is called.
    /// </summary>
    public Action<string>? AtStep { get; set; }

    internal void Step(string name) => AtStep?.Invoke(name);

    internal IObjectStore Store { get; }
    internal TimeProvider Clock { get; }
    internal KeySet Keys => _keys;
    internal string Location => Store.ToString() ?? Store.GetType().Name;

    public static Task<Repository> InitAsync(IObjectStore store, string passphrase, RepositoryOptions? options = null, CancellationToken ct = default)
        => InitAsync(store, passphrase, options, TimeProvider.System, ct);

    /// <summary>Creates a repository: writes only the <c>config</c> object (create-only, so two racing inits cannot both win).</summary>
    internal static async Task<Repository> InitAsync(IObjectStore store, string passphrase, RepositoryOptions? options, TimeProvider clock, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(store);
        if (string.IsNullOrEmpty(passphrase)) throw new ArgumentException("a repository needs a non-empty passphrase", nameof(passphrase));
        options ??= new RepositoryOptions();
        options.Validate();
        var location = store.ToString() ?? store.GetType().Name;
        if (options.Immutability is not null)
        {
            // Checked before anything is written: a repository that promises immutability must be able to keep it.
            if (store is not IObjectLockStore lockStore)
                throw new ImmutabilityUnsupportedException($"{location} does not support object lock (immutability needs an S3 bucket with object lock)");
            if (!await lockStore.IsObjectLockEnabledAsync(ct))
                throw new ImmutabilityUnsupportedException($"{location} does not have object lock enabled; create the bucket with object lock to use immutability");
        }
        if (await store.StatAsync(RepoKeys.Config, ct) is not null) throw new RepositoryExistsException(location);
        var (config, masterKey) = await Task.Run(() => RepositoryConfig.Create(passphrase, options, clock.GetUtcNow()), ct);
        try
        {
            if (!await store.TryCreateAsync(RepoKeys.Config, config.ToJson(), ct)) throw new RepositoryExistsException(location);
        }
        catch
        {
            CryptographicOperations.ZeroMemory(masterKey);
            throw;
        }
        return new Repository(store, config, masterKey, clock);
    }

    public static Task<Repository> OpenAsync(IObjectStore store, string passphrase, CancellationToken ct = default)
        => OpenAsync(store, passphrase, null, TimeProvider.System, ct);

    /// <summary>Opens the repository; backup writers use <paramref name="cache"/> (when given) instead of listing every chunk.</summary>
    public static Task<Repository> OpenAsync(IObjectStore store, string passphrase, ChunkIndexCache? cache, CancellationToken ct = default)
        => OpenAsync(store, passphrase, cache, TimeProvider.System, ct);

    internal static Task<Repository> OpenAsync(IObjectStore store, string passphrase, TimeProvider clock, CancellationToken ct)
        => OpenAsync(store, passphrase, null, clock, ct);

    internal static async Task<Repository> OpenAsync(IObjectStore store, string passphrase, ChunkIndexCache? cache, TimeProvider clock, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(store);
        ArgumentNullException.ThrowIfNull(passphrase);
        var location = store.ToString() ?? store.GetType().Name;
        var buffer = new byte[RepositoryConfig.MaxConfigBytes + 1];
        var length = await store.ReadAsync(RepoKeys.Config, buffer, ct);
        // No config but a staged one: an upgrade was replacing it on a store whose replace is not atomic.
        if (length < 0) length = await store.ReadAsync(RepoKeys.StagedConfig, buffer, ct);
        if (length < 0) throw new NotARepositoryException($"{location} holds no Haven repository (no config object)");
        if (length > RepositoryConfig.MaxConfigBytes)
            throw new NotARepositoryException($"{location}: the config object is {length} bytes, larger than any Haven repository config ({RepositoryConfig.MaxConfigBytes})");
        var config = RepositoryConfig.Parse(buffer[..length], location);
        // Key derivation is deliberately slow (a few hundred milliseconds): keep it off the caller's thread.
        var masterKey = await Task.Run(() => config.UnwrapMasterKey(passphrase), ct);
        return new Repository(store, config, masterKey, clock, cache);
    }

    /// <summary>Registers a writer (shared lock) and loads the set of chunks already stored, for dedup.</summary>
    public async Task<BackupWriter> BeginBackupAsync(string hostName, CancellationToken ct = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(hostName);
        return await BackupWriter.StartAsync(this, hostName, ct);
    }

    /// <summary>
    /// Every readable backup, oldest first; a manifest that cannot be read (corrupt, or a newer format) is
    /// not in the list but in <see cref="BackupListing.Unreadable"/> with the reason — one bad manifest does
    /// not hide the others.
    /// </summary>
    public async Task<BackupListing> ListBackupsAsync(CancellationToken ct = default)
    {
        var unreadable = new List<ManifestProblem>();
        var list = new List<BackupSummary>();
        // Version 2 reads only the small summaries, never an index.
        foreach (var id in await ListBackupIdsAsync(ct))
        {
            try
            {
                if (await ReadSummaryAsync(id, ct) is { } s) list.Add(s.ToListing());
            }
            catch (CorruptManifestException e) { unreadable.Add(new ManifestProblem(id, e.Reason)); }
            catch (UnsupportedFormatException e) { unreadable.Add(new ManifestProblem(id, e.Message)); }
        }
        list.Sort((a, b) => a.CreatedAt != b.CreatedAt ? a.CreatedAt.CompareTo(b.CreatedAt) : string.CompareOrdinal(a.Id, b.Id));
        return new BackupListing(list, unreadable);
    }

    /// <summary>A backup with every disk's chunk index (version 2: its summary and index objects; version 1: its manifest).</summary>
    public async Task<BackupManifest> ReadManifestAsync(string backupId, CancellationToken ct = default)
    {
        if (!BackupIds.IsValid(backupId)) throw new BackupNotFoundException(backupId);
        if (FormatVersion >= 2) return await ReadManifestV2Async(backupId, ct);
        var sealedBytes = await Store.GetAsync(RepoKeys.Backup(backupId), ct) ?? throw new BackupNotFoundException(backupId);
        return OpenManifest(backupId, sealedBytes);
    }

    /// <summary>
    /// Reads one chunk into <paramref name="into"/> (at least the chunk's length; ChunkSize always suffices)
    /// and returns its length. Verifies the GCM tag, then that the plaintext hashes to <paramref name="id"/>.
    /// </summary>
    public async Task<int> ReadChunkAsync(ChunkId id, Memory<byte> into, CancellationToken ct = default)
    {
        var max = SealedObject.Overhead + ChunkSize;
        var buffer = ArrayPool<byte>.Shared.Rent(max + 1);
        try
        {
            var n = await Store.ReadAsync(RepoKeys.Chunk(id), buffer.AsMemory(0, max + 1), ct);
            if (n < 0) throw new MissingChunkException(id);
            if (n > max) throw new CorruptChunkException(id, $"object is {n} bytes, larger than any chunk of this repository");
            return OpenChunk(id, buffer.AsSpan(0, n), into.Span);
        }
        finally { ArrayPool<byte>.Shared.Return(buffer); }
    }

    /// <summary>
    /// Marks <paramref name="backupIds"/> as being read (a mount, an instant recovery) until the returned handle is
    /// disposed: prune keeps them meanwhile, so GC keeps their chunks. The lock is refreshed like a writer's and goes
    /// stale the same way when its holder dies. Refused while a prune holds the repository.
    /// </summary>
    public async Task<IAsyncDisposable> HoldBackupsAsync(IReadOnlyList<string> backupIds, string operation, string hostName, CancellationToken ct = default)
    {
        // A version-1 repository is never pruned by this Haven (it only reads it): nothing to hold off.
        if (IsReadOnly) return NoHold.Instance;
        return await HeldLock.AcquireReaderAsync(this, hostName, operation, backupIds, ct);
    }

    private sealed class NoHold : IAsyncDisposable
    {
        public static readonly NoHold Instance = new();
        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }

    public ValueTask DisposeAsync()
    {
        _keys.Dispose();
        return ValueTask.CompletedTask;
    }

    // ---- format helpers shared by the writer and maintenance ----

    internal ChunkId ComputeId(ReadOnlySpan<byte> plaintext) => _keys.ComputeId(plaintext);

    /// <summary>Seals a chunk into <paramref name="output"/> (SealedObject.Overhead + plaintext length); returns the object length.</summary>
    internal int SealChunk(ChunkId id, ReadOnlySpan<byte> plaintext, Span<byte> output)
    {
        Span<byte> binding = stackalloc byte[ChunkId.Length];
        id.WriteTo(binding);
        return SealedObject.Seal(SealedObject.ChunkMagic, _keys.ChunkEncryption, binding, plaintext, output, compress: true);
    }

    /// <summary>Opens a sealed chunk and checks its id; <paramref name="sealedChunk"/> is scratch afterwards.</summary>
    internal int OpenChunk(ChunkId id, Span<byte> sealedChunk, Span<byte> into)
    {
        Span<byte> binding = stackalloc byte[ChunkId.Length];
        id.WriteTo(binding);
        var n = SealedObject.Open(SealedObject.ChunkMagic, _keys.ChunkEncryption, binding, sealedChunk, into, ChunkSize, out var problem);
        if (n is { } length)
        {
            if (length > 0 && _keys.ComputeId(into[..length]) == id) return length;
            problem = "plaintext does not hash to the chunk id";
        }
        // Nothing unverified stays in the caller's buffer (a raw payload was decrypted straight into it).
        into[..Math.Min(into.Length, ChunkSize)].Clear();
        throw new CorruptChunkException(id, problem);
    }

    internal byte[] SealManifest(BackupManifest manifest)
    {
        if (manifest.VmDefinition.ValueKind == JsonValueKind.Undefined) manifest = manifest with { VmDefinition = JsonNull };
        var json = JsonSerializer.SerializeToUtf8Bytes(manifest, RepositoryJson.Options);
        var output = new byte[SealedObject.Overhead + json.Length];
        var n = SealedObject.Seal(SealedObject.ManifestMagic, _keys.ManifestEncryption, Encoding.UTF8.GetBytes(manifest.Id), json, output, compress: true);
        return output.AsSpan(0, n).ToArray();
    }

    internal BackupManifest OpenManifest(string backupId, byte[] sealedBytes)
    {
        var json = SealedObject.OpenToArray(SealedObject.ManifestMagic, _keys.ManifestEncryption, Encoding.UTF8.GetBytes(backupId), sealedBytes, MaxManifestBytes, out var problem)
            ?? throw new CorruptManifestException(backupId, problem);
        BackupManifest manifest;
        try
        {
            manifest = JsonSerializer.Deserialize<BackupManifest>(json, RepositoryJson.Options)
                ?? throw new CorruptManifestException(backupId, "manifest is JSON null");
        }
        catch (JsonException e) { throw new CorruptManifestException(backupId, "not a valid manifest: " + e.Message.Split('\n')[0]); }
        if (manifest.FormatVersion != BackupManifest.CurrentVersion)
            throw new UnsupportedFormatException($"backup {backupId} has manifest version {manifest.FormatVersion}; this Haven reads version {BackupManifest.CurrentVersion}");
        if (manifest.Id != backupId) throw new CorruptManifestException(backupId, $"manifest names backup {manifest.Id}");
        foreach (var disk in manifest.Disks)
        {
            if (disk.ChunkSize != ChunkSize || disk.SizeBytes < 0 || disk.Chunks.LongLength != DiskManifest.ChunkCount(disk.SizeBytes, disk.ChunkSize))
                throw new CorruptManifestException(backupId, $"disk {disk.Name}: chunk index does not match its size");
        }
        return manifest;
    }

    /// <summary>Ids of the backups: summaries in version 2 (leftover v1 manifests of an unfinished upgrade are ignored), manifests in version 1.</summary>
    internal Task<List<string>> ListBackupIdsAsync(CancellationToken ct)
        => ListKeysAsync(FormatVersion >= 2 ? RepoKeys.SummariesPrefix : RepoKeys.BackupsPrefix, ct);

    /// <summary>Every chunk object (valid "chunks/xx/&lt;id&gt;" keys only), with its store info.</summary>
    internal async IAsyncEnumerable<(ChunkId Id, ObjectInfo Info)> ListChunksAsync([System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct)
    {
        await foreach (var o in Store.ListAsync(RepoKeys.ChunksPrefix, ct))
            if (RepoKeys.TryParseChunk(o.Key, out var id)) yield return (id, o);
    }

    /// <summary>A lock is stale when its last refresh (or, if unreadable, its object's write time) is older than LockStaleAfter.</summary>
    /// <summary>
    /// A lock taken on this machine by a process that no longer exists (killed, crashed) is stale at once:
    /// waiting out LockStaleAfter would block the next prune, GC or verify for half an hour after a crash.
    /// A live pid (even a reused one) keeps the lock: only a certainly dead holder is judged.
    /// </summary>
    private static bool HolderIsGone(LockRecord record)
        => OperatingSystem.IsLinux() && record.Host == Environment.MachineName && record.Pid > 0
           && record.Pid != Environment.ProcessId && !Directory.Exists("/proc/" + record.Pid);

    internal async Task<bool> IsStaleAsync(string key, LockRecord? record, CancellationToken ct)
    {
        var now = Clock.GetUtcNow();
        if (record is not null) return now - record.RefreshedAt > LockStaleAfter || HolderIsGone(record);
        var info = await Store.StatAsync(key, ct);
        return info is null || now - info.LastModified > LockStaleAfter;
    }

    /// <summary>The live exclusive lock, if any: (exists and live, its record or null when unreadable).</summary>
    internal async Task<(bool Live, LockRecord? Record)> ReadExclusiveLockAsync(CancellationToken ct)
    {
        var json = await Store.GetAsync(RepoKeys.ExclusiveLock, ct);
        if (json is null) return (false, null);
        var record = LockRecord.TryParse(json);
        return (!await IsStaleAsync(RepoKeys.ExclusiveLock, record, ct), record);
    }

    internal async Task<long> ReadChunkEpochAsync(CancellationToken ct)
    {
        var json = await Store.GetAsync(RepoKeys.ChunkEpoch, ct);
        if (json is null) return 0;
        try { return JsonSerializer.Deserialize<ChunkEpoch>(json, RepositoryJson.Options)?.Epoch ?? -1; }
        catch (JsonException) { return -1; } // unreadable: never equal to a remembered epoch, so writers re-check
    }

    /// <summary>
    /// Announces that chunk deletions are about to start: marks the exclusive lock Deleting, then bumps
    /// <c>chunk-epoch</c>, in that order (docs/repository-format.md, "Writers and GC").
    /// </summary>
    internal async Task BeginDeletingChunksAsync(HeldLock exclusive, CancellationToken ct)
    {
        await exclusive.RefreshAsync(ct, r => r with { Deleting = true });
        var epoch = await ReadChunkEpochAsync(ct);
        var next = new ChunkEpoch { Epoch = Math.Max(epoch, 0) + 1, Operation = exclusive.Record.Operation, At = Clock.GetUtcNow() };
        await Store.PutAsync(RepoKeys.ChunkEpoch, JsonSerializer.SerializeToUtf8Bytes(next, RepositoryJson.Indented), ct);
    }
}

/// <summary>Backup ids: "yyyyMMdd-HHmmss-" (UTC) and 8 random hex digits; they sort by time and are valid object keys.</summary>
internal static class BackupIds
{
    public const int Length = 24;

    public static string New(DateTimeOffset now) => TimePrefix(now) + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4));

    /// <summary>"yyyyMMdd-HHmmss-" of <paramref name="createdAt"/> in UTC: every backup id made from that time starts with it.</summary>
    public static string TimePrefix(DateTimeOffset createdAt)
        => createdAt.UtcDateTime.ToString("yyyyMMdd-HHmmss", System.Globalization.CultureInfo.InvariantCulture) + "-";

    public static bool IsValid(string? id)
    {
        if (id is null || id.Length != Length || id[8] != '-' || id[15] != '-') return false;
        for (var i = 0; i < Length; i++)
        {
            if (i is 8 or 15) continue;
            var c = id[i];
            if (i < 15 ? !char.IsAsciiDigit(c) : !char.IsAsciiHexDigitLower(c)) return false;
        }
        return true;
    }
}
