using System.Diagnostics;
using System.Security.Cryptography;
using Haven.Repository;
using Haven.Storage;

// Stopwatch benchmark of the chunk write path as BackupWriter runs it per chunk:
// ComputeId (keyed BLAKE3) + id re-check + zstd (level 1) + AES-256-GCM, on one thread, no I/O.
// Also the read path (decrypt + decompress + id check). Usage:
//   dotnet run -c Release --project bench/Haven.Bench.Chunking [seconds-per-case]
var seconds = args.Length > 0 ? double.Parse(args[0], System.Globalization.CultureInfo.InvariantCulture) : 2.0;
var dir = Directory.CreateTempSubdirectory("hvbench");
try
{
    Console.WriteLine($"{Environment.ProcessorCount} cores, {System.Runtime.InteropServices.RuntimeInformation.OSArchitecture}, .NET {Environment.Version}, AES-NI {System.Runtime.Intrinsics.X86.Aes.IsSupported}");
    Console.WriteLine($"{"chunk",-8} {"data",-13} {"id only MiB/s",14} {"write path MiB/s",17} {"ms/MiB",7} {"stored/plain",13} {"read path MiB/s",16}");
    foreach (var size in new[] { 64 << 10, 1 << 20, 4 << 20 })
    {
        await using var repo = await Repository.InitAsync(new LocalDirectoryStore(Path.Combine(dir.FullName, size.ToString())), "bench",
            new RepositoryOptions { ChunkSize = size, Kdf = RepositoryKdf.Cheapest });
        foreach (var (name, make) in new (string, Func<int, byte[]>)[] { ("random", RandomData), ("compressible", DiskLikeData) })
        {
            // Several distinct chunks so caches do not flatter the numbers.
            var chunks = Enumerable.Range(0, Math.Max(4, (64 << 20) / size)).Select(_ => make(size)).ToArray();
            var ids = chunks.Select(c => repo.ComputeId(c)).ToArray();
            var output = new byte[size + 64];
            var plain = new byte[size];

            var idRate = Measure(seconds, size, i => repo.ComputeId(chunks[i % chunks.Length]));
            long stored = 0, plainBytes = 0;
            var writeRate = Measure(seconds, size, i =>
            {
                var c = chunks[i % chunks.Length];
                var id = repo.ComputeId(c);
                if (repo.ComputeId(c) != id) throw new InvalidOperationException();
                stored += repo.SealChunk(id, c, output);
                plainBytes += c.Length;
            });
            var sealedChunks = chunks.Select((c, i) => { var o = new byte[size + 64]; var n = repo.SealChunk(ids[i], c, o); return o[..n]; }).ToArray();
            var scratch = new byte[size + 64];
            var readRate = Measure(seconds, size, i =>
            {
                var s = sealedChunks[i % sealedChunks.Length];
                s.CopyTo(scratch, 0);
                repo.OpenChunk(ids[i % ids.Length], scratch.AsSpan(0, s.Length), plain);
            });
            Console.WriteLine($"{size / 1024 + " KiB",-8} {name,-13} {idRate,14:F0} {writeRate,17:F0} {1000 / writeRate,7:F2} {(double)stored / plainBytes,13:P1} {readRate,16:F0}");
        }
    }
}
finally { dir.Delete(recursive: true); }

static double Measure(double seconds, int size, Action<int> op)
{
    for (var i = 0; i < 3; i++) op(i); // warm up
    var sw = Stopwatch.StartNew();
    var n = 0;
    while (sw.Elapsed.TotalSeconds < seconds) op(n++);
    return (double)n * size / (1 << 20) / sw.Elapsed.TotalSeconds;
}

static byte[] RandomData(int size) => RandomNumberGenerator.GetBytes(size);

// Roughly what a used VM disk looks like: half text-like (logs, configs, binaries compress ~3:1),
// a quarter random (already-compressed files), a quarter zero runs inside allocated blocks.
static byte[] DiskLikeData(int size)
{
    var data = new byte[size];
    var rng = new Random(size ^ Environment.TickCount);
    var words = "kernel systemd usr lib x86_64 linux gnu config error warning info debug the and of to in is var log cache"
        .Split(' ');
    for (var block = 0; block < size; block += 4096)
    {
        var kind = rng.Next(4);
        var span = data.AsSpan(block, Math.Min(4096, size - block));
        if (kind == 0) rng.NextBytes(span);
        else if (kind == 1) span.Clear();
        else
        {
            var pos = 0;
            while (pos < span.Length)
            {
                var w = System.Text.Encoding.ASCII.GetBytes(words[rng.Next(words.Length)] + (rng.Next(8) == 0 ? "\n" : " ") + rng.Next(1000));
                var n = Math.Min(w.Length, span.Length - pos);
                w.AsSpan(0, n).CopyTo(span[pos..]);
                pos += n;
            }
        }
    }
    if (data.AsSpan().IndexOfAnyExcept((byte)0) < 0) data[0] = 1;
    return data;
}
