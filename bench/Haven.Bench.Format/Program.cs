using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using Haven.Repository;
using Haven.Storage;

// Repository format v2 at scale, on a synthetic local-folder repository (docs/performance.md):
//   list:     N backups (default 10,000) of one 2 TiB disk; every summary names one shared 2,097,152-entry index
//             object (64 MiB; the listing must not read it). Times ListBackupsAsync, peak RSS.
//   prune-gc: C chunk objects (default 2,000,000; tiny files written directly, GC only lists them) and B backups
//             (default 10) whose 1 MiB-chunk indexes each name 90% of the chunks, windows shifted by 1%. Times
//             prune --keep-last 5 and then GC (which reads 5 indexes of 1.8 million entries), peak RSS.
// Measurements run in a child process that has only opened the repository, with the peak RSS reset
// (/proc/self/clear_refs) after opening, so setup memory is not counted.
//   dotnet bench/Haven.Bench.Format/bin/Release/net10.0/Haven.Bench.Format.dll [list|prune-gc|all]
//       [--dir /tmp/haven-bench-format] [--backups 10000] [--disk-size-gib 2048] [--chunks 2000000] [--gc-backups 10]

CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
const string Passphrase = "bench";
const int ChunkSize = 1 << 20;

var mode = args.Length > 0 && !args[0].StartsWith("--", StringComparison.Ordinal) ? args[0] : "all";
string Arg(string name, string fallback)
{
    var i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;
}
var dir = Arg("--dir", "/tmp/haven-bench-format");
var backups = int.Parse(Arg("--backups", "10000"));
var diskGiB = long.Parse(Arg("--disk-size-gib", "2048"));
var chunkCount = int.Parse(Arg("--chunks", "2000000"));
var gcBackups = int.Parse(Arg("--gc-backups", "10"));
var listRepo = Path.Combine(dir, "list");
var gcRepo = Path.Combine(dir, "gc");

switch (mode)
{
    case "all":
        await SetUpListAsync();
        Child("measure-list");
        await SetUpGcAsync();
        Child("measure-prune-gc");
        return 0;
    case "list":
        await SetUpListAsync();
        Child("measure-list");
        return 0;
    case "prune-gc":
        await SetUpGcAsync();
        Child("measure-prune-gc");
        return 0;
    case "measure-list":
        await MeasureListAsync();
        return 0;
    case "measure-prune-gc":
        await MeasurePruneGcAsync();
        return 0;
    default:
        Console.Error.WriteLine("usage: Haven.Bench.Format [list|prune-gc|all] [--dir D] [--backups N] [--disk-size-gib G] [--chunks C] [--gc-backups B]");
        return 2;
}

void Child(string what)
{
    var psi = new ProcessStartInfo(Environment.ProcessPath!) { UseShellExecute = false };
    var self = Environment.GetCommandLineArgs()[0];
    if (self.EndsWith(".dll", StringComparison.Ordinal)) psi.ArgumentList.Add(self);
    psi.ArgumentList.Add(what);
    foreach (var a in args.Skip(mode == args.FirstOrDefault() ? 1 : 0)) psi.ArgumentList.Add(a);
    using var p = Process.Start(psi)!;
    p.WaitForExit();
    if (p.ExitCode != 0) throw new InvalidOperationException($"{what} failed with exit code {p.ExitCode}");
}

static RepositoryOptions Options(TimeSpan grace) => new() { ChunkSize = ChunkSize, Kdf = RepositoryKdf.Cheapest, GcGracePeriod = grace };

static ChunkId[] RandomIds(int n)
{
    var bytes = RandomNumberGenerator.GetBytes(n * ChunkId.Length);
    var ids = new ChunkId[n];
    for (var i = 0; i < n; i++) ids[i] = new ChunkId(bytes.AsSpan(i * ChunkId.Length, ChunkId.Length));
    return ids;
}

static JsonElement Definition(int vm) => JsonDocument.Parse($$"""
    {"name":"vm{{vm}}","vcpus":4,"memoryMiB":8192,"disks":[{"sizeBytes":2199023255552,"format":"qcow2","bus":"virtio"}],"nics":[{"model":"virtio","mac":"52:54:00:12:34:{{vm % 100:D2}}"}],"machine":"q35","firmware":"uefi"}
    """).RootElement.Clone();

