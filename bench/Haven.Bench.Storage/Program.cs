using System.Globalization;
using Haven.Bench.Storage;

// Storage benchmark: Haven's backup engine in process (qemu-nbd → DiskBackup → BackupWriter, DiskRestore →
// raw file), into a local-folder repository and into an S3 repository on Ceph RGW, on the same disk.
// Full backup, 1% of 64 KiB blocks changed, incremental, incremental with nothing changed, restore.
// Also the S3 requests of every phase, by kind. bench/README.md describes the method.
//   dotnet bench/Haven.Bench.Storage/bin/Release/net10.0/Haven.Bench.Storage.dll [--size 1G] [--dir /tmp/haven-bench-storage]
//       [--seed 42] [--warm] [--keep] [--no-warmup] [--s3-endpoint URL --s3-access-key K --s3-secret-key S [--s3-region R] [--bucket B]]
//       [--command "what to print as the command"]

CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;

Options o;
try { o = Options.Parse(args); }
catch (ArgumentException e)
{
    Console.Error.WriteLine("haven-bench-storage: " + e.Message);
    Console.Error.WriteLine("usage: Haven.Bench.Storage [--size 1G] [--dir DIR] [--seed N] [--warm] [--keep] [--no-warmup] " +
        "[--s3-endpoint URL --s3-access-key K --s3-secret-key S [--s3-region R] [--bucket NAME]] [--command TEXT]");
    return 2;
}

using var cancel = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) => { e.Cancel = true; cancel.Cancel(); }; // let the finally blocks stop Ceph and qemu-nbd
try
{
    var (report, ok) = await new StorageBench(o).RunAsync(cancel.Token);
    var reportPath = Path.Combine(o.Dir, "report.md");
    await File.WriteAllTextAsync(reportPath, report);
    Console.WriteLine(report);
    Console.Error.WriteLine($"haven-bench-storage: report saved to {reportPath}");
    return ok ? 0 : 1;
}
catch (Exception e)
{
    Console.Error.WriteLine("haven-bench-storage: FAILED: " + e);
    return 1;
}

namespace Haven.Bench.Storage
{
    public sealed record Options(long Size, string Dir, string RepoRoot, ulong Seed, bool Warm, bool Keep, bool WarmUp,
        string? S3Endpoint, string? S3AccessKey, string? S3SecretKey, string? S3Region, string? Bucket, string Command)
    {
        public static Options Parse(string[] args)
        {
            long size = 1L << 30;
            var dir = "/tmp/haven-bench-storage";
            string? command = null, endpoint = null, accessKey = null, secretKey = null, region = null, bucket = null;
            ulong seed = 42;
            bool warm = false, keep = false, warmUp = true;
            for (var i = 0; i < args.Length; i++)
            {
                string Value() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
                switch (args[i])
                {
                    case "--size": size = ParseSize(Value()); break;
                    case "--dir": dir = Value(); break;
                    case "--seed": seed = ulong.Parse(Value(), CultureInfo.InvariantCulture); break;
                    case "--warm": warm = true; break;
                    case "--keep": keep = true; break;
                    case "--no-warmup": warmUp = false; break;
                    case "--s3-endpoint": endpoint = Value(); break;
                    case "--s3-access-key": accessKey = Value(); break;
                    case "--s3-secret-key": secretKey = Value(); break;
                    case "--s3-region": region = Value(); break;
                    case "--bucket": bucket = Value(); break;
                    case "--command": command = Value(); break;
                    default: throw new ArgumentException($"unknown argument {args[i]}");
                }
            }
            if (size < 64L << 20 || size % DiskImage.RegionSize != 0) throw new ArgumentException("--size must be at least 64M and a multiple of 4M");
            if (endpoint is null && (accessKey ?? secretKey ?? region ?? bucket) is not null)
                throw new ArgumentException("--s3-access-key, --s3-secret-key, --s3-region and --bucket need --s3-endpoint (without it the benchmark starts its own Ceph RGW)");
            command ??= "dotnet bench/Haven.Bench.Storage/bin/Release/net10.0/Haven.Bench.Storage.dll " + string.Join(' ', args);
            return new Options(size, Path.GetFullPath(dir), FindRepoRoot(), seed, warm, keep, warmUp, endpoint, accessKey, secretKey, region, bucket, command);
        }

        private static long ParseSize(string s)
        {
            var unit = char.ToUpperInvariant(s[^1]);
            var mult = unit switch { 'K' => 1L << 10, 'M' => 1L << 20, 'G' => 1L << 30, 'T' => 1L << 40, _ => 1L };
            var number = mult == 1 ? s : s[..^1];
            return checked(long.Parse(number, CultureInfo.InvariantCulture) * mult);
        }

        private static string FindRepoRoot()
        {
            for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
                if (File.Exists(Path.Combine(d.FullName, "Haven.slnx"))) return d.FullName;
            for (var d = new DirectoryInfo(Environment.CurrentDirectory); d is not null; d = d.Parent)
                if (File.Exists(Path.Combine(d.FullName, "Haven.slnx"))) return d.FullName;
            throw new ArgumentException("cannot find the Haven repository (Haven.slnx) above the benchmark or the current folder");
        }
    }
}
