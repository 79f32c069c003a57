using System.Buffers.Binary;
using System.Text;

namespace Haven.Bench;

public enum RegionKind { Hole, Random, Text, Duplicate }

/// <summary>
/// The benchmark disk: a sparse raw file cut into 4 MiB regions, each incompressible (random bytes),
/// compressible (log-like text), a duplicate of an earlier random region, or never written (a hole).
/// Everything derives from one seed, so every run builds the same bytes.
/// </summary>
public sealed class DiskImage
{
    public const int RegionSize = 4 << 20;
    public const double RandomShare = 0.30, TextShare = 0.25, DuplicateShare = 0.10;

    private DiskImage(long size, ulong seed, RegionKind[] kinds, int[] sourceOf)
    {
        Size = size;
        Seed = seed;
        Kinds = kinds;
        SourceOf = sourceOf;
    }

    public long Size { get; }
    public ulong Seed { get; }
    public RegionKind[] Kinds { get; }
    /// <summary>For a duplicate region, the random region it copies; -1 otherwise.</summary>
    public int[] SourceOf { get; }

    public long BytesOf(RegionKind kind) => (long)Kinds.Count(k => k == kind) * RegionSize;

    public static DiskImage Plan(long size, ulong seed)
    {
        var n = (int)(size / RegionSize);
        var kinds = new RegionKind[n];
        int random = (int)Math.Round(n * RandomShare), text = (int)Math.Round(n * TextShare), dup = (int)Math.Round(n * DuplicateShare);
        for (var i = 0; i < n; i++)
            kinds[i] = i < random ? RegionKind.Random : i < random + text ? RegionKind.Text : i < random + text + dup ? RegionKind.Duplicate : RegionKind.Hole;
        var rng = new Xoshiro(seed);
        for (var i = n - 1; i > 0; i--)
        {
            var j = (int)rng.Below((ulong)i + 1);
            (kinds[i], kinds[j]) = (kinds[j], kinds[i]);
        }
        // Region 0 stays a hole: the VM's BIOS reads the first sector, and no boot signature is best.
        var firstHole = Array.IndexOf(kinds, RegionKind.Hole);
        if (firstHole > 0) (kinds[0], kinds[firstHole]) = (kinds[firstHole], kinds[0]);
        // A duplicate copies a random region placed before it; one with none before it becomes random
        // and the first random region after it takes its place as a duplicate.
        for (var i = 0; i < n; i++)
        {
            if (kinds[i] != RegionKind.Duplicate || Array.IndexOf(kinds, RegionKind.Random, 0, i) >= 0) continue;
            var later = Array.IndexOf(kinds, RegionKind.Random, i);
            kinds[i] = RegionKind.Random;
            if (later >= 0) kinds[later] = RegionKind.Duplicate;
        }
        var sourceOf = new int[n];
        for (var i = 0; i < n; i++)
        {
            sourceOf[i] = -1;
            if (kinds[i] != RegionKind.Duplicate) continue;
            var earlier = Enumerable.Range(0, i).Where(r => kinds[r] == RegionKind.Random).ToArray();
            sourceOf[i] = earlier[(int)rng.Below((ulong)earlier.Length)];
        }
        return new DiskImage(size, seed, kinds, sourceOf);
    }

