using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using Haven.Api;
using Haven.Bench;
using Haven.Qemu.Qmp;

// End-to-end backup benchmark: Haven (through havend, live VM) against restic and borgbackup backing up
// the same disk as a file. Full backup, 1% of blocks changed, incremental, restore. bench/README.md.
//   dotnet bench/Haven.Bench/bin/Release/net10.0/Haven.Bench.dll [--size 2G] [--dir /tmp/haven-bench]
//       [--havend path/to/havend.dll] [--seed 42] [--warm] [--keep] [--cold-daemon] [--churn random|constant] [--command "what to print as the command"]

CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;

if (args.Length > 0 && args[0] == "--chunk-study")
{
    long studySize = 1L << 30;
    var studyDir = "/tmp/haven-chunk-study";
    for (var i = 1; i + 1 < args.Length; i += 2)
    {
        if (args[i] == "--size") studySize = long.Parse(args[i + 1].TrimEnd('M', 'm'), CultureInfo.InvariantCulture) << 20;
        else if (args[i] == "--dir") studyDir = args[i + 1];
    }
    Console.WriteLine(await ChunkStudy.RunAsync(studySize, studyDir, 42, m => Console.Error.WriteLine(m)));
    return 0;
}

Options o;
try { o = Options.Parse(args); }
catch (ArgumentException e)
{
    Console.Error.WriteLine("haven-bench: " + e.Message);
    Console.Error.WriteLine("usage: Haven.Bench [--size 2G] [--dir /tmp/haven-bench] [--havend havend.dll] [--seed N] [--warm] [--keep] [--cold-daemon] [--churn random|constant] [--command TEXT]");
    return 2;
}

try
{
    var bench = new Bench(o);
    var (report, ok) = await bench.RunAsync();
    var reportPath = Path.Combine(o.Dir, "report.md");
    await File.WriteAllTextAsync(reportPath, report);
    Console.WriteLine(report);
    Console.Error.WriteLine($"haven-bench: report saved to {reportPath}");
    return ok ? 0 : 1;
}
catch (Exception e)
{
    Console.Error.WriteLine("haven-bench: FAILED: " + e);
    return 1;
}

namespace Haven.Bench
{
    /// <summary>What a changed 64 KiB block is rewritten with: random bytes (what real writes look like) or one pattern byte per block.</summary>
    public enum Churn { Random, Constant }

    public sealed record Options(long Size, string Dir, string Havend, string RepoRoot, ulong Seed, bool Warm, bool Keep, bool ColdDaemon, Churn Churn, string Command)
    {
        public static Options Parse(string[] args)
        {
            long size = 2L << 30;
            string dir = "/tmp/haven-bench";
            string? havend = null, command = null;
            ulong seed = 42;
            bool warm = false, keep = false, coldDaemon = false;
            var churn = Churn.Random;
            for (var i = 0; i < args.Length; i++)
            {
                string Value() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
                switch (args[i])
                {
                    case "--size": size = ParseSize(Value()); break;
                    case "--dir": dir = Value(); break;
                    case "--havend": havend = Value(); break;
                    case "--seed": seed = ulong.Parse(Value(), CultureInfo.InvariantCulture); break;
                    case "--warm": warm = true; break;
                    case "--keep": keep = true; break;
                    case "--cold-daemon": coldDaemon = true; break;
                    case "--churn":
                        churn = Value() switch
                        {
                            "random" => Churn.Random,
                            "constant" => Churn.Constant,
                            var v => throw new ArgumentException($"--churn is random or constant, not {v}"),
                        };
                        break;
                    case "--command": command = Value(); break;
                    default: throw new ArgumentException($"unknown argument {args[i]}");
                }
            }
            if (size < 64L << 20 || size % (1 << 20) != 0) throw new ArgumentException("--size must be at least 64M and a whole number of MiB");
            var root = FindRepoRoot();
            havend ??= Path.Combine(root, "src/Haven.Daemon/bin/Release/net10.0/havend.dll");
            if (!File.Exists(havend)) throw new ArgumentException($"havend not found at {havend} (build with: dotnet build Haven.slnx -c Release)");
            command ??= "dotnet bench/Haven.Bench/bin/Release/net10.0/Haven.Bench.dll " + string.Join(' ', args);
            return new Options(size, Path.GetFullPath(dir), Path.GetFullPath(havend), root, seed, warm, keep, coldDaemon, churn, command);
        }

