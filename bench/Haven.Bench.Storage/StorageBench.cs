using System.Buffers;
using System.Diagnostics;
using System.Security.Cryptography;
using Haven.Backup;
using Haven.Nbd;
using Haven.Qemu.Images;
using Haven.Qemu.Runtime;
using Haven.Repository;
using Haven.Storage;
using Haven.Storage.S3;

namespace Haven.Bench.Storage;

/// <summary>One repository under test: a local folder or an S3 prefix, opened once (key derived once).</summary>
public sealed class Backend(string name, IObjectStore store) : IAsyncDisposable
{
    public string Name { get; } = name;
    public IObjectStore Store { get; } = store;
    public S3ObjectStore? S3 => Store as S3ObjectStore;
    public Repository.Repository Repo { get; set; } = null!;
    public S3RequestCounts Requests() => S3?.Requests.Snapshot() ?? S3RequestCounts.Zero;

    public async ValueTask DisposeAsync()
    {
        if (Repo is not null) await Repo.DisposeAsync();
        S3?.Dispose();
    }
}

/// <summary>One timed phase on one backend.</summary>
public sealed record Measured(double Seconds, S3RequestCounts Requests, bool Cold)
{
    public BackupStats? Stats { get; init; }
    public ManifestStats? Manifest { get; init; }
    public string? BackupId { get; init; }
    /// <summary>Distinct chunk ids the backup references (a restore needs each once).</summary>
    public int DistinctChunks { get; init; }
}

public sealed class StorageBench(Options o)
{
    private const int Block = 64 << 10;
    private const string Export = "disk";
    private const string Passphrase = "haven-bench-storage";
    private static readonly bool IsRoot = Environment.UserName == "root";

    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private string Work => Path.Combine(o.Dir, "work");
    private string Raw => Path.Combine(Work, "disk.raw");
    private string Qcow2 => Path.Combine(Work, "disk.qcow2");

    private void Log(string message) => Console.Error.WriteLine($"[{_clock.Elapsed.TotalSeconds,6:F1}s] {message}");