async Task SetUpListAsync()
{
    if (Directory.Exists(listRepo)) Directory.Delete(listRepo, recursive: true);
    Directory.CreateDirectory(listRepo);
    var clock = Stopwatch.StartNew();
    var store = new LocalDirectoryStore(listRepo);
    await using var repo = await Repository.InitAsync(store, Passphrase, Options(TimeSpan.FromHours(1)));
    var size = diskGiB << 30;
    var entries = (int)DiskManifest.ChunkCount(size, ChunkSize);
    var ids = RandomIds(entries);
    var chunks = new ChunkId?[entries];
    for (var i = 0; i < entries; i++) chunks[i] = ids[i];
    var index = ChunkIndexFormat.Write(new DiskManifest { Name = "disk0", SizeBytes = size, ChunkSize = ChunkSize, Chunks = chunks });
    const string name = "shared.0";
    await store.TryCreateAsync(RepoKeys.Index(name), repo.SealIndex(name, index));
    var sha = Convert.ToHexStringLower(SHA256.HashData(index));
    var start = new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
    await Parallel.ForEachAsync(Enumerable.Range(0, backups), new ParallelOptions { MaxDegreeOfParallelism = 8 }, async (b, ct) =>
    {
        var createdAt = start.AddMinutes(b * 10);
        var summary = new SummaryDocument
        {
            Id = BackupIds.New(createdAt), VmName = $"vm{b % 50}", VmDefinition = Definition(b % 50), HostName = "host-a", CreatedAt = createdAt,
            Mode = "incremental", ModeReason = null, Consistency = "CrashConsistent",
            Stats = new ManifestStats { SizeBytes = size, ChunksReferenced = entries, ChunksNew = 300, BytesNew = 300L << 20, StoredBytesNew = 200L << 20 },
            Disks = [new DiskSummary { Name = "disk0", SizeBytes = size, ChunkSize = ChunkSize, Index = name, IndexSha256 = sha }],
        };
        await store.TryCreateAsync(RepoKeys.Summary(summary.Id), repo.SealSummary(summary), ct);
    });
    Console.WriteLine($"set up: {backups} summaries of a {diskGiB} GiB disk ({entries} index entries, index object {index.Length >> 20} MiB, shared) in {clock.Elapsed.TotalSeconds:F1} s");
}

async Task MeasureListAsync()
{
    var store = new ReadCountingStore(new LocalDirectoryStore(listRepo));
    await using var repo = await Repository.OpenAsync(store, Passphrase);
    var before = Rss.ResetPeak();
    var clock = Stopwatch.StartNew();
    var list = await repo.ListBackupsAsync();
    var elapsed = clock.Elapsed;
    Console.WriteLine($"list: {list.Count} backups ({list.Unreadable.Count} unreadable) in {elapsed.TotalSeconds:F2} s; " +
        $"objects read: {store.Reads("summaries")} summaries, {store.Reads("indexes")} indexes; RSS before {before} MiB, peak {Rss.PeakMiB()} MiB");
}

async Task SetUpGcAsync()
{
    if (Directory.Exists(gcRepo)) Directory.Delete(gcRepo, recursive: true);
    Directory.CreateDirectory(gcRepo);
    var clock = Stopwatch.StartNew();
    var store = new LocalDirectoryStore(gcRepo);
    await using var repo = await Repository.InitAsync(store, Passphrase, Options(TimeSpan.Zero));
    var ids = RandomIds(chunkCount);
    // Chunk objects: tiny files written directly (GC lists chunks, it does not read them); 2 million fsyncs
    // through the store would take far longer than the benchmark measures.
    var payload = RandomNumberGenerator.GetBytes(64);
    for (var h = 0; h < 256; h++) Directory.CreateDirectory(Path.Combine(gcRepo, "chunks", h.ToString("x2")));
    Parallel.For(0, chunkCount, new ParallelOptions { MaxDegreeOfParallelism = 2 }, i =>
    {
        var hex = ids[i].ToString();
        File.WriteAllBytes(Path.Combine(gcRepo, "chunks", hex[..2], hex), payload);
    });
    var chunksDone = clock.Elapsed;
    var shift = chunkCount / 100;
    var window = chunkCount * 9 / 10;
    var start = new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
    for (var b = 0; b < gcBackups; b++)
    {
        var chunks = new ChunkId?[window];
        for (var i = 0; i < window; i++) chunks[i] = ids[(b * shift + i) % chunkCount];
        var manifest = new BackupManifest
        {
            Id = BackupIds.New(start.AddDays(b)), VmName = "vm", CreatedAt = start.AddDays(b),
            Disks = [new DiskManifest { Name = "disk0", SizeBytes = (long)window * ChunkSize, ChunkSize = ChunkSize, Chunks = chunks }],
        };
        await repo.WriteSummaryAndIndexesAsync(manifest, retention: null, reuseExisting: false, default);
    }
    Console.WriteLine($"set up: {chunkCount} chunk objects in {chunksDone.TotalSeconds:F0} s, {gcBackups} backups of {window} entries each (windows shifted by {shift}); total {clock.Elapsed.TotalSeconds:F0} s");
}