        private static long ParseSize(string s)
        {
            var unit = char.ToUpperInvariant(s[^1]);
            var mult = unit switch { 'K' => 1L << 10, 'M' => 1L << 20, 'G' => 1L << 30, 'T' => 1L << 40, _ => 1L };
            var number = mult == 1 ? s : s[..^1];
            return checked((long)(double.Parse(number, CultureInfo.InvariantCulture) * mult));
        }

        private static string FindRepoRoot()
        {
            for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
                if (File.Exists(Path.Combine(d.FullName, "Haven.slnx"))) return d.FullName;
            return Directory.GetCurrentDirectory();
        }
    }

    /// <summary>One tool's cost in one phase.</summary>
    public sealed record Cost(double Wall, double Cpu, double PeakRssMiB, long? StoredBytes, bool Cold);

    public sealed record HavenBackup(Cost Cost, BackupResult Result, Havend.BackupTimeline Timeline, ProcessCost Daemon, ProcessCost Qemu);

    public sealed record HavenRestore(Cost Cost, RestoreResult Result, ProcessCost Daemon, ProcessCost Qemu);

    /// <summary>One untimed-for-the-table warm-up round: backup + restore of the small scratch VM.</summary>
    public sealed record WarmUp(string When, double Wall, ProcessCost Daemon);

    public sealed class Bench(Options o)
    {
        private const string Vm = "bench";
        private const string WarmVm = "warmup";
        private const long WarmSize = 128L << 20;
        private const string Passphrase = "haven bench passphrase";
        private const int Block = 64 << 10;
        private readonly Stopwatch _clock = Stopwatch.StartNew();
        private readonly List<string> _notes = [];

        private string Raw => Path.Combine(o.Dir, "disk.raw");
        private string Qcow2 => Path.Combine(o.Dir, "disk.qcow2");
        private string WarmRaw => Path.Combine(o.Dir, "warmup.raw");
        private string HavenData => Path.Combine(o.Dir, "haven");
        private string HavenRepo => Path.Combine(o.Dir, "haven-repo");
        private string HavenColdRepo => Path.Combine(o.Dir, "haven-repo-cold");
        private string HavenRestore => Path.Combine(o.Dir, "haven-restore.raw");
        private string ResticRepo => Path.Combine(o.Dir, "restic-repo");
        private string ResticRestore => Path.Combine(o.Dir, "restic-restore");
        private string BorgRepo => Path.Combine(o.Dir, "borg-repo");
        private string BorgRestore => Path.Combine(o.Dir, "borg-restore");

        private Dictionary<string, string> ResticEnv => new()
        {
            ["RESTIC_PASSWORD"] = Passphrase,
            ["RESTIC_REPOSITORY"] = ResticRepo,
            ["RESTIC_CACHE_DIR"] = Path.Combine(o.Dir, "restic-cache"),
        };

        private Dictionary<string, string> BorgEnv => new()
        {
            ["BORG_PASSPHRASE"] = Passphrase,
            ["BORG_BASE_DIR"] = Path.Combine(o.Dir, "borg-base"),
            ["BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK"] = "yes",
            ["BORG_RELOCATED_REPO_ACCESS_IS_OK"] = "yes",
        };

        private void Log(string message) => Console.Error.WriteLine($"[{_clock.Elapsed.TotalSeconds,6:F1}s] {message}");

        public async Task<(string Report, bool Ok)> RunAsync()
        {
            PrepareDirectory();
            var r = new ReportData { Options = o, StartedAt = DateTimeOffset.UtcNow };
            r.Machine = await Machine.DescribeAsync(o.Dir, o.RepoRoot);

            // 1. The image.
            var image = DiskImage.Plan(o.Size, o.Seed);
            r.Image = image;
            Log($"writing {o.Size >> 20} MiB image: {image.BytesOf(RegionKind.Random) >> 20} MiB random, {image.BytesOf(RegionKind.Text) >> 20} MiB text, " +
                $"{image.BytesOf(RegionKind.Duplicate) >> 20} MiB duplicates, {image.BytesOf(RegionKind.Hole) + o.Size % DiskImage.RegionSize >> 20} MiB holes");
            var sw = Stopwatch.StartNew();
            image.Write(Raw);
            Log($"image written in {sw.Elapsed.TotalSeconds:F1} s");
            r.TextRatio = await TextCompressionAsync(image);
            await Exec.RunAsync("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", Raw, Qcow2]);
            Log("converted to qcow2");
            if (!o.ColdDaemon) DiskImage.Plan(WarmSize, o.Seed + 1).Write(WarmRaw);

