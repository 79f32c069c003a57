using System.Globalization;
using System.Text;

namespace Haven.Bench;

public sealed class ReportData
{
    public required Options Options { get; init; }
    public DateTimeOffset StartedAt { get; init; }
    public DateTimeOffset FinishedAt { get; set; }
    public Machine Machine { get; set; } = null!;
    public DiskImage Image { get; set; } = null!;
    public (double Level1, double Level3)? TextRatio { get; set; }
    public double QemuIdleCpuPerSecond { get; set; }
    public HavenBackup HavenColdFull { get; set; } = null!;
    public HavenBackup HavenFull { get; set; } = null!;
    public Cost ResticFull { get; set; } = null!;
    public Cost BorgFull { get; set; } = null!;
    public int BlocksChanged { get; set; }
    public int ChunksTouched { get; set; }
    public HavenBackup HavenIncremental { get; set; } = null!;
    public Cost ResticIncremental { get; set; } = null!;
    public Cost BorgIncremental { get; set; } = null!;
    public HavenRestore HavenRestore { get; set; } = null!;
    public Cost ResticRestore { get; set; } = null!;
    public Cost BorgRestore { get; set; } = null!;
    public Dictionary<string, long> RestoredAllocated { get; } = [];
    public Dictionary<string, double> SyncAfterRestore { get; } = [];
    public List<(string What, bool Ok)> Checks { get; } = [];
    public (double Seconds, bool Cold) RawRead { get; set; }
    public (double Seconds, bool Cold) QcowRead { get; set; }
    public long RawAllocated { get; set; }
    public long QcowAllocated { get; set; }
    public FloorResult? Floor { get; set; }
    public List<string> Notes { get; } = [];
    public string LoadAtEnd { get; set; } = "?";
    public List<WarmUp> WarmUps { get; } = [];
}

/// <summary>The markdown report.</summary>
public static class ReportWriter
{
    private const double MiB = 1 << 20;
    public const double FullTarget = 0.25, IncrementalTarget = 0.1, RestoreTarget = 0.3, RssTargetMiB = 300, ColdTarget = 1.3;

