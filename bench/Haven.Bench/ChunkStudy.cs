using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using Haven.Repository;
using Haven.Storage;

namespace Haven.Bench;

/// <summary>
/// How the chunk size trades a full backup against an incremental under scattered random churn: the benchmark's
/// disk and change (1% of the 64 KiB blocks, random bytes), backed up in process (Haven's chunk path and a local
/// folder repository, no VM, no NBD) with each chunk size. Run: <c>Haven.Bench.dll --chunk-study [--size 1G] [--dir D]</c>.
/// </summary>
public static class ChunkStudy
{
    private const int Block = 64 << 10;
    private static readonly int[] Sizes = [64 << 10, 256 << 10, 1 << 20, 4 << 20];

    public static async Task<string> RunAsync(long size, string dir, ulong seed, Action<string> log)
    {
        Directory.CreateDirectory(dir);
        var before = Path.Combine(dir, "study.raw");
        var after = Path.Combine(dir, "study-changed.raw");
        DiskImage.Plan(size, seed).Write(before);
        await Exec.RunAsync("cp", ["--sparse=always", before, after]);
        // The benchmark's change: the same blocks (same seed), random bytes.
        var blocks = size / Block;
        var rng = new Xoshiro(seed ^ 0xC0FFEE);
        var chosen = new SortedSet<long>();
        while (chosen.Count < (int)Math.Ceiling(blocks / 100.0)) chosen.Add((long)rng.Below((ulong)blocks));
        var bytes = new Xoshiro(seed ^ 0xB10C5);
        var buffer = new byte[Block];
        using (var f = File.OpenHandle(after, FileMode.Open, FileAccess.ReadWrite))
            foreach (var b in chosen)
            {
                for (var k = 0; k < Block; k += 8) BinaryPrimitives.WriteUInt64LittleEndian(buffer.AsSpan(k), bytes.Next());
                RandomAccess.Write(f, buffer, b * Block);
            }

        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"Chunk size study: {size >> 20} MiB benchmark disk (seed {seed}), {chosen.Count} random 64 KiB blocks changed (1%); in process, {Environment.ProcessorCount} workers, local folder repository, page cache dropped before each phase when root.\n\n");
        sb.Append("| chunk size | full s | full CPU s | chunk objects | incremental: chunks read | MiB read and sealed | incremental s | incremental CPU s | stored by the incremental MiB |\n");
        sb.Append("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
        // JIT warm-up (not reported), so the first row does not pay for compiling the chunk path.
        await using (var scratch = await Repository.Repository.InitAsync(new LocalDirectoryStore(Path.Combine(dir, "study-warmup")), "study",
            new RepositoryOptions { ChunkSize = 64 << 10, Kdf = RepositoryKdf.Cheapest }))
            await BackupAsync(scratch, before, size, Enumerable.Range(0, Math.Min(2048, (int)(size >> 16))).ToList(), new ChunkId?[(int)DiskManifest.ChunkCount(size, 64 << 10)]);
        Directory.Delete(Path.Combine(dir, "study-warmup"), recursive: true);
        foreach (var chunkSize in Sizes)
        {
            var repoDir = Path.Combine(dir, $"study-repo-{chunkSize >> 10}k");
            if (Directory.Exists(repoDir)) Directory.Delete(repoDir, recursive: true);
            await using var repo = await Repository.Repository.InitAsync(new LocalDirectoryStore(repoDir), "study",
                new RepositoryOptions { ChunkSize = chunkSize, Kdf = RepositoryKdf.Cheapest });
            var count = (int)DiskManifest.ChunkCount(size, chunkSize);
            await Exec.DropCachesAsync();
            var (full, fullWall, fullCpu) = await BackupAsync(repo, before, size, Enumerable.Range(0, count).ToList(), new ChunkId?[count]);
            var objects = Directory.GetFiles(Path.Combine(repoDir, "chunks"), "*", SearchOption.AllDirectories).Length;
            var storedBefore = await Exec.DiskUsageAsync(repoDir);
            var touched = chosen.Select(b => (int)(b * Block / chunkSize)).Distinct().ToList();
            await Exec.DropCachesAsync();
            var (_, incWall, incCpu) = await BackupAsync(repo, after, size, touched, (ChunkId?[])full.Clone());
            var storedAfter = await Exec.DiskUsageAsync(repoDir);
            log($"chunk size {chunkSize >> 10} KiB: full {fullWall:F2} s, incremental {incWall:F2} s ({touched.Count} chunks)");
            sb.Append(CultureInfo.InvariantCulture, $"| {chunkSize >> 10} KiB | {fullWall:F2} | {fullCpu:F2} | {objects} | {touched.Count} | {(long)touched.Count * chunkSize >> 20} | {incWall:F2} | {incCpu:F2} | {(storedAfter - storedBefore) / (double)(1 << 20):F0} |\n");
            Directory.Delete(repoDir, recursive: true);
        }
        File.Delete(before);
        File.Delete(after);
        return sb.ToString();
    }

    /// <summary>Reads the given chunks, stores them (batched) and commits: what DiskBackup does, minus NBD.</summary>
    private static async Task<(ChunkId?[] Index, double Wall, double Cpu)> BackupAsync(Repository.Repository repo, string path, long size, List<int> chunks, ChunkId?[] index)
    {
        var chunkSize = repo.ChunkSize;
        var cpu = Process.GetCurrentProcess().TotalProcessorTime;
        var sw = Stopwatch.StartNew();
        using var file = File.OpenHandle(path);
        await using var writer = await repo.BeginBackupAsync("study");
        var next = -1;
        var workers = new Task[Environment.ProcessorCount];
        for (var w = 0; w < workers.Length; w++)
            workers[w] = Task.Run(async () =>
            {
                var buffer = ArrayPool<byte>.Shared.Rent(chunkSize);
                try
                {
                    int n;
                    while ((n = Interlocked.Increment(ref next)) < chunks.Count)
                    {
                        var i = chunks[n];
                        var length = (int)Math.Min(chunkSize, size - (long)i * chunkSize);
                        RandomAccess.Read(file, buffer.AsSpan(0, length), (long)i * chunkSize);
                        index[i] = buffer.AsSpan(0, length).IndexOfAnyExcept((byte)0) < 0 ? null : (await writer.PutChunkAsync(buffer.AsMemory(0, length))).Id;
                    }
                }
                finally { ArrayPool<byte>.Shared.Return(buffer); }
            });
        await Task.WhenAll(workers);
        await writer.CommitAsync(new BackupManifest
        {
            VmName = "study",
            Disks = [new DiskManifest { Name = "disk0", SizeBytes = size, ChunkSize = chunkSize, Chunks = index }],
            CreatedAt = DateTimeOffset.UtcNow,
        });
        return (index, sw.Elapsed.TotalSeconds, (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds);
    }
}