    public async Task<(string Report, bool Ok)> RunAsync(CancellationToken ct)
    {
        var startedAt = DateTimeOffset.UtcNow;
        var loadAtStart = Machine.LoadAverage();
        Directory.CreateDirectory(o.Dir);
        if (Directory.Exists(Work)) Directory.Delete(Work, recursive: true);
        Directory.CreateDirectory(Work);
        var machine = await Machine.DescribeAsync(o.Dir, o.RepoRoot);
        if (!IsRoot && !o.Warm) Log("not root: the page cache cannot be dropped, every phase runs warm");

        Task<Ceph>? cephStart = null;
        var backends = new List<Backend>();
        try
        {
            // Ceph and the disk at once: both take seconds and neither is measured.
            if (o.S3Endpoint is null)
            {
                Log("starting Ceph (scripts/ceph-start.sh, one memstore OSD + radosgw)");
                cephStart = Ceph.StartAsync(o.RepoRoot, Path.Combine(Work, "ceph"), ct);
            }
            Log($"writing the {o.Size >> 20} MiB disk (seed {o.Seed}) and converting it to qcow2");
            var image = DiskImage.Plan(o.Size, o.Seed);
            await Task.Run(() => image.Write(Raw), ct);
            await QemuImg.ConvertAsync(Raw, DiskFormat.Raw, Qcow2, DiskFormat.Qcow2, ct);
            var ceph = cephStart is null ? null : await cephStart;
            if (ceph is not null) Log($"Ceph RGW at {ceph.Endpoint}");

            var settings = new S3Settings
            {
                Endpoint = ceph?.Endpoint ?? o.S3Endpoint,
                AccessKeyId = ceph?.AccessKey ?? o.S3AccessKey,
                SecretAccessKey = ceph?.SecretKey ?? o.S3SecretKey,
                Region = o.S3Region,
            };
            var bucket = o.Bucket ?? "haven-bench-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4));
            var cache = new ChunkIndexCache(Path.Combine(Work, "cache"));
            var chunkSize = RepositoryOptions.DefaultChunkSize;

            var local = new Backend("local folder", new LocalDirectoryStore(Path.Combine(Work, "repo-local")));
            var s3 = new Backend("S3 (RGW)", new S3ObjectStore(new S3Location(bucket, "repo"), settings));
            backends.AddRange([local, s3]);
            Directory.CreateDirectory(Path.Combine(Work, "repo-local"));

            // Init (bucket + config) and open (config + PBKDF2), once per backend; counted, not timed.
            var init = new Dictionary<Backend, S3RequestCounts>();
            var open = new Dictionary<Backend, S3RequestCounts>();
            foreach (var b in backends)
            {
                var before = b.Requests();
                if (b.S3 is { } store) await store.EnsureBucketAsync(objectLock: false, ct);
                await (await Repository.Repository.InitAsync(b.Store, Passphrase, new RepositoryOptions { ChunkSize = chunkSize }, ct)).DisposeAsync();
                var mid = b.Requests();
                b.Repo = await Repository.Repository.OpenAsync(b.Store, Passphrase, cache, ct);
                init[b] = mid - before;
                open[b] = b.Requests() - mid;
            }

            if (o.WarmUp) await WarmUpAsync(settings, bucket, cache, ct);

            // The reference point for the incrementals, as havend does for a VM that is off.
            await DirtyBitmaps.EditOfflineAsync(Qcow2, "b1", ["--add", "--granularity", chunkSize.ToString()], ct);

            var full = new Dictionary<Backend, Measured>();
            foreach (var b in backends) full[b] = await BackupPhaseAsync(b, Qcow2, "full backup", bitmap: null, previous: null, ct);

            var (blocks, chunksTouched) = await ChangeAsync(chunkSize, ct);
            // Like havend: a new bitmap takes over tracking, the old one (frozen) is what the incremental reads.
            await DirtyBitmaps.EditOfflineAsync(Qcow2, "b2", ["--add", "--granularity", chunkSize.ToString()], ct);
            await DirtyBitmaps.EditOfflineAsync(Qcow2, "b1", ["--disable"], ct);
            var incremental = new Dictionary<Backend, Measured>();
            foreach (var b in backends) incremental[b] = await BackupPhaseAsync(b, Qcow2, "incremental", "b1", full[b], ct);

            await DirtyBitmaps.EditOfflineAsync(Qcow2, "b3", ["--add", "--granularity", chunkSize.ToString()], ct);
            await DirtyBitmaps.EditOfflineAsync(Qcow2, "b2", ["--disable"], ct);
            var unchanged = new Dictionary<Backend, Measured>();
            foreach (var b in backends) unchanged[b] = await BackupPhaseAsync(b, Qcow2, "incremental, nothing changed", "b2", incremental[b], ct);

            var restore = new Dictionary<Backend, Measured>();
            var checks = new List<string>();
            var ok = true;
            foreach (var b in backends)
            {
                var target = Path.Combine(Work, $"restore-{backends.IndexOf(b)}.raw");
                restore[b] = await MeasureAsync(b, $"restore of the incremental ({b.Name})", async () =>
                {
                    await RestoreAsync(b.Repo, incremental[b].BackupId!, target, ct);
                    return new Measured(0, S3RequestCounts.Zero, false);
                }, ct);
                var diff = await FirstDifferenceAsync(target, Raw, ct);
                var line = diff is null ? $"OK: restore from the {b.Name} repository = the disk (byte compare with disk.raw)"
                    : $"DIFFERENT: restore from the {b.Name} repository differs from the disk at byte {diff}";
                ok &= diff is null;
                checks.Add(line);
                Log(line);
                File.Delete(target);
            }
            // The incrementals must have read exactly the chunks the change touched (the bitmap at chunk granularity).
            foreach (var b in backends)
                if (incremental[b].Stats!.ChunksRead != chunksTouched)
                {
                    ok = false;
                    checks.Add($"DIFFERENT: the incremental into the {b.Name} repository read {incremental[b].Stats!.ChunksRead} chunks, the change touched {chunksTouched}");
                }
            foreach (var b in backends)
                if (unchanged[b].Stats!.ChunksRead != 0)
                {
                    ok = false;
                    checks.Add($"DIFFERENT: the incremental with nothing changed into the {b.Name} repository read {unchanged[b].Stats!.ChunksRead} chunks");
                }

            var allocated = await AllocatedBytesAsync(Raw);
            var report = new ReportWriter(o, machine, startedAt, loadAtStart, Machine.LoadAverage(), _clock.Elapsed, ceph, settings, bucket, IsRoot && !o.Warm)
            {
                Image = image,
                RawAllocated = allocated,
                ChunkSize = chunkSize,
                BlocksChanged = blocks,
                ChunksTouched = chunksTouched,
                Local = local,
                S3 = s3,
                Init = init,
                Open = open,
                Full = full,
                Incremental = incremental,
                Unchanged = unchanged,
                Restore = restore,
                Checks = checks,
            }.Write();
            return (report, ok);
        }
        finally
        {
            foreach (var b in backends) await b.DisposeAsync();
            if (cephStart is not null)
            {
                try
                {
                    var ceph = await cephStart;
                    Log("stopping Ceph");
                    await ceph.StopAsync(o.Keep);
                }
                catch (Exception e) when (e is InvalidOperationException or OperationCanceledException) { }
            }
            else if (!o.Keep && backends.Count > 0) await EmptyBucketQuietlyAsync(backends);
            if (!o.Keep && Directory.Exists(Work)) Directory.Delete(Work, recursive: true);
        }
    }