    public static string Write(ReportData r)
    {
        var o = r.Options;
        var m = r.Machine;
        var sb = new StringBuilder();
        void L(string s = "") => sb.Append(s).Append('\n');

        L($"## Haven vs restic vs borg: {o.Size / MiB / 1024:0.##} GiB disk, full → 1% changed → incremental → restore");
        L();
        L($"- Command: `{o.Command}`");
        L($"- Date: {r.StartedAt:yyyy-MM-dd HH:mm} UTC (the whole run took {(r.FinishedAt - r.StartedAt).TotalMinutes:F1} min)");
        L($"- Machine: {m.Cores} cores ({m.Cpu}), {m.MemoryMiB / 1024.0:F1} GiB RAM, Linux {m.Kernel}, {m.Os}; disk {m.Disk}; load average (1, 5, 15 min) at start {m.LoadAverage}, at end {r.LoadAtEnd}");
        L($"- Software: Haven {m.HavenCommit} on {m.DotNet}; {m.Qemu}; {m.Restic}; {m.Borg}");
        L($"- Page cache: {(o.Warm ? "warm (--warm)" : r.HavenFull.Cost.Cold ? "dropped (`echo 3 > /proc/sys/vm/drop_caches`) before every timed phase" : "could not be dropped: every phase ran warm")}");
        L();

        L("### Targets");
        L();
        L("| target | Haven | restic | Haven/restic | result |");
        L("| --- | ---: | ---: | ---: | --- |");
        TargetRow(sb, $"full backup wall ≤ {FullTarget}× restic", r.HavenFull.Cost.Wall, r.ResticFull.Wall, FullTarget);
        TargetRow(sb, $"incremental wall ≤ {IncrementalTarget}× restic", r.HavenIncremental.Cost.Wall, r.ResticIncremental.Wall, IncrementalTarget);
        TargetRow(sb, $"restore wall ≤ {RestoreTarget}× restic", r.HavenRestore.Cost.Wall, r.ResticRestore.Wall, RestoreTarget);
        var peak = new[] { r.HavenColdFull.Cost.PeakRssMiB, r.HavenFull.Cost.PeakRssMiB, r.HavenIncremental.Cost.PeakRssMiB, r.HavenRestore.Cost.PeakRssMiB }.Max();
        L($"| havend peak RSS ≤ {RssTargetMiB} MiB (worst phase) | {peak:F0} MiB | | | {(peak <= RssTargetMiB ? "PASS" : "**FAIL**")} |");
        var coldRatio = r.HavenColdFull.Cost.Wall / r.HavenFull.Cost.Wall;
        L($"| cold-daemon full ≤ {ColdTarget}× warm full (Haven/Haven) | {r.HavenColdFull.Cost.Wall:F2} s | warm {r.HavenFull.Cost.Wall:F2} s | {coldRatio:F2}× | {(coldRatio <= ColdTarget ? "PASS" : "**FAIL**")} |");
        L();

        L("### The disk");
        L();
        var img = r.Image;
        var text = r.TextRatio is { } t ? $" (zstd -1 {t.Level1:F1}×, zstd -3 {t.Level3:F1}×)" : "";
        var holes = img.BytesOf(RegionKind.Hole) + o.Size % DiskImage.RegionSize;
        L($"{o.Size / MiB:F0} MiB virtual, 4 MiB regions in a fixed-seed order (seed {o.Seed}): {img.BytesOf(RegionKind.Random) / MiB:F0} MiB random (incompressible), " +
          $"{img.BytesOf(RegionKind.Text) / MiB:F0} MiB log-like text{text}, {img.BytesOf(RegionKind.Duplicate) / MiB:F0} MiB exact copies of earlier random regions, " +
          $"{holes / MiB:F0} MiB never written. The raw file restic and borg back up is sparse ({r.RawAllocated / MiB:F0} MiB allocated after the change); " +
          $"the VM's disk is a qcow2 in havend's data folder ({r.QcowAllocated / MiB:F0} MiB allocated), written through QEMU.");
        L();
        var churn = o.Churn == Churn.Random ? "random bytes (incompressible, like encrypted or compressed pages)" : "its own pattern byte (`--churn constant`: compresses to nothing)";
        L($"Change between the backups: {r.BlocksChanged} of {o.Size / (64 << 10)} 64 KiB blocks (1%), chosen at random, each rewritten with {churn} " +
          $"(`qemu-io` inside the running QEMU, same bytes into the raw file); they touch {r.ChunksTouched} of {o.Size >> 20} 1 MiB chunks, which is what Haven reads.");
        L();

        if (r.Floor is { } f && r.RawRead.Seconds > 0)
        {
            L("### The machine's limit");
            L();
            L($"- Read: `cat disk.raw > /dev/null` ({(r.RawRead.Cold ? "page cache dropped" : "page cache warm")}) takes {r.RawRead.Seconds:F2} s " +
              $"({r.RawAllocated / MiB / r.RawRead.Seconds:F0} MiB/s of allocated data); the VM's qcow2 {r.QcowRead.Seconds:F2} s.");
            L($"- CPU: Haven's chunk path alone (keyed BLAKE3, zstd -1 with the incompressible-chunk check, AES-256-GCM; `BackupWriter.PutChunkAsync` into a store that keeps nothing), " +
              $"in process over the {f.Chunks} non-zero 1 MiB chunks ({f.Bytes / MiB:F0} MiB, page cache warm) on {f.Workers} workers: {f.Wall:F2} s wall, {f.Cpu:F2} s CPU " +
              $"({f.Bytes / MiB / f.Wall:F0} MiB/s; {f.StoredBytes / MiB:F0} MiB sealed).");
            L($"- So no full backup of this disk can take less than about {Math.Max(f.Wall, r.RawRead.Seconds):F2} s here: Haven's warm full took {r.HavenFull.Cost.Wall:F2} s " +
              $"({r.HavenFull.Cost.Wall / Math.Max(f.Wall, r.RawRead.Seconds):F1}× that), restic {r.ResticFull.Wall:F2} s.");
            L();
        }

        Phase(sb, "Full backup", r.HavenFull.Cost, r.ResticFull, r.BorgFull, stored: true);
        Row(sb, "cold daemon: wall s", r.HavenColdFull.Cost.Wall, r.ResticFull.Wall, r.BorgFull.Wall, "F2");
        Row(sb, "cold daemon: CPU s", r.HavenColdFull.Cost.Cpu, r.ResticFull.Cpu, r.BorgFull.Cpu, "F2");
        sb.Append("\nThe first rows are the warm daemon (after the warm-up rounds below); the cold-daemon rows are the first backup a freshly started havend ran " +
                  "(same VM, same data, into a second repository initialised just before; page cache dropped).\n");
        HavenBackupDetail(sb, r.HavenFull, r.QemuIdleCpuPerSecond);
        HavenBackupDetail(sb, r.HavenColdFull, r.QemuIdleCpuPerSecond, "Cold daemon, ");
        Phase(sb, "Incremental backup (after the 1% change)", r.HavenIncremental.Cost, r.ResticIncremental, r.BorgIncremental, stored: true);
        HavenBackupDetail(sb, r.HavenIncremental, r.QemuIdleCpuPerSecond);
        Phase(sb, "Restore of the incremental (whole disk to a raw file)", r.HavenRestore.Cost, r.ResticRestore, r.BorgRestore, stored: false);
        L($"| restored file, allocated MiB | {A(r, "Haven")} | {A(r, "restic")} | {A(r, "borg")} | | |");
        if (r.SyncAfterRestore.Count == 3)
        {
            double S(string t) => r.SyncAfterRestore[t];
            L($"| `sync` right after, s | {S("Haven"):F2} | {S("restic"):F2} | {S("borg"):F2} | | |");
            double hs = r.HavenRestore.Cost.Wall + S("Haven"), rs = r.ResticRestore.Wall + S("restic"), bs = r.BorgRestore.Wall + S("borg");
            L($"| wall + `sync` s (restored data on disk) | {hs:F2} | {rs:F2} | {bs:F2} | {hs / rs:F2}× | {hs / bs:F2}× |");
        }
        L();
        var hr = r.HavenRestore;
        L($"Haven: restored {hr.Result.BytesWritten / MiB:F0} MiB of disk{(hr.Daemon.ChildNames.Contains("qemu-nbd") ? " through qemu-nbd" : ", writing the raw file itself (no qemu-nbd)")}; " +
          $"zero chunks are not written, so the file stays sparse; havend CPU " +
          $"{hr.Daemon.UserSeconds:F2} s user + {hr.Daemon.SystemSeconds:F2} s system, children {hr.Daemon.ChildCpuSeconds:F2} s ({Names(hr.Daemon)}), children's peak RSS {hr.Daemon.ChildPeakRssMiB:F0} MiB; " +
          $"{hr.Cost.Cpu / hr.Cost.Wall:F2} cores busy on average, havend threads on average {hr.Daemon.AvgRunning:F2} runnable and {hr.Daemon.AvgDiskWait:F2} in disk wait; " +
          $"havend CPU by thread: {hr.Daemon.ThreadSummary}. " +
          $"restic 0.14 has no sparse restore and writes every zero; borg ran `extract --sparse`. Haven flushes the restored image to stable storage " +
          "before it answers; restic and borg do not, so the `sync` rows show the same end state (restored data on disk) for all three.");
        L();

        L("### Restore checks");
        L();
        foreach (var (what, ok) in r.Checks) L($"- {(ok ? "OK" : "**DIFFERENT**")}: {what}");
        L();

        L("### Raw read limit");
        L();
        L($"- `cat disk.raw > /dev/null` ({(r.RawRead.Cold ? "page cache dropped" : "page cache warm")}): {r.RawRead.Seconds:F2} s, " +
          $"{o.Size / MiB / r.RawRead.Seconds:F0} MiB/s of file, {r.RawAllocated / MiB / r.RawRead.Seconds:F0} MiB/s of allocated data");
        L($"- `cat` of Haven's qcow2 ({(r.QcowRead.Cold ? "page cache dropped" : "page cache warm")}): {r.QcowRead.Seconds:F2} s, " +
          $"{r.QcowAllocated / MiB / r.QcowRead.Seconds:F0} MiB/s");
        L();

        if (r.WarmUps.Count > 0)
        {
            L("### Daemon warm-up (not in the tables)");
            L();
            L($"After each start of havend (before the full backup, and after the restart before the incremental) the benchmark runs {Bench.WarmUpRounds} warm-up rounds: " +
              "back up a 128 MiB scratch VM (same mix of data) into a new repository, back it up again (an incremental with nothing changed) and restore it: " +
              "the code paths of the measured phases. " +
              "A long-running havend has JIT-compiled its backup path long before any given backup; a freshly started one has not, and .NET's tiered JIT " +
              "takes several hundred chunks to settle when the workers keep both cores busy. What the rounds cost shows what a fresh daemon pays:");
            L();
            L("| warm-up round | wall s | havend CPU s (user + sys) |");
            L("| --- | ---: | ---: |");
            foreach (var w in r.WarmUps) L($"| {w.When} | {w.Wall:F2} | {w.Daemon.CpuSeconds:F2} ({w.Daemon.UserSeconds:F2} + {w.Daemon.SystemSeconds:F2}); by thread: {w.Daemon.ThreadSummary} |");
            L();
            L("After the restart the benchmark also lists the benchmark repository's backups (`POST /v1/repo/backups`), so the restarted daemon has derived " +
              "the repository key (Argon2id, about 0.15 s here, cached per process) as the daemon that took the full backup had. " +
              "`--cold-daemon` skips all of this: the full and incremental then run on a daemon started just before them.");
            L();
        }

        L("### How these were measured");
        L();
        L("- Wall: Haven from the HTTP request to the answer (client side); restic and borg from `/usr/bin/time -v`.");
        L("- CPU: user + system seconds. Haven: the havend process (delta of utime+stime in /proc/PID/stat) plus the children it ran " +
          "(cutime+cstime: qemu-img, qemu-nbd). restic, borg: `/usr/bin/time -v`.");
        L("- Peak RSS: Haven: havend's VmHWM, reset before each phase (`echo 5 > /proc/PID/clear_refs`); its children are sampled every 100 ms and listed " +
          "separately. restic, borg: \"Maximum resident set size\" of `/usr/bin/time -v`.");
        L("- Not in Haven's columns: the VM's QEMU process, which serves the point-in-time view over NBD and copies blocks before guest writes " +
          "(fleecing). Its CPU during each phase is listed under the table with its idle rate (a TCG guest sitting in the BIOS).");
        L("- Stored: `du -sb` of each repository after the phase (Haven's repository folder; restic and borg repositories; borg's cache and restic's cache excluded).");
        L("- havend is stopped (SIGTERM; the VM keeps running) while the change is written, because QEMU's QMP socket takes one client at a time, " +
          "and started again before the incremental" + (r.WarmUps.Count > 0 ? " (then warmed up, see above)." : "; with `--cold-daemon` the incremental includes a fresh daemon's JIT warm-up."));
        L("- restic: `restic backup FILE` (repository v2, compression auto), `restic restore latest --target DIR`. " +
          "borg: `borg init -e repokey`, `borg create --compression zstd,3 REPO::NAME FILE`, `borg extract --sparse`. " +
          $"Both see a changed file (mtime) and read all {o.Size / MiB / 1024:0.##} GiB again for the incremental; Haven reads only the chunks its dirty bitmap marks.");
        foreach (var n in r.Notes) L("- " + n);
        return sb.ToString();
    }