            // 2. havend, the VM and the repositories.
            var log = Path.Combine(o.Dir, "havend.log");
            var havend = await Havend.StartAsync(o.Havend, HavenData, log);
            int? qemuPid = null, warmPid = null;
            try
            {
                await havend.PostAsync<VmInfo>("/v1/vms", new VmCreateRequest
                {
                    Name = Vm, MemoryMiB = 128, Vcpus = 1, Disks = [new DiskSpec { ImportPath = Qcow2 }],
                    GuestAgent = false, Accelerator = "tcg", CheckpointType = CheckpointType.Standard,
                });
                var info = await havend.PostAsync<VmInfo>($"/v1/vms/{Vm}/start", null);
                qemuPid = info.Pid ?? throw new InvalidOperationException("the started VM has no pid");
                if (!o.ColdDaemon)
                {
                    await havend.PostAsync<VmInfo>("/v1/vms", new VmCreateRequest
                    {
                        Name = WarmVm, MemoryMiB = 64, Vcpus = 1, Disks = [new DiskSpec { ImportPath = WarmRaw }],
                        GuestAgent = false, Accelerator = "tcg", CheckpointType = CheckpointType.Standard,
                    });
                    warmPid = (await havend.PostAsync<VmInfo>($"/v1/vms/{WarmVm}/start", null)).Pid;
                }
                Log($"VM {Vm} running (QEMU pid {qemuPid}, disk {info.Disks[0].Chain[0].Path})");
                await havend.PostAsync<RepositoryInfo>("/v1/repo/init", new RepositoryInitRequest { Repository = HavenRepo, Passphrase = Passphrase });
                await havend.PostAsync<RepositoryInfo>("/v1/repo/init", new RepositoryInitRequest { Repository = HavenColdRepo, Passphrase = Passphrase });
                await Exec.RunAsync("restic", ["init"], ResticEnv);
                await Exec.RunAsync("borg", ["init", "-e", "repokey", BorgRepo], BorgEnv);
                r.QemuIdleCpuPerSecond = await IdleRateAsync(qemuPid.Value);

                // A long-running havend has JIT-compiled its backup path long before a given backup; a fresh one
                // has not. Warm-up rounds on a scratch VM after every start; the first rounds show what a cold
                // daemon pays extra.
                // 3. Full backups: first the cold daemon (its first backup, into a repository of its own), then
                // after the warm-up the measured one. Both repositories were initialised (key derived) before.
                r.HavenColdFull = await HavenBackupAsync(havend, qemuPid.Value, "full", HavenColdRepo);
                if (!o.ColdDaemon) await WarmUpDaemonAsync(havend, "fresh havend", r.WarmUps);
                r.HavenFull = await HavenBackupAsync(havend, qemuPid.Value, "full");
                r.ResticFull = await PeerAsync("restic full", "restic", ["backup", "--quiet", "--host", "bench", Raw], ResticEnv, ResticRepo);
                r.BorgFull = await PeerAsync("borg full", "borg", ["create", "--compression", "zstd,3", BorgRepo + "::full", Raw], BorgEnv, BorgRepo);

                // 4. Change 1% of the 64 KiB blocks, in the VM (through QEMU) and in the raw file alike.
                await havend.StopAsync();
                await havend.DisposeAsync();
                (r.BlocksChanged, r.ChunksTouched) = await ChangeBlocksAsync(info);
                havend = await Havend.StartAsync(o.Havend, HavenData, log);
                if (!o.ColdDaemon)
                {
                    await WarmUpDaemonAsync(havend, "restarted havend", r.WarmUps);
                    // The daemon that took the full backup had derived this repository's key (PBKDF2, cached per
                    // process); listing its backups lets the restarted one do the same before the incremental.
                    await havend.PostAsync<List<BackupInfo>>("/v1/repo/backups", new RepositoryRef { Repository = HavenRepo, Passphrase = Passphrase });
                }

                // 5. Incrementals.
                r.HavenIncremental = await HavenBackupAsync(havend, qemuPid.Value, "incremental");
                r.ResticIncremental = await PeerAsync("restic incremental", "restic", ["backup", "--quiet", "--host", "bench", Raw], ResticEnv, ResticRepo);
                r.BorgIncremental = await PeerAsync("borg incremental", "borg", ["create", "--compression", "zstd,3", BorgRepo + "::inc", Raw], BorgEnv, BorgRepo);

                // 6. Restores of the incremental (the disk as it is now).
                // Haven flushes the restored disk to stable storage before answering; restic and borg leave
                // their writes in the page cache. The `sync` right after each restore shows what that is worth.
                r.HavenRestore = await HavenRestoreAsync(havend, qemuPid.Value, r.HavenIncremental.Result.BackupId);
                r.SyncAfterRestore["Haven"] = await SyncSecondsAsync();
                Directory.CreateDirectory(ResticRestore);
                r.ResticRestore = await PeerAsync("restic restore", "restic", ["restore", "latest", "--quiet", "--target", ResticRestore], ResticEnv, null);
                r.SyncAfterRestore["restic"] = await SyncSecondsAsync();
                Directory.CreateDirectory(BorgRestore);
                r.BorgRestore = await PeerAsync("borg restore", "borg", ["extract", "--sparse", BorgRepo + "::inc"], BorgEnv, null, BorgRestore);
                r.SyncAfterRestore["borg"] = await SyncSecondsAsync();
                r.RestoredAllocated["Haven"] = await AllocatedAsync(HavenRestore);
                r.RestoredAllocated["restic"] = await AllocatedAsync(ResticRestore + Raw);
                r.RestoredAllocated["borg"] = await AllocatedAsync(BorgRestore + Raw);

                // 7. Every restore must equal the disk.
                var top = (await havend.GetAsync<VmInfo>($"/v1/vms/{Vm}")).Disks[0].Chain[0].Path;
                r.Checks.Add(("Haven restore = VM disk now (`qemu-img compare -U` with the top layer)", await SameImageAsync(HavenRestore, "raw", top, "qcow2")));
                r.Checks.Add(("Haven restore = reference raw file", await SameImageAsync(HavenRestore, "raw", Raw, "raw")));
                r.Checks.Add(("restic restore = reference raw file (`cmp`)", await SameBytesAsync(ResticRestore + Raw, Raw)));
                r.Checks.Add(("borg restore = reference raw file (`cmp`)", await SameBytesAsync(BorgRestore + Raw, Raw)));

                // 8. What the machine can read at all.
                r.RawRead = await ReadLimitAsync(Raw);
                r.QcowRead = await ReadLimitAsync(top);
                r.RawAllocated = await AllocatedAsync(Raw);
                r.QcowAllocated = await AllocatedAsync(top);
                r.Floor = await CpuFloor.MeasureAsync(Raw, Log);

                Log("stopping the VM");
                await havend.PostAsync<VmInfo>($"/v1/vms/{Vm}/stop", new VmStopRequest { Force = true });
                qemuPid = null;
                if (warmPid is not null) await havend.PostAsync<VmInfo>($"/v1/vms/{WarmVm}/stop", new VmStopRequest { Force = true });
                warmPid = null;
            }
            finally
            {
                await havend.DisposeAsync();
                foreach (var pid in new[] { qemuPid, warmPid })
                    if (pid is { } p && Proc.CommandName(p).StartsWith("qemu", StringComparison.Ordinal)) Proc.Terminate(p);
            }