async Task MeasurePruneGcAsync()
{
    var store = new LocalDirectoryStore(gcRepo);
    await using var repo = await Repository.OpenAsync(store, Passphrase);
    var before = Rss.ResetPeak();
    var clock = Stopwatch.StartNew();
    var prune = await repo.PruneAsync(new RetentionPolicy { KeepLast = gcBackups / 2 }, dryRun: false);
    var pruneTime = clock.Elapsed;
    var prunePeak = Rss.PeakMiB();
    Rss.ResetPeak();
    clock.Restart();
    var gc = await repo.CollectGarbageAsync();
    Console.WriteLine($"prune: removed {prune.Removed.Count}, kept {prune.Kept.Count} in {pruneTime.TotalSeconds:F2} s, peak RSS {prunePeak} MiB (before {before} MiB)");
    Console.WriteLine($"gc: {gc.BackupsMarked} backups marked, {gc.ChunksReferenced} chunks referenced, {gc.ChunksDeleted} chunks and {gc.IndexesDeleted} indexes deleted " +
        $"in {clock.Elapsed.TotalSeconds:F1} s, peak RSS {Rss.PeakMiB()} MiB");
}

/// <summary>Resident set size of this process from /proc/self/status (Linux).</summary>
internal static class Rss
{
    /// <summary>Resets the peak ("5" to clear_refs, Linux ≥ 4.0) after a full GC; returns the current RSS in MiB.</summary>
    public static long ResetPeak()
    {
        GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
        File.WriteAllText("/proc/self/clear_refs", "5");
        return Read("VmRSS:");
    }

    public static long PeakMiB() => Read("VmHWM:");

    private static long Read(string field)
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith(field, StringComparison.Ordinal))
                return long.Parse(line[field.Length..].Trim().Split(' ')[0]) / 1024;
        return -1;
    }
}

/// <summary>Counts reads (Get/Read) per first key segment, to show the listing reads no index.</summary>
internal sealed class ReadCountingStore(IObjectStore inner) : IObjectStore
{
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, int> _reads = new();

    public int Reads(string folder) => _reads.TryGetValue(folder, out var n) ? n : 0;

    private void Count(string key) => _reads.AddOrUpdate(key.Split('/')[0], 1, (_, n) => n + 1);

    public Task<bool> TryCreateAsync(string key, ReadOnlyMemory<byte> data, CancellationToken ct = default) => inner.TryCreateAsync(key, data, ct);
    public Task PutAsync(string key, ReadOnlyMemory<byte> data, CancellationToken ct = default) => inner.PutAsync(key, data, ct);

    public Task<byte[]?> GetAsync(string key, CancellationToken ct = default)
    {
        Count(key);
        return inner.GetAsync(key, ct);
    }

    public Task<int> ReadAsync(string key, Memory<byte> into, CancellationToken ct = default)
    {
        Count(key);
        return inner.ReadAsync(key, into, ct);
    }

    public Task<bool> DeleteAsync(string key, CancellationToken ct = default) => inner.DeleteAsync(key, ct);
    public Task<ObjectInfo?> StatAsync(string key, CancellationToken ct = default) => inner.StatAsync(key, ct);
    public IAsyncEnumerable<ObjectInfo> ListAsync(string prefix, CancellationToken ct = default) => inner.ListAsync(prefix, ct);
    public override string ToString() => inner.ToString() ?? nameof(ReadCountingStore);
}