    private static string A(ReportData r, string tool) => r.RestoredAllocated.TryGetValue(tool, out var v) ? (v / MiB).ToString("F0", CultureInfo.InvariantCulture) : "?";

    private static void TargetRow(StringBuilder sb, string name, double haven, double restic, double target)
    {
        var ratio = haven / restic;
        sb.Append($"| {name} | {haven:F2} s | {restic:F2} s | {ratio:F2}× | {(ratio <= target ? "PASS" : "**FAIL**")} |\n");
    }

    private static void Phase(StringBuilder sb, string title, Cost h, Cost restic, Cost borg, bool stored)
    {
        sb.Append($"### {title}\n\n");
        sb.Append("| | Haven | restic | borg | Haven/restic | Haven/borg |\n| --- | ---: | ---: | ---: | ---: | ---: |\n");
        Row(sb, "wall s", h.Wall, restic.Wall, borg.Wall, "F2");
        Row(sb, "CPU s", h.Cpu, restic.Cpu, borg.Cpu, "F2");
        Row(sb, "peak RSS MiB", h.PeakRssMiB, restic.PeakRssMiB, borg.PeakRssMiB, "F0");
        if (stored && h.StoredBytes is { } hs && restic.StoredBytes is { } rs && borg.StoredBytes is { } bs)
            Row(sb, "stored MiB (repository)", hs / MiB, rs / MiB, bs / MiB, "F0");
    }