    /// <summary>Writes the image as a sparse raw file (holes are never written).</summary>
    public void Write(string path)
    {
        using var f = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20);
        f.SetLength(Size);
        var buffer = new byte[RegionSize];
        for (var i = 0; i < Kinds.Length; i++)
        {
            switch (Kinds[i])
            {
                case RegionKind.Hole: continue;
                case RegionKind.Random: FillRandom(buffer, Seed, i); break;
                case RegionKind.Duplicate: FillRandom(buffer, Seed, SourceOf[i]); break;
                case RegionKind.Text: FillText(buffer, Seed, i); break;
            }
            f.Position = (long)i * RegionSize;
            f.Write(buffer);
        }
        f.Flush(flushToDisk: true);
    }

    private static void FillRandom(byte[] buffer, ulong seed, int region)
    {
        var rng = new Xoshiro(seed * 0x9E3779B97F4A7C15UL + (ulong)region + 1);
        var span = buffer.AsSpan();
        for (var o = 0; o + 8 <= span.Length; o += 8) BinaryPrimitives.WriteUInt64LittleEndian(span[o..], rng.Next());
    }

    private static readonly string[] Hosts = ["web-01", "web-02", "db-01", "cache-01", "worker-03"];
    private static readonly string[] Services = ["nginx", "postgres", "systemd", "kernel", "sshd", "cron", "app", "redis"];
    private static readonly string[] Levels = ["INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"];
    private static readonly string[] Words =
    [
        "request", "completed", "started", "connection", "from", "user", "session", "opened", "closed", "for", "the", "in",
        "query", "took", "ms", "rows", "returned", "cache", "hit", "miss", "key", "timeout", "retry", "after", "error",
        "upstream", "response", "status", "bytes", "sent", "checkpoint", "complete", "wrote", "buffers", "vacuum", "table",
        "index", "scan", "worker", "job", "queued", "finished", "disk", "usage", "memory", "pressure", "reload", "config",
        "accepted", "publickey", "port", "ssh2", "link", "up", "down", "eth0", "mounted", "filesystem", "read-only", "ok",
    ];
    private static readonly string[] Paths = ["/api/v1/items", "/api/v1/users", "/static/app.js", "/index.html", "/healthz", "/api/v2/orders"];

    /// <summary>Log-like lines from a small vocabulary with numbers: compresses about 3-5x with zstd.</summary>
    private static void FillText(byte[] buffer, ulong seed, int region)
    {
        var rng = new Xoshiro(seed * 0xD1B54A32D192ED03UL + (ulong)region + 7);
        var time = new DateTime(2024, 1, 1, 0, 0, 0, DateTimeKind.Utc).AddSeconds(region * 3600.0);
        var sb = new StringBuilder(512);
        var pos = 0;
        while (pos < buffer.Length)
        {
            sb.Clear();
            time = time.AddMilliseconds(rng.Below(2000));
            sb.Append(time.ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z' ", System.Globalization.CultureInfo.InvariantCulture));
            sb.Append(Pick(rng, Hosts)).Append(' ').Append(Pick(rng, Services)).Append('[').Append(1000 + rng.Below(30000)).Append("]: ");
            sb.Append(Pick(rng, Levels)).Append(' ');
            if (rng.Below(3) == 0)
                sb.Append("GET ").Append(Pick(rng, Paths)).Append('/').Append(rng.Below(100000)).Append(' ')
                  .Append(rng.Below(10) == 0 ? 404 : 200).Append(' ').Append(rng.Below(65536)).Append(" \"Mozilla/5.0\" ").Append(rng.Below(900)).Append("ms");
            else
            {
                var words = 4 + (int)rng.Below(9);
                for (var w = 0; w < words; w++)
                {
                    if (w > 0) sb.Append(' ');
                    if (rng.Below(6) == 0) sb.Append(rng.Below(100000));
                    else sb.Append(Pick(rng, Words));
                }
            }
            sb.Append('\n');
            var line = Encoding.ASCII.GetBytes(sb.ToString());
            var n = Math.Min(line.Length, buffer.Length - pos);
            line.AsSpan(0, n).CopyTo(buffer.AsSpan(pos));
            pos += n;
        }
    }

    private static string Pick(Xoshiro rng, string[] from) => from[rng.Below((ulong)from.Length)];
}

/// <summary>xoshiro256** seeded through splitmix64: fast, and the same bytes on every .NET version.</summary>
public sealed class Xoshiro
{
    private ulong _s0, _s1, _s2, _s3;

    public Xoshiro(ulong seed)
    {
        _s0 = SplitMix(ref seed); _s1 = SplitMix(ref seed); _s2 = SplitMix(ref seed); _s3 = SplitMix(ref seed);
    }

    private static ulong SplitMix(ref ulong x)
    {
        var z = x += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    public ulong Next()
    {
        var result = ulong.RotateLeft(_s1 * 5, 7) * 9;
        var t = _s1 << 17;
        _s2 ^= _s0; _s3 ^= _s1; _s1 ^= _s2; _s0 ^= _s3;
        _s2 ^= t;
        _s3 = ulong.RotateLeft(_s3, 45);
        return result;
    }

    /// <summary>Uniform in [0, bound) (the modulo bias is irrelevant for bounds this small).</summary>
    public ulong Below(ulong bound) => Next() % bound;
}