            r.FinishedAt = DateTimeOffset.UtcNow;
            r.LoadAtEnd = Machine.ReadLoadAverage();
            r.Notes.AddRange(_notes);
            var ok = r.Checks.All(c => c.Ok);
            if (!o.Keep) Cleanup();
            return (ReportWriter.Write(r), ok);
        }

        private void PrepareDirectory()
        {
            var marker = Path.Combine(o.Dir, ".haven-bench");
            if (Directory.Exists(o.Dir) && Directory.EnumerateFileSystemEntries(o.Dir).Any())
            {
                if (!File.Exists(marker)) throw new InvalidOperationException($"{o.Dir} is not empty and not a previous benchmark folder; pick another --dir");
                // A previous run that died may have left its VM running.
                var run = Path.Combine(o.Dir, "haven", "run");
                if (Directory.Exists(run))
                    foreach (var pidFile in Directory.GetFiles(run, "*.pid"))
                        if (int.TryParse(File.ReadAllText(pidFile).Trim(), out var pid) && File.Exists($"/proc/{pid}/cmdline")
                            && File.ReadAllText($"/proc/{pid}/cmdline").Contains(pidFile, StringComparison.Ordinal))
                            Proc.Terminate(pid);
                Directory.Delete(o.Dir, recursive: true);
            }
            Directory.CreateDirectory(o.Dir);
            File.WriteAllText(marker, "made by Haven.Bench; deleted by the next run\n");
        }

