using System.Security.Cryptography;
using Haven.Storage;
using Haven.TestSupport;
using Xunit;

namespace Haven.Repository.Tests;

/// <summary>A clock the test moves by hand; the store stamps object times from it too, so GC ages are exact.</summary>
public sealed class ManualClock(DateTimeOffset start) : TimeProvider
{
    private long _ticks = start.UtcTicks;

    public override DateTimeOffset GetUtcNow() => new(Interlocked.Read(ref _ticks), TimeSpan.Zero);

    public void Advance(TimeSpan by) => Interlocked.Add(ref _ticks, by.Ticks);
}

/// <summary>A repository in a temp folder on a <see cref="LocalDirectoryStore"/>, with a manual clock and fast KDF.</summary>
public sealed class RepoFixture : IAsyncDisposable
{
    public const string Passphrase = "correct horse battery staple";
    public const int ChunkSize = 64 * 1024;

    private RepoFixture(TempDir dir, ManualClock clock, LocalDirectoryStore store, Repository repo)
    {
        Dir = dir;
        Clock = clock;
        Store = store;
        Repo = repo;
    }

    public TempDir Dir { get; }
    public ManualClock Clock { get; }
    public LocalDirectoryStore Store { get; }
    public Repository Repo { get; }
    public string StorePath => Store.RootPath;

    public static CancellationToken Ct => TestContext.Current.CancellationToken;

    public static async Task<RepoFixture> CreateAsync(TimeSpan? grace = null, string? path = null, TempDir? dir = null,
        string passphrase = Passphrase, int chunkSize = ChunkSize, ManualClock? clock = null, int formatVersion = 2)
    {
        dir ??= new TempDir();
        clock ??= new ManualClock(new DateTimeOffset(2025, 3, 1, 12, 0, 0, TimeSpan.Zero));
        var store = new LocalDirectoryStore(path ?? dir.File("repo"), clock);
        var options = new RepositoryOptions { ChunkSize = chunkSize, Kdf = RepositoryKdf.Cheapest, GcGracePeriod = grace ?? TimeSpan.FromMinutes(10), FormatVersion = formatVersion };
        var repo = await Repository.InitAsync(store, passphrase, options, clock, Ct);
        // A version-1 repository is read-only; tests fill it through the old writer path to have something to read and upgrade.
        repo.WriteVersion1ForTests = formatVersion == 1;
        return new RepoFixture(dir, clock, store, repo);
    }

    /// <summary>Opens the same store as a different host would: a new store object, the passphrase, nothing else.</summary>
    public Task<Repository> OpenAgainAsync(string passphrase = Passphrase)
        => Repository.OpenAsync(new LocalDirectoryStore(StorePath, Clock), passphrase, Clock, Ct);

    public string ChunkPath(ChunkId id) => Path.Combine(StorePath, "chunks", id.ToString()[..2], id.ToString());
    /// <summary>The object that is the backup: its summary (version 2) or its manifest (version 1).</summary>
    public string ManifestPath(string backupId) => Path.Combine(StorePath, Repo.FormatVersion >= 2 ? "summaries" : "backups", backupId);

    public string IndexPath(string backupId, int disk = 0) => Path.Combine(StorePath, "indexes", $"{backupId}.{disk}");

    public int CountChunkFiles() => Directory.Exists(Path.Combine(StorePath, "chunks"))
        ? Directory.GetFiles(Path.Combine(StorePath, "chunks"), "*", SearchOption.AllDirectories).Count(f => !Path.GetFileName(f).Contains('.'))
        : 0;

    public static byte[] RandomChunk(int length = ChunkSize) => RandomNumberGenerator.GetBytes(length);

    /// <summary>Compressible but not zero: a repeating text.</summary>
    public static byte[] TextChunk(string seed, int length = ChunkSize)
    {
        var text = System.Text.Encoding.ASCII.GetBytes($"{seed} the quick brown fox jumps over the lazy dog; ");
        var data = new byte[length];
        for (var i = 0; i < length; i++) data[i] = text[i % text.Length];
        return data;
    }

    /// <summary>Stores the given chunks with one writer and commits a one-disk backup of them (null = zero chunk).</summary>
    public async Task<(string Id, ChunkId?[] Index)> BackupAsync(string vm, params byte[]?[] chunks)
    {
        await using var writer = await Repo.BeginBackupAsync("host-a", Ct);
        var index = new ChunkId?[chunks.Length];
        for (var i = 0; i < chunks.Length; i++)
        {
            if (chunks[i] is not { } data) continue;
            var id = writer.ComputeId(data);
            await writer.PutChunkAsync(id, data, Ct);
            index[i] = id;
        }
        var id2 = await writer.CommitAsync(Manifest(vm, index, (long)(chunks.Length - 1) * ChunkSize + (chunks[^1]?.Length ?? ChunkSize)), Ct);
        return (id2, index);
    }

    public BackupManifest Manifest(string vm, ChunkId?[] index, long size) => new()
    {
        VmName = vm,
        Disks = [new DiskManifest { Name = "disk0", SizeBytes = size, ChunkSize = ChunkSize, Chunks = index }],
        CreatedAt = Clock.GetUtcNow(),
    };

    public async ValueTask DisposeAsync()
    {
        await Repo.DisposeAsync();
        Dir.Dispose();
    }
}