    private async Task<Measured> BackupPhaseAsync(Backend b, string image, string phase, string? bitmap, Measured? previous, CancellationToken ct)
    {
        var m = await MeasureAsync(b, $"{phase} ({b.Name})", () => BackupAsync(b.Repo, image, bitmap, previous?.BackupId, ct), ct);
        // Untimed and uncounted: what the backup stored (its manifest's stats).
        var manifest = await b.Repo.ReadManifestAsync(m.BackupId!, ct);
        Log($"  read {m.Stats!.BytesRead >> 20} MiB in {m.Stats.ChunksRead} chunks, {manifest.Stats.ChunksNew} new chunks stored " +
            $"({manifest.Stats.StoredBytesNew / 1048576.0:F1} MiB), {m.Requests.Total} S3 requests");
        return m with { Manifest = manifest.Stats, DistinctChunks = manifest.Disks[0].Chunks.Where(c => c is not null).Distinct().Count() };
    }

    private async Task<Measured> MeasureAsync(Backend b, string what, Func<Task<Measured>> run, CancellationToken ct)
    {
        var cold = await DropCachesAsync(ct);
        Log(what);
        var before = b.Requests();
        var clock = Stopwatch.StartNew();
        var result = await run();
        var seconds = clock.Elapsed.TotalSeconds;
        var requests = b.Requests() - before;
        Log($"  {seconds:F2} s" + (b.S3 is null ? "" : $", {requests}"));
        return result with { Seconds = seconds, Requests = requests, Cold = cold };
    }

    /// <summary>
    /// What BackupService does for a VM that is off, minus the VM: qemu-nbd on the qcow2 (with the old bitmap
    /// for an incremental), chunk plan from allocation and dirty map, DiskBackup into a BackupWriter, commit.
    /// </summary>
    private async Task<Measured> BackupAsync(Repository.Repository repo, string image, string? bitmap, string? previousId, CancellationToken ct)
    {
        BackupManifest? previous = previousId is null ? null : await repo.ReadManifestAsync(previousId, ct);
        var socket = Path.Combine(Work, "backup.nbd");
        await using var server = await QemuNbdServer.StartAsync(image, DiskFormat.Qcow2, socket, Export, writable: false, bitmap: bitmap, ct: ct);
        var clients = new List<NbdClient>();
        try
        {
            var dirty = bitmap is null ? null : NbdMetaContexts.DirtyBitmap(bitmap);
            var contexts = dirty is null ? new List<string> { NbdMetaContexts.BaseAllocation } : [NbdMetaContexts.BaseAllocation, dirty];
            var first = await NbdClient.ConnectAsync(new NbdEndpoint.Unix(socket), Export, contexts, ct);
            clients.Add(first);
            if (first.CanMultiConn) clients.Add(await NbdClient.ConnectAsync(new NbdEndpoint.Unix(socket), Export, [], ct));
            var plan = await ChunkPlan.BuildAsync(first, repo.ChunkSize, dirty, ct);
            var stats = new BackupStats();
            string id;
            await using (var writer = await repo.BeginBackupAsync(Environment.MachineName, ct))
            {
                var index = await DiskBackup.RunAsync(writer, clients, plan, previous?.Disks[0].Chunks, stats, null, ct);
                id = await writer.CommitAsync(new BackupManifest
                {
                    VmName = "bench",
                    HostName = Environment.MachineName,
                    CreatedAt = DateTimeOffset.UtcNow,
                    ParentBackupId = previousId,
                    Mode = previous is null ? "full" : "incremental",
                    Consistency = "CrashConsistent",
                    Disks = [new DiskManifest { Name = "disk0", SizeBytes = first.ExportSize, ChunkSize = repo.ChunkSize, Chunks = index }],
                }, ct);
            }
            return new Measured(0, S3RequestCounts.Zero, false) { Stats = stats, BackupId = id };
        }
        finally
        {
            foreach (var c in clients) await c.DisposeAsync();
        }
    }