        private void Cleanup()
        {
            foreach (var f in new[] { Raw, Qcow2, HavenRestore, WarmRaw }) File.Delete(f);
            foreach (var d in new[] { HavenData, HavenRepo, HavenColdRepo, ResticRepo, ResticRestore, BorgRepo, BorgRestore, Path.Combine(o.Dir, "restic-cache"), Path.Combine(o.Dir, "borg-base") })
                if (Directory.Exists(d)) Directory.Delete(d, recursive: true);
            foreach (var d in Directory.GetDirectories(o.Dir, "warmup-repo-*")) Directory.Delete(d, recursive: true);
        }

        private async Task<bool> DropCachesAsync()
        {
            if (o.Warm) return false;
            var ok = await Exec.DropCachesAsync();
            if (!ok && !_notes.Contains(ColdNote)) _notes.Add(ColdNote);
            return ok;
        }

        private const string ColdNote = "Could not drop the page cache (not root?): every phase ran with the page cache warm.";

        private async Task<double> IdleRateAsync(int pid)
        {
            var a = Proc.Cpu(pid)!.Value.Self;
            await Task.Delay(3000);
            return (Proc.Cpu(pid)!.Value.Self - a) / 3;
        }

        private async Task<HavenBackup> HavenBackupAsync(Havend havend, int qemuPid, string expect, string? repository = null)
        {
            repository ??= HavenRepo;
            var cold = await DropCachesAsync();
            Log($"Haven {expect} backup");
            var daemon = ProcMeter.Start(havend.Pid);
            var qemu = ProcMeter.Start(qemuPid, sampleChildren: false);
            var sw = Stopwatch.StartNew();
            var (result, timeline) = await havend.BackupAsync(Vm, new BackupRequest { Repository = repository, Passphrase = Passphrase });
            var wall = sw.Elapsed.TotalSeconds;
            var d = await daemon.StopAsync();
            var q = await qemu.StopAsync();
            await daemon.DisposeAsync();
            await qemu.DisposeAsync();
            if (result.Mode != expect) _notes.Add($"Haven's {expect} backup ran as {result.Mode}: {result.Reason}");
            var stored = await Exec.DiskUsageAsync(repository);
            Log($"  {wall:F2} s, {result.Mode}, read {result.BytesRead >> 20} MiB, new {result.BytesNew >> 20} MiB, repo {stored >> 20} MiB");
            return new HavenBackup(new Cost(wall, d.CpuSeconds + d.ChildCpuSeconds, d.PeakRssMiB, stored, cold), result, timeline, d, q);
        }

        /// <summary>
        /// Warm-up rounds on a freshly started havend. On a busy 2-core machine .NET's tiered JIT needed three or
        /// four rounds (~400 MiB backed up and restored) before a round's CPU stopped falling; six leave a margin.
        /// </summary>
        public const int WarmUpRounds = 6;

        private async Task WarmUpDaemonAsync(Havend havend, string daemon, List<WarmUp> into)
        {
            for (var round = 1; round <= WarmUpRounds; round++)
                into.Add(await WarmUpAsync(havend, $"{daemon}, round {round}{(round == 1 ? " (cold JIT)" : "")}"));
        }