    private static void Row(StringBuilder sb, string name, double h, double r, double b, string fmt)
        => sb.Append($"| {name} | {h.ToString(fmt, CultureInfo.InvariantCulture)} | {r.ToString(fmt, CultureInfo.InvariantCulture)} | " +
                     $"{b.ToString(fmt, CultureInfo.InvariantCulture)} | {h / r:F2}× | {h / b:F2}× |\n");

    private static void HavenBackupDetail(StringBuilder sb, HavenBackup b, double idle, string label = "")
    {
        var x = b.Result;
        var t = b.Timeline;
        var transfer = t.LastProgress - t.FirstProgress;
        sb.Append('\n');
        sb.Append($"{label}Haven ({x.Mode}{(x.Reason is null ? "" : ": " + x.Reason)}): read {x.BytesRead / MiB:F0} MiB in {x.ChunksRead} chunks, stored {x.ChunksNew} new chunks " +
                  $"({x.BytesNew / MiB:F0} MiB before compression), {x.ChunksZero} zero, {x.ChunksReused} reused from the previous backup; havend's own wall {x.WallMilliseconds / 1000:F2} s. ");
        if (t.FirstProgress >= 0)
            sb.Append($"From the progress stream: {t.FirstProgress:F2} s until the first chunk was read (open repository, list its chunks, fleecing, NBD connect, chunk plan), " +
                      $"{transfer:F2} s reading and storing ({(transfer > 0 ? x.BytesRead / MiB / transfer : 0):F0} MiB/s), {t.Result - t.LastProgress:F2} s to finish (manifest, reference point, tear-down). ");
        sb.Append($"havend CPU {b.Daemon.UserSeconds:F2} s user + {b.Daemon.SystemSeconds:F2} s system + children {b.Daemon.ChildCpuSeconds:F2} s" +
                  $"{(b.Daemon.ChildNames.Length > 0 ? $" ({b.Daemon.ChildNames}, peak RSS {b.Daemon.ChildPeakRssMiB:F0} MiB)" : "")}, " +
                  $"i.e. {b.Cost.Cpu / b.Cost.Wall:F2} cores busy on average; sampled every 20 ms, on average {b.Daemon.AvgRunning:F2} of its threads were runnable " +
                  $"and {b.Daemon.AvgDiskWait:F2} waiting for the disk (D state: fsync, reads); CPU by thread: {b.Daemon.ThreadSummary}. " +
                  $"QEMU (not in the table): CPU {b.Qemu.CpuSeconds:F2} s (idle rate {idle:F2} s/s, i.e. {idle * b.Cost.Wall:F2} s of it is the idle guest), " +
                  $"{b.Qemu.AvgRunning:F2} threads runnable and {b.Qemu.AvgDiskWait:F2} in disk wait on average, peak RSS {b.Qemu.PeakRssMiB:F0} MiB.\n\n");
    }

    private static string Names(ProcessCost c) => c.ChildNames.Length > 0 ? c.ChildNames : "none seen";
}