    /// <summary>What RestoreService does for a raw target: a new sparse file, written directly.</summary>
    private static async Task RestoreAsync(Repository.Repository repo, string backupId, string path, CancellationToken ct)
    {
        var manifest = await repo.ReadManifestAsync(backupId, ct);
        var disk = manifest.Disks[0];
        using var file = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, FileOptions.Asynchronous);
        RandomAccess.SetLength(file, disk.SizeBytes);
        await DiskRestore.RunAsync(repo, disk.Chunks, disk.ChunkSize, disk.SizeBytes, new RawFileBlockTarget(file), targetIsZeroed: true, null, ct);
    }

    /// <summary>
    /// 1% of the disk's 64 KiB blocks, at random (as Haven.Bench chooses them), each filled with its own
    /// pattern byte: through qemu-nbd into the qcow2 (so its enabled bitmaps record them) and into disk.raw.
    /// </summary>
    private async Task<(int Blocks, int Chunks)> ChangeAsync(int chunkSize, CancellationToken ct)
    {
        var blocks = o.Size / Block;
        var count = (int)Math.Ceiling(blocks / 100.0);
        var rng = new Xoshiro(o.Seed ^ 0xC0FFEE);
        var chosen = new SortedSet<long>();
        while (chosen.Count < count) chosen.Add((long)rng.Below((ulong)blocks));
        Log($"changing {count} of {blocks} 64 KiB blocks (qemu-nbd into the qcow2, and disk.raw)");
        var socket = Path.Combine(Work, "change.nbd");
        await using (var server = await QemuNbdServer.StartAsync(Qcow2, DiskFormat.Qcow2, socket, Export, writable: true, ct: ct))
        await using (var client = await NbdClient.ConnectAsync(new NbdEndpoint.Unix(socket), Export, [], ct))
        using (var raw = File.OpenHandle(Raw, FileMode.Open, FileAccess.ReadWrite))
        {
            var buffer = new byte[Block];
            var i = 0;
            foreach (var block in chosen)
            {
                var pattern = (byte)(1 + i++ % 255);
                Array.Fill(buffer, pattern);
                await client.WriteAsync(block * Block, buffer, ct);
                RandomAccess.Write(raw, buffer, block * Block);
            }
            await client.FlushAsync(ct);
            RandomAccess.FlushToDisk(raw);
        }
        var bitmaps = await DirtyBitmaps.ListOfflineAsync(Qcow2, ct);
        if (bitmaps.Find(b => b.Name == "b1") is not { Inconsistent: false })
            throw new InvalidOperationException("bitmap b1 is missing or inconsistent after the change (qemu-nbd did not close the image cleanly)");
        return (count, chosen.Select(b => b * Block / chunkSize).Distinct().Count());
    }

    /// <summary>
    /// A freshly started process has not JIT-compiled the backup path (nor the S3 client's): a 64 MiB disk is
    /// backed up and restored once per backend, into scratch repositories, before anything is measured.
    /// </summary>
    private async Task WarmUpAsync(S3Settings settings, string bucket, ChunkIndexCache cache, CancellationToken ct)
    {
        Log("warm-up: full backup and restore of a 64 MiB disk into scratch repositories (not measured)");
        var raw = Path.Combine(Work, "warmup.raw");
        var qcow2 = Path.Combine(Work, "warmup.qcow2");
        DiskImage.Plan(64L << 20, o.Seed + 1).Write(raw);
        await QemuImg.ConvertAsync(raw, DiskFormat.Raw, qcow2, DiskFormat.Qcow2, ct);
        var folder = Path.Combine(Work, "warmup-local");
        Directory.CreateDirectory(folder);
        await using var local = new Backend("warm-up local", new LocalDirectoryStore(folder));
        await using var s3 = new Backend("warm-up S3", new S3ObjectStore(new S3Location(bucket, "warmup"), settings));
        foreach (var b in new[] { local, s3 })
        {
            await (await Repository.Repository.InitAsync(b.Store, Passphrase, null, ct)).DisposeAsync();
            b.Repo = await Repository.Repository.OpenAsync(b.Store, Passphrase, cache, ct);
            var m = await BackupAsync(b.Repo, qcow2, null, null, ct);
            var target = Path.Combine(Work, "warmup-restore.raw");
            await RestoreAsync(b.Repo, m.BackupId!, target, ct);
            File.Delete(target);
        }
        Directory.Delete(folder, recursive: true);
        File.Delete(raw);
        File.Delete(qcow2);
    }

    private async Task<bool> DropCachesAsync(CancellationToken ct)
    {
        if (o.Warm || !IsRoot) return false;
        using (var sync = Process.Start("sync")!) await sync.WaitForExitAsync(ct);
        await File.WriteAllTextAsync("/proc/sys/vm/drop_caches", "3", ct);
        return true;
    }

    /// <summary>Byte offset of the first difference, or null when equal (length included).</summary>
    private static async Task<long?> FirstDifferenceAsync(string a, string b, CancellationToken ct)
    {
        const int size = 4 << 20;
        using var fa = File.OpenHandle(a);
        using var fb = File.OpenHandle(b);
        var la = RandomAccess.GetLength(fa);
        var lb = RandomAccess.GetLength(fb);
        var ba = ArrayPool<byte>.Shared.Rent(size);
        var bb = ArrayPool<byte>.Shared.Rent(size);
        try
        {
            for (long offset = 0; offset < Math.Min(la, lb); offset += size)
            {
                var n = (int)Math.Min(size, Math.Min(la, lb) - offset);
                await ReadExactlyAsync(fa, ba.AsMemory(0, n), offset, ct);
                await ReadExactlyAsync(fb, bb.AsMemory(0, n), offset, ct);
                var at = ba.AsSpan(0, n).CommonPrefixLength(bb.AsSpan(0, n));
                if (at < n) return offset + at;
            }
            return la == lb ? null : Math.Min(la, lb);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(ba);
            ArrayPool<byte>.Shared.Return(bb);
        }
    }

    private static async Task ReadExactlyAsync(Microsoft.Win32.SafeHandles.SafeFileHandle file, Memory<byte> into, long offset, CancellationToken ct)
    {
        var done = 0;
        while (done < into.Length)
        {
            var n = await RandomAccess.ReadAsync(file, into[done..], offset + done, ct);
            if (n == 0) throw new EndOfStreamException();
            done += n;
        }
    }

    private static async Task<long> AllocatedBytesAsync(string path)
    {
        using var p = Process.Start(new ProcessStartInfo("du", ["-B1", path]) { RedirectStandardOutput = true })!;
        var text = await p.StandardOutput.ReadToEndAsync();
        await p.WaitForExitAsync();
        return long.TryParse(text.Split('\t')[0], out var n) ? n : -1;
    }

    /// <summary>Given endpoint (not our own Ceph): delete what the benchmark wrote; the bucket itself stays.</summary>
    private async Task EmptyBucketQuietlyAsync(List<Backend> backends)
    {
        if (backends.Find(b => b.S3 is not null)?.S3 is not { } s3) return;
        try
        {
            Log($"deleting the benchmark's objects in {s3.Location.Bucket}");
            using var all = new S3ObjectStore(new S3Location(s3.Location.Bucket, ""), new S3Settings
            {
                Endpoint = o.S3Endpoint, AccessKeyId = o.S3AccessKey, SecretAccessKey = o.S3SecretKey, Region = o.S3Region,
            });
            var keys = new List<string>();
            foreach (var prefix in new[] { "repo/", "warmup/" })
                await foreach (var info in all.ListAsync(prefix)) keys.Add(info.Key);
            await Parallel.ForEachAsync(keys, new ParallelOptions { MaxDegreeOfParallelism = 16 }, async (k, c) => await all.DeleteAsync(k, c));
        }
        catch (StoreException e) { Log("  could not empty the bucket: " + e.Message); }
    }
}