        private async Task<WarmUp> WarmUpAsync(Havend havend, string when)
        {
            var n = Directory.GetDirectories(o.Dir, "warmup-repo-*").Length + 1;
            var repo = Path.Combine(o.Dir, $"warmup-repo-{n}");
            var target = Path.Combine(o.Dir, $"warmup-restore-{n}.raw");
            await havend.PostAsync<RepositoryInfo>("/v1/repo/init", new RepositoryInitRequest { Repository = repo, Passphrase = Passphrase });
            var meter = ProcMeter.Start(havend.Pid);
            var sw = Stopwatch.StartNew();
            await havend.BackupAsync(WarmVm, new BackupRequest { Repository = repo, Passphrase = Passphrase });
            // Again: an incremental with nothing changed runs the incremental-only code (previous manifest,
            // dirty bitmap, chunk listing of a non-empty repository) that the measured incremental needs.
            var (b, _) = await havend.BackupAsync(WarmVm, new BackupRequest { Repository = repo, Passphrase = Passphrase });
            if (b.Mode != "incremental") throw new InvalidOperationException($"warm-up: the second backup of {WarmVm} ran as {b.Mode}: {b.Reason}");
            await havend.PostAsync<RestoreResult>("/v1/repo/restore", new RestoreRequest
            {
                Repository = repo, Passphrase = Passphrase, BackupId = b.BackupId, Disk = 0, TargetPath = target, Format = "raw",
            });
            var wall = sw.Elapsed.TotalSeconds;
            var cost = await meter.StopAsync();
            await meter.DisposeAsync();
            File.Delete(target);
            Log($"warm-up ({when}): full + incremental backup and restore of the {WarmSize >> 20} MiB scratch VM in {wall:F2} s, havend CPU {cost.CpuSeconds:F2} s");
            return new WarmUp(when, wall, cost);
        }

        private async Task<HavenRestore> HavenRestoreAsync(Havend havend, int qemuPid, string backupId)
        {
            var cold = await DropCachesAsync();
            Log("Haven restore");
            var daemon = ProcMeter.Start(havend.Pid);
            var qemu = ProcMeter.Start(qemuPid, sampleChildren: false);
            var sw = Stopwatch.StartNew();
            var result = await havend.PostAsync<RestoreResult>("/v1/repo/restore", new RestoreRequest
            {
                Repository = HavenRepo, Passphrase = Passphrase, BackupId = backupId, Disk = 0, TargetPath = HavenRestore, Format = "raw",
            });
            var wall = sw.Elapsed.TotalSeconds;
            var d = await daemon.StopAsync();
            var q = await qemu.StopAsync();
            await daemon.DisposeAsync();
            await qemu.DisposeAsync();
            Log($"  {wall:F2} s");
            return new HavenRestore(new Cost(wall, d.CpuSeconds + d.ChildCpuSeconds, d.PeakRssMiB, null, cold), result, d, q);
        }

        private async Task<Cost> PeerAsync(string label, string tool, string[] args, Dictionary<string, string> env, string? repo, string? cwd = null)
        {
            var cold = await DropCachesAsync();
            Log(label);
            var t = await Exec.TimedAsync(tool, args, env, cwd);
            long? stored = repo is null ? null : await Exec.DiskUsageAsync(repo);
            Log($"  {t.WallSeconds:F2} s" + (stored is { } s ? $", repo {s >> 20} MiB" : ""));
            return new Cost(t.WallSeconds, t.CpuSeconds, t.PeakRssMiB, stored, cold);
        }

        /// <summary>
        /// 1% of the disk's 64 KiB blocks, at random, each rewritten with random bytes (default) or its own pattern
        /// byte (<c>--churn constant</c>, which compresses to nothing and hides the cost of storing changed data).
        /// </summary>
        private async Task<(int Blocks, int Chunks)> ChangeBlocksAsync(VmInfo info)
        {
            var blocks = o.Size / Block;
            var count = (int)Math.Ceiling(blocks / 100.0);
            var rng = new Xoshiro(o.Seed ^ 0xC0FFEE);
            var chosen = new SortedSet<long>();
            while (chosen.Count < count) chosen.Add((long)rng.Below((ulong)blocks));
            Log($"changing {count} of {blocks} 64 KiB blocks through QEMU (havend stopped: QMP takes one client)");
            var device = info.Disks[0].DeviceId;
            var source = Path.Combine(o.Dir, "churn-block");
            var bytes = new Xoshiro(o.Seed ^ 0xB10C5);
            await using (var qmp = await QmpClient.ConnectAsync(info.QmpSocket, TimeSpan.FromSeconds(30)))
            using (var raw = File.OpenHandle(Raw, FileMode.Open, FileAccess.ReadWrite))
            {
                var buffer = new byte[Block];
                var i = 0;
                foreach (var block in chosen)
                {
                    if (o.Churn == Churn.Constant)
                    {
                        var pattern = (byte)(1 + i++ % 255);
                        await Hmp(qmp, $"qemu-io -d /machine/peripheral/{device}/virtio-backend \"write -P 0x{pattern:x2} {block * Block} {Block}\"");
                        Array.Fill(buffer, pattern);
                    }
                    else
                    {
                        for (var k = 0; k < Block; k += 8) System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(buffer.AsSpan(k), bytes.Next());
                        await File.WriteAllBytesAsync(source, buffer);
                        await Hmp(qmp, $"qemu-io -d /machine/peripheral/{device}/virtio-backend \"write -s {source} {block * Block} {Block}\"");
                    }
                    RandomAccess.Write(raw, buffer, block * Block);
                }
                await Hmp(qmp, $"qemu-io -d /machine/peripheral/{device}/virtio-backend \"flush\"");
                RandomAccess.FlushToDisk(raw);
            }
            File.Delete(source);
            var chunks = chosen.Select(b => b * Block >> 20).Distinct().Count();
            return (count, chunks);
        }

