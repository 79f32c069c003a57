using System.Text;
using Haven.Storage.S3;

namespace Haven.Bench.Storage;

/// <summary>The markdown report: phases side by side (local folder, S3 on RGW), then S3 requests per phase.</summary>
public sealed class ReportWriter(Options o, Machine machine, DateTimeOffset startedAt, string loadAtStart, string loadAtEnd, TimeSpan duration,
    Ceph? ceph, S3Settings settings, string bucket, bool cold)
{
    private const double MiB = 1 << 20;

    public required DiskImage Image { get; init; }
    public required long RawAllocated { get; init; }
    public required int ChunkSize { get; init; }
    public required int BlocksChanged { get; init; }
    public required int ChunksTouched { get; init; }
    public required Backend Local { get; init; }
    public required Backend S3 { get; init; }
    public required Dictionary<Backend, S3RequestCounts> Init { get; init; }
    public required Dictionary<Backend, S3RequestCounts> Open { get; init; }
    public required Dictionary<Backend, Measured> Full { get; init; }
    public required Dictionary<Backend, Measured> Incremental { get; init; }
    public required Dictionary<Backend, Measured> Unchanged { get; init; }
    public required Dictionary<Backend, Measured> Restore { get; init; }
    public required List<string> Checks { get; init; }

    public string Write()
    {
        var sb = new StringBuilder();
        var sizeMiB = o.Size / MiB;
        sb.AppendLine($"## S3 (Ceph RGW) vs local folder: {sizeMiB:F0} MiB disk, full → 1% changed → incremental → nothing changed → restore");
        sb.AppendLine();
        sb.AppendLine($"- Command: `{o.Command}`");
        sb.AppendLine($"- Date: {startedAt:yyyy-MM-dd HH:mm} UTC (the whole run took {duration.TotalMinutes:F1} min)");
        sb.AppendLine($"- Machine: {machine.Cores} cores ({machine.Cpu}), {machine.MemoryMiB / 1024.0:F1} GiB RAM, Linux {machine.Kernel}, {machine.Os}; " +
                      $"work folder on {machine.Disk}; load average (1, 5, 15 min) at start {loadAtStart}, at end {loadAtEnd}");
        sb.AppendLine($"- Software: Haven {machine.HavenCommit} on {machine.DotNet}; {machine.Qemu}; {machine.Ceph}");
        sb.AppendLine(ceph is not null
            ? $"- S3: Ceph RGW started by `scripts/ceph-start.sh` for this run (one monitor, one memstore OSD, radosgw with the beast frontend, " +
              $"all on this machine, 127.0.0.1:{ceph.RgwPort}); bucket `{bucket}`, repository at `s3://{bucket}/repo`; " +
              $"S3ObjectStore with {settings.MaxConcurrentRequests} requests in flight at most"
            : $"- S3: {settings.Endpoint}, bucket `{bucket}`, repository at `s3://{bucket}/repo`; S3ObjectStore with {settings.MaxConcurrentRequests} requests in flight at most");
        sb.AppendLine($"- Local: a folder repository (LocalDirectoryStore) in the work folder; both repositories use 1 MiB chunks, zstd + AES-GCM, " +
                      "and one chunk-index cache folder, as havend does");
        sb.AppendLine(cold ? "- Page cache: dropped (`echo 3 > /proc/sys/vm/drop_caches`) before every timed phase (RGW's memstore keeps its objects in the OSD's memory, which this does not touch)"
                           : "- Page cache: kept (warm): " + (o.Warm ? "`--warm`" : "not root"));
        sb.AppendLine(o.WarmUp ? "- JIT warm-up: a 64 MiB disk backed up and restored once per backend into scratch repositories before the measured phases"
                               : "- JIT warm-up: none (`--no-warmup`): the first phase pays the JIT");
        sb.AppendLine();

        sb.AppendLine("### The disk");
        sb.AppendLine();
        sb.AppendLine($"{sizeMiB:F0} MiB virtual (seed {o.Seed}), 4 MiB regions: {Image.BytesOf(RegionKind.Random) / MiB:F0} MiB random (incompressible), " +
                      $"{Image.BytesOf(RegionKind.Text) / MiB:F0} MiB log-like text, {Image.BytesOf(RegionKind.Duplicate) / MiB:F0} MiB copies of earlier random regions, " +
                      $"{Image.BytesOf(RegionKind.Hole) / MiB:F0} MiB never written (the generator of `bench/Haven.Bench`). Backed up from a qcow2 through qemu-nbd, " +
                      $"as havend backs up a VM that is off; the raw file (sparse, {RawAllocated / MiB:F0} MiB allocated after the change) is the reference for the restore check.");
        sb.AppendLine();
        sb.AppendLine($"Change between the full backup and the incremental: {BlocksChanged} of {o.Size / (64 << 10)} 64 KiB blocks (1%), at random, each rewritten " +
                      $"with its own pattern byte through qemu-nbd (the qcow2's dirty bitmap records them) and into the raw file; they touch {ChunksTouched} of " +
                      $"{o.Size / ChunkSize} 1 MiB chunks, which is what the incremental reads.");
        sb.AppendLine();

        sb.AppendLine("### Summary");
        sb.AppendLine();
        sb.AppendLine("| phase | local s | RGW s | RGW/local | local MiB/s | RGW MiB/s | S3 requests |");
        sb.AppendLine("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
        SummaryRow(sb, "full backup", Full);
        SummaryRow(sb, "incremental (1% changed)", Incremental);
        SummaryRow(sb, "incremental, nothing changed", Unchanged);
        SummaryRow(sb, "restore of the incremental", Restore);
        sb.AppendLine();
        sb.AppendLine($"MiB/s here are of the disk's size ({sizeMiB:F0} MiB) per second of wall time; the sections below also give them per byte read and per byte stored.");
        sb.AppendLine();

        BackupSection(sb, "Full backup", Full);
        BackupSection(sb, "Incremental backup (after the 1% change)", Incremental);
        BackupSection(sb, "Incremental backup, nothing changed", Unchanged);

        sb.AppendLine("### Restore of the incremental (whole disk to a new sparse raw file)");
        sb.AppendLine();
        sb.AppendLine("| | local folder | S3 (RGW) | RGW/local |");
        sb.AppendLine("| --- | ---: | ---: | ---: |");
        Row(sb, "wall s", Restore[Local].Seconds, Restore[S3].Seconds, "F2");
        Row(sb, $"MiB/s of disk ({sizeMiB:F0} MiB)", sizeMiB / Restore[Local].Seconds, sizeMiB / Restore[S3].Seconds, "F0");
        var restoredData = (Incremental[Local].Manifest!.ChunksReferenced) * (double)ChunkSize / MiB;
        Row(sb, $"MiB/s of data fetched ({restoredData:F0} MiB in non-zero chunks)", restoredData / Restore[Local].Seconds, restoredData / Restore[S3].Seconds, "F0");
        sb.AppendLine();
        sb.AppendLine("DiskRestore fetches, verifies and writes chunks with 2 × cores workers (at least 4); zero chunks stay holes. The file is flushed (fsync) before the time stops.");
        sb.AppendLine();

        sb.AppendLine("### S3 requests per phase");
        sb.AppendLine();
        var rows = new List<(string Phase, S3RequestCounts Counts, string Note)>
        {
            ("init (bucket + repository)", Init[S3], ""),
            ("open (config; PBKDF2 once per run)", Open[S3], ""),
            ("full backup", Full[S3].Requests, Note(Full[S3])),
            ("incremental (1% changed)", Incremental[S3].Requests, Note(Incremental[S3])),
            ("incremental, nothing changed", Unchanged[S3].Requests, Note(Unchanged[S3])),
            ("restore of the incremental", Restore[S3].Requests, $"{Incremental[S3].Manifest!.ChunksReferenced} non-zero chunk entries in the backup, {Incremental[S3].DistinctChunks} distinct"),
        };
        var kinds = Enum.GetValues<S3RequestKind>().Where(k => rows.Exists(r => r.Counts[k] != 0)).ToList();
        sb.AppendLine($"| phase | {string.Join(" | ", kinds.Select(Label))} | total | retries | |");
        sb.AppendLine($"| --- |{string.Concat(kinds.Select(_ => " ---: |"))} ---: | ---: | --- |");
        foreach (var (phase, counts, note) in rows)
            sb.AppendLine($"| {phase} | {string.Join(" | ", kinds.Select(k => counts[k].ToString()))} | {counts.Total} | {counts.Retries} | {note} |");
        sb.AppendLine();
        sb.AppendLine("Counted by `S3ObjectStore.Requests` (one per HTTP attempt, retries included). A backup phase includes what havend does around DiskBackup: " +
                      "reading the previous backup's manifest (incrementals), the writer lock (create, delete), the chunk epoch and exclusive-lock checks, " +
                      "the chunk-index cache (which spares the listing of `chunks/` while valid), the chunk PUTs, the manifest PUT and the checks after it. " +
                      "PUTs of new chunks are create-only (`If-None-Match: *`).");
        sb.AppendLine();

        sb.AppendLine("### Restore checks");
        sb.AppendLine();
        foreach (var c in Checks) sb.AppendLine("- " + c);
        sb.AppendLine();

        sb.AppendLine("### How these were measured");
        sb.AppendLine();
        sb.AppendLine("- In one process, no havend, no VM: the same engine havend uses (`ChunkPlan`, `DiskBackup` + `BackupWriter`, `DiskRestore` + `RawFileBlockTarget`). " +
                      "A backup phase runs qemu-nbd on the qcow2 (read-only; for an incremental with the previous dirty bitmap, `-B`), two NBD connections, the chunk plan " +
                      "(allocation and dirty map), the backup, the commit and the lock release: wall time from starting qemu-nbd to the writer's release. " +
                      "Bitmaps are managed with `qemu-img bitmap` between phases (not timed), as havend does for a VM that is off.");
        sb.AppendLine("- Each repository is initialised and opened once (PBKDF2 once); phases run local first, then RGW, alternating phase by phase on the same image.");
        sb.AppendLine("- Stored: the manifest's `StoredBytesNew` (new chunk objects after zstd and AES-GCM), read after the phase (not timed, not counted).");
        return sb.ToString();
    }

    private static string Note(Measured m) => $"{m.Manifest!.ChunksNew} new chunks stored";

    private static string Label(S3RequestKind k) => k switch
    {
        S3RequestKind.Get => "GET",
        S3RequestKind.Put => "PUT",
        S3RequestKind.Head => "HEAD",
        S3RequestKind.List => "LIST",
        S3RequestKind.ListVersions => "LIST versions",
        S3RequestKind.Delete => "DELETE",
        S3RequestKind.CreateMultipart => "multipart create",
        S3RequestKind.UploadPart => "multipart part",
        S3RequestKind.CompleteMultipart => "multipart complete",
        S3RequestKind.AbortMultipart => "multipart abort",
        S3RequestKind.PutRetention => "PUT retention",
        S3RequestKind.GetRetention => "GET retention",
        S3RequestKind.Bucket => "bucket",
        _ => k.ToString(),
    };

    private void SummaryRow(StringBuilder sb, string phase, Dictionary<Backend, Measured> m)
    {
        var l = m[Local].Seconds;
        var r = m[S3].Seconds;
        var size = o.Size / MiB;
        sb.AppendLine($"| {phase} | {l:F2} | {r:F2} | {r / l:F2}× | {size / l:F0} | {size / r:F0} | {m[S3].Requests.Total} |");
    }

    private void BackupSection(StringBuilder sb, string title, Dictionary<Backend, Measured> m)
    {
        var size = o.Size / MiB;
        var (l, r) = (m[Local], m[S3]);
        sb.AppendLine($"### {title}");
        sb.AppendLine();
        sb.AppendLine("| | local folder | S3 (RGW) | RGW/local |");
        sb.AppendLine("| --- | ---: | ---: | ---: |");
        Row(sb, "wall s", l.Seconds, r.Seconds, "F2");
        Row(sb, $"MiB/s of disk ({size:F0} MiB)", size / l.Seconds, size / r.Seconds, "F0");
        if (l.Stats!.BytesRead > 0)
            Row(sb, $"MiB/s of data read ({l.Stats.BytesRead / MiB:F0} MiB)", l.Stats.BytesRead / MiB / l.Seconds, r.Stats!.BytesRead / MiB / r.Seconds, "F0");
        if (l.Manifest!.StoredBytesNew > 0)
        {
            Row(sb, "stored MiB (new chunk objects)", l.Manifest.StoredBytesNew / MiB, r.Manifest!.StoredBytesNew / MiB, "F1");
            Row(sb, "MiB/s stored", l.Manifest.StoredBytesNew / MiB / l.Seconds, r.Manifest.StoredBytesNew / MiB / r.Seconds, "F0");
        }
        sb.AppendLine();
        sb.AppendLine($"Both: read {l.Stats.ChunksRead} chunks ({l.Stats.BytesRead / MiB:F0} MiB), {l.Stats.ChunksNew} new " +
                      $"({l.Manifest.BytesNew / MiB:F0} MiB before compression, {l.Manifest.StoredBytesNew / MiB:F1} MiB stored), {l.Stats.ChunksZero} zero, " +
                      $"{l.Stats.ChunksReused} reused from the previous backup" +
                      (l.Stats.ChunksNew == r.Stats!.ChunksNew && l.Stats.ChunksRead == r.Stats.ChunksRead ? "." : $" (local); RGW: read {r.Stats.ChunksRead}, {r.Stats.ChunksNew} new."));
        sb.AppendLine();
    }

    private static void Row(StringBuilder sb, string label, double local, double s3, string format)
        => sb.AppendLine($"| {label} | {local.ToString(format)} | {s3.ToString(format)} | {(local > 0 ? (s3 / local).ToString("F2") + "×" : "")} |");
}