        private static async Task Hmp(QmpClient qmp, string command)
        {
            var text = (await qmp.ExecuteAsync("human-monitor-command", new JsonObject { ["command-line"] = command })).GetString() ?? "";
            if (text.Contains("error", StringComparison.OrdinalIgnoreCase) || text.Contains("fail", StringComparison.OrdinalIgnoreCase))
                throw new InvalidOperationException($"{command}: {text}");
        }

        private async Task<bool> SameImageAsync(string a, string fa, string b, string fb)
        {
            Log($"qemu-img compare {Path.GetFileName(a)} {Path.GetFileName(b)}");
            var r = await Exec.RunAsync("qemu-img", ["compare", "-U", "-f", fa, "-F", fb, a, b], check: false);
            if (r.ExitCode is not (0 or 1)) throw new InvalidOperationException($"qemu-img compare failed: {r.Stderr}{r.Stdout}");
            if (r.ExitCode == 1) Log("  DIFFERENT: " + r.Stdout.Trim());
            return r.ExitCode == 0;
        }

        private async Task<bool> SameBytesAsync(string a, string b)
        {
            Log($"cmp {a} {b}");
            var r = await Exec.RunAsync("cmp", [a, b], check: false);
            if (r.ExitCode != 0) Log("  DIFFERENT: " + (r.Stdout + r.Stderr).Trim());
            return r.ExitCode == 0;
        }

        private static async Task<double> SyncSecondsAsync()
        {
            var sw = Stopwatch.StartNew();
            await Exec.RunAsync("sync", []);
            return sw.Elapsed.TotalSeconds;
        }

        private static async Task<long> AllocatedAsync(string path)
        {
            var r = await Exec.RunAsync("du", ["-s", "--block-size=1", path]);
            return long.Parse(r.Stdout.Split('\t', ' ')[0], CultureInfo.InvariantCulture);
        }

        private async Task<(double Seconds, bool Cold)> ReadLimitAsync(string path)
        {
            var cold = await Exec.DropCachesAsync();
            Log($"cat {path}");
            var t = await Exec.TimedAsync("/bin/sh", ["-c", "cat \"$0\" >/dev/null", path]);
            return (t.WallSeconds, cold);
        }

        /// <summary>zstd -1 and -3 on the first text region: how compressible the "compressible" part is.</summary>
        private async Task<(double Level1, double Level3)?> TextCompressionAsync(DiskImage image)
        {
            var region = Array.IndexOf(image.Kinds, RegionKind.Text);
            if (region < 0) return null;
            var sample = Path.Combine(o.Dir, "text-sample");
            try
            {
                var buffer = new byte[DiskImage.RegionSize];
                using (var f = File.OpenHandle(Raw)) RandomAccess.Read(f, buffer, (long)region * DiskImage.RegionSize);
                await File.WriteAllBytesAsync(sample, buffer);
                async Task<double> Ratio(int level)
                {
                    try
                    {
                        var r = await Exec.RunAsync("zstd", [$"-{level}", "-q", "-f", sample, "-o", sample + ".zst"], check: false);
                        return r.ExitCode == 0 ? (double)buffer.Length / new FileInfo(sample + ".zst").Length : double.NaN;
                    }
                    catch (System.ComponentModel.Win32Exception) { return double.NaN; } // no zstd on this machine
                }
                return (await Ratio(1), await Ratio(3));
            }
            finally
            {
                File.Delete(sample);
                File.Delete(sample + ".zst");
            }
        }
    }
}
