using System.Diagnostics;
using System.Text.Json;
using Haven.Api;
using Haven.Backup;
using Haven.Host.Checkpoints;
using Haven.Host.State;
using Haven.Host.Tracking;
using Haven.Host.Vms;
using Haven.Nbd;
using Haven.Qemu.GuestAgent;
using Haven.Qemu.Images;
using Haven.Qemu.Qmp;
using Haven.Qemu.Runtime;
using Haven.Repository;
using Haven.Storage;

namespace Haven.Host.Backups;

/// <summary>
/// Backup jobs the Veeam/Hyper-V way: a consistent point in time (guest frozen through qemu-ga while
/// QEMU starts a fleecing view of every disk), only changed chunks read over NBD (the dirty bitmaps of
/// the repository's change tracking, <see cref="ChangeTracker"/>), chunks stored deduplicated and encrypted, then the point-in-time view removed —
/// in a finally block, and by the reconciler after a crash. docs/backup.md describes the steps.
/// </summary>
public sealed class BackupService(HavenHost host)
{
    public const string OperationKind = "backup";
    private static readonly TimeSpan FreezeTimeout = GuestQuiescing.FreezeTimeout;

    private HostStore Store => host.Store;
    private HostPaths Paths => host.Paths;

    /// <summary>Test seam: runs at each named step (the same names as the crash points), e.g. to inject a failure or a guest write.</summary>
    internal Func<string, Task>? AtStep { get; set; }

    private async Task StepAsync(string name)
    {
        CrashPoints.Hit(name);
        if (AtStep is not null) await AtStep(name);
    }

    public async Task<BackupResult> BackupAsync(string vmName, BackupRequest req, CancellationToken ct, Action<OperationEvent>? progress = null)
    {
        var clock = Stopwatch.StartNew();
        var vm = host.Vms.Find(vmName);
        await using var repo = await host.Repositories.OpenAsync(req, ct);
        await using var _ = await host.LockVmAsync(vm.Id, ct);
        vm = Store.FindVm(vm.Id)!;
        var qemu = host.Runtimes.Get(vm.Id);
        var disks = Store.ListDisks(vm.Id);

        // Decide full or incremental per disk before touching anything.
        var (previous, reason) = await FindPreviousAsync(vm, disks, repo, qemu, ct);
        var stats = new BackupStats();
        var mode = previous is null ? "full" : "incremental";
        var (point, view) = await ReadPointInTimeAsync(vm, TrackingConsumer.ForBackup(repo.Id), OperationKind, incremental: previous is not null, repo.ChunkSize, async view =>
        {
            await using var writer = await repo.BeginBackupAsync(Environment.MachineName, ct);
            var manifestDisks = new List<DiskManifest>();
            var clients = new List<NbdClient>();
            try
            {
                for (var i = 0; i < view.Disks.Count; i++)
                {
                    var d = view.Disks[i];
                    var contexts = d.DirtyContext is null ? new List<string> { "base:allocation" } : ["base:allocation", d.DirtyContext];
                    var first = await NbdClient.ConnectAsync(d.Endpoint, d.Export, contexts, ct);
                    clients.Add(first);
                    var sources = new List<NbdClient> { first };
                    if (first.CanMultiConn)
                        for (var c = 1; c < 2; c++) { var extra = await NbdClient.ConnectAsync(d.Endpoint, d.Export, [], ct); clients.Add(extra); sources.Add(extra); }
                    var chunkPlan = await ChunkPlan.BuildAsync(first, repo.ChunkSize, d.DirtyContext, ct);
                    var diskStats = new BackupStats();
                    var total = chunkPlan.BytesToRead;
                    long done = 0;
                    var disk = i;
                    void Report(long bytes) => progress?.Invoke(new OperationEvent
                    {
                        Type = "progress", Phase = "reading", Disk = disk, DiskCount = view.Disks.Count, BytesDone = Interlocked.Add(ref done, bytes), BytesTotal = total,
                    });
                    Report(0);
                    var index = await DiskBackup.RunAsync(writer, sources, chunkPlan, previous?.Disks[i].Chunks, diskStats, progress is null ? null : Report, ct);
                    stats.Add(diskStats);
                    manifestDisks.Add(new DiskManifest { Name = "disk" + d.Disk, SizeBytes = first.ExportSize, ChunkSize = repo.ChunkSize, Chunks = index });
                    await StepAsync("backup.after-disk");
                }
            }
            finally
            {
                foreach (var c in clients) await c.DisposeAsync();
            }
            var id = await writer.CommitAsync(new BackupManifest
            {
                VmName = vm.Name,
                VmDefinition = Definition(await host.Vms.DescribeAsync(vm, ct), view.UefiVars),
                HostName = Environment.MachineName,
                CreatedAt = host.Time.GetUtcNow(),
                ParentBackupId = previous?.Id,
                Mode = mode,
                ModeReason = reason,
                Consistency = view.Consistency.ToString(),
                Disks = manifestDisks,
            }, ct);
            await StepAsync("backup.after-manifest");
            return TrackingMark.OfBackup(id);
        }, ct);
        var backupId = point.BackupId!;
        return new BackupResult
        {
            BackupId = backupId,
            Vm = vm.Name,
            Mode = mode,
            Reason = reason,
            Consistency = view.Consistency,
            BytesRead = stats.BytesRead,
            ChunksRead = stats.ChunksRead,
            BytesNew = stats.BytesNew,
            ChunksNew = stats.ChunksNew,
            ChunksZero = stats.ChunksZero,
            ChunksReused = stats.ChunksReused,
            FrozenMilliseconds = view.FrozenMilliseconds,
            WallMilliseconds = clock.Elapsed.TotalMilliseconds,
        };
    }

    /// <summary>The VM definition a backup carries: the VM as `vm show` describes it, with a UEFI VM's variable store packed in (docs/repository-format.md).</summary>
    private static JsonElement Definition(VmInfo info, byte[]? uefiVars)
    {
        var doc = JsonSerializer.SerializeToNode(info, ApiJson.Options)!.AsObject();
        if (uefiVars is not null) doc[PackedVars.Property] = PackedVars.Pack(uefiVars);
        return JsonSerializer.SerializeToElement(doc, ApiJson.Options);
    }

    /// <summary>
    /// The point-in-time half of a backup, shared with replication cycles. The caller holds the VM's lock.
    /// Takes a consistent point in time of every disk — a fleecing view over QEMU's NBD server when the VM
    /// runs, qemu-nbd on the image when it is off — with the change tracking of <paramref name="consumer"/>
    /// (a repository's backups, or a replication): with <paramref name="incremental"/>, each disk's export also
    /// offers the dirty bitmap of the last point (<see cref="PointInTimeDisk.DirtyContext"/>). Then it runs
    /// <paramref name="read"/>; when that returns the point (backup id or cycle), the new bitmaps become the
    /// consumer's tracking points and the view is removed. When it throws (or the daemon dies: the reconciler), tracking is handed back so
    /// the next point still sees every change.
    /// </summary>
    internal async Task<(TrackingMark Point, PointInTimeView View)> ReadPointInTimeAsync(VmRecord vm, TrackingConsumer consumer, string operationKind, bool incremental,
        int granularity, Func<PointInTimeView, Task<TrackingMark>> read, CancellationToken ct, bool quiesce = true)
    {
        var qemu = host.Runtimes.Get(vm.Id);
        var disks = Store.ListDisks(vm.Id);
        var plan = new BackupPlan
        {
            Consumer = consumer,
            Live = qemu is not null,
            NbdSocket = qemu is not null ? Path.Combine(Paths.RunDir, vm.Id + ".nbd") : null,
            Disks = disks.ConvertAll(d =>
            {
                var fleeceId = HostPaths.NewId();
                var old = incremental ? host.Tracking.Find(vm.Id, d.Index, consumer)?.Bitmap : null;
                return new BackupDiskPlan(d.Index, d.ActiveLayerId, Path.Combine(Paths.RunDir, $"{vm.Id}-{fleeceId}.fleece.qcow2"), "fleece" + fleeceId,
                    "backup-" + fleeceId, $"haven-{vm.Id}-disk{d.Index}", old, "haven-rp-" + fleeceId);
            }),
        };
        var op = new OperationRecord(HostPaths.NewId(), vm.Id, operationKind, PlanJson.Write(plan), host.Time.GetUtcNow());
        Store.Write(w => w.InsertOperation(op));

        var consistency = Consistency.ApplicationConsistent;
        double? frozenMs = null;
        var succeeded = false;
        var servers = new List<QemuNbdServer>();
        try
        {
            await StepAsync(operationKind + ".before-point-in-time");
            var views = new List<PointInTimeDisk>();
            if (qemu is not null)
            {
                (consistency, frozenMs) = await StartFleecingAsync(vm, qemu, op, plan, granularity, quiesce, ct);
                await Fleecing.ExportAsync(qemu.Qmp, plan.NbdSocket!, ToFleecing(plan, granularity), ct);
                foreach (var d in plan.Disks)
                    views.Add(new PointInTimeDisk(d.Disk, new NbdEndpoint.Unix(plan.NbdSocket!), d.ExportName, d.OldBitmap is null ? null : "qemu:dirty-bitmap:" + d.OldBitmap));
            }
            else
            {
                var tree = new LayerTree(Paths, Store.ListLayers(vm.Id));
                foreach (var d in plan.Disks)
                {
                    var top = tree.PathOf(tree[d.LayerId]);
                    var tp = host.Tracking.Find(vm.Id, d.Disk, consumer);
                    if (tp is not null && tp.FileStamp == ChangeTracker.FileStamp(top)) plan.StampsHeld.Add(d.Disk);
                    Store.Write(w => w.UpdateOperation(op.Id, PlanJson.Write(plan)));
                    // Off: the disk itself is the point in time. Hand tracking over to a new bitmap first.
                    await DirtyBitmaps.EditOfflineAsync(top, d.NewBitmap, ["--add", "--granularity", granularity.ToString()], ct);
                    if (d.OldBitmap is not null) await DirtyBitmaps.EditOfflineAsync(top, d.OldBitmap, ["--disable"], ct);
                    var socket = Path.Combine(Paths.RunDir, $"{vm.Id}-disk{d.Disk}.nbd");
                    var server = await QemuNbdServer.StartAsync(top, DiskFormat.Qcow2, socket, d.ExportName, writable: false, bitmap: d.OldBitmap, ct: ct);
                    servers.Add(server);
                    plan.QemuNbdPids.Add(server.Pid);
                    Store.Write(w => w.UpdateOperation(op.Id, PlanJson.Write(plan)));
                    views.Add(new PointInTimeDisk(d.Disk, new NbdEndpoint.Unix(socket), d.ExportName, d.OldBitmap is null ? null : "qemu:dirty-bitmap:" + d.OldBitmap));
                }
            }
            // A UEFI VM's variable store, read just after the disks' point in time (the guest rarely writes it).
            var vars = vm.Hardware.Firmware == Firmware.Uefi ? Firmware.ReadVars(Paths.UefiVarsFile(vm.Id)) : null;
            await StepAsync(operationKind + ".after-point-in-time");
            var view = new PointInTimeView(views, consistency, frozenMs, vars);
            var point = await read(view);
            succeeded = true;
            await FinishAsync(vm, plan, op, point, consistency, servers, [], ct);
            return (point, view);
        }
        finally
        {
            if (!succeeded) await AbandonAsync(vm.Id, op, plan, servers, [], CancellationToken.None);
        }
    }

    private static List<Fleecing.Disk> ToFleecing(BackupPlan plan, int granularity) =>
        plan.Disks.ConvertAll(d => new Fleecing.Disk("l" + d.LayerId, d.FleeceNode, d.FleeceFile, d.JobId, d.ExportName, d.OldBitmap, d.NewBitmap, granularity));

    /// <summary>Freezes the guest if it can (Production types), takes the point in time of all disks, thaws.</summary>
    private async Task<(Consistency, double?)> StartFleecingAsync(VmRecord vm, QemuProcess qemu, OperationRecord op, BackupPlan plan, int chunkSize, bool quiesce, CancellationToken ct)
    {
        var disks = Store.ListDisks(vm.Id);
        foreach (var d in plan.Disks) await QemuImg.CreateAsync(d.FleeceFile, DiskFormat.Qcow2, disks[d.Disk].SizeBytes, ct);
        // Without an agent a Production VM is backed up crash-consistently; ProductionOnly refuses.
        // quiesce false: a replication cycle between its app-consistent points (crash-consistent by choice).
        var agent = quiesce && GuestQuiescing.Wanted(vm) ? (await GuestQuiescing.ConnectAsync(vm, Paths, "back up application-consistently", ct)).Agent : null;
        await using var agentScope = agent;
        if (agent is not null) { plan.Freezing = true; Store.Write(w => w.UpdateOperation(op.Id, PlanJson.Write(plan))); }
        var frozen = Stopwatch.StartNew();
        try
        {
            if (agent is not null) await agent.FreezeFileSystemsAsync(FreezeTimeout, ct);
            await Fleecing.StartAsync(qemu.Qmp, ToFleecing(plan, chunkSize), ct);
        }
        finally
        {
            if (agent is not null) await agent.ThawFileSystemsAsync(FreezeTimeout, CancellationToken.None);
        }
        return agent is not null ? (Consistency.ApplicationConsistent, frozen.Elapsed.TotalMilliseconds) : (Consistency.CrashConsistent, null);
    }

    /// <summary>
    /// Picks the previous backup to build on, or says why the backup must read everything. Every doubt
    /// about change tracking means a full read: never a silently missed change.
    /// </summary>
    private async Task<(BackupManifest? Previous, string? Reason)> FindPreviousAsync(VmRecord vm, List<DiskRecord> disks, Repository.Repository repo, QemuProcess? qemu, CancellationToken ct)
    {
        var consumer = TrackingConsumer.ForBackup(repo.Id);
        var points = host.Tracking.PointsOf(vm.Id, consumer);
        if (points.Count == 0) return (null, "first backup of this VM to this repository");
        if (host.Tracking.Doubt(vm.Id, consumer, disks, vmOff: qemu is null) is { } doubt) return (null, doubt);
        var tree = new LayerTree(Paths, Store.ListLayers(vm.Id));
        foreach (var d in disks)
        {
            var tp = points.Find(r => r.DiskIndex == d.Index)!;
            var bitmaps = qemu is not null ? await DirtyBitmaps.ListAsync(qemu.Qmp, "l" + d.ActiveLayerId, ct)
                : await DirtyBitmaps.ListOfflineAsync(tree.PathOf(tree[d.ActiveLayerId]), ct);
            var bm = bitmaps.Find(b => b.Name == tp.Bitmap);
            if (bm is null) return (null, $"change tracking of disk {d.Index} is missing (bitmap {tp.Bitmap} not found)");
            if (bm.Inconsistent) return (null, $"change tracking of disk {d.Index} cannot be trusted (QEMU did not close the disk cleanly)");
        }
        var previousId = points[0].Mark.BackupId!;
        try
        {
            var manifest = await repo.ReadManifestAsync(previousId, ct);
            if (manifest.Disks.Count != disks.Count) return (null, "the previous backup has a different number of disks");
            for (var i = 0; i < disks.Count; i++)
                if (manifest.Disks[i].SizeBytes != disks[i].SizeBytes || manifest.Disks[i].ChunkSize != repo.ChunkSize)
                    return (null, $"disk {i} changed size since the previous backup");
            return (manifest, null);
        }
        catch (BackupNotFoundException) { return (null, $"the previous backup {previousId} is no longer in the repository"); }
    }

    /// <summary>After the manifest is stored (or the cycle acknowledged): the new bitmaps become the tracking points, the old ones go.</summary>
    private async Task FinishAsync(VmRecord vm, BackupPlan plan, OperationRecord op, TrackingMark point, Consistency consistency,
        List<QemuNbdServer> servers, List<NbdClient> clients, CancellationToken ct)
    {
        await CloseAsync(clients, servers);
        var qemu = host.Runtimes.Get(vm.Id);
        var tree = new LayerTree(Paths, Store.ListLayers(vm.Id));
        if (qemu is not null)
        {
            await Fleecing.TearDownAsync(qemu.Qmp, ToFleecing(plan, 0), ct, host.Log);
            await Fleecing.StopServerAsync(qemu.Qmp, ct, host.Log);
            foreach (var d in plan.Disks)
                if (d.OldBitmap is not null) await DirtyBitmaps.RemoveAsync(qemu.Qmp, "l" + d.LayerId, d.OldBitmap, ct);
        }
        else
            foreach (var d in plan.Disks)
                if (d.OldBitmap is not null) await DirtyBitmaps.EditOfflineAsync(tree.PathOf(tree[d.LayerId]), d.OldBitmap, ["--remove"], ct);
        Store.Write(w =>
        {
            ChangeTracker.Record(w, plan.Disks.Select(d => new TrackingPoint
            {
                VmId = vm.Id,
                DiskIndex = d.Disk,
                Consumer = plan.Consumer,
                Bitmap = d.NewBitmap,
                LayerId = d.LayerId,
                Mark = point,
                Consistency = consistency,
                CreatedAt = host.Time.GetUtcNow(),
                FileStamp = qemu is null ? ChangeTracker.FileStamp(tree.PathOf(tree[d.LayerId])) : null,
            }));
            w.DeleteOperation(op.Id);
        });
    }

    /// <summary>A failed or interrupted backup: drop the view, give tracking back to the old bitmap so no change is lost.</summary>
    internal async Task AbandonAsync(string vmId, OperationRecord op, BackupPlan plan, List<QemuNbdServer> servers, List<NbdClient> clients, CancellationToken ct)
    {
        await CloseAsync(clients, servers);
        foreach (var pid in plan.QemuNbdPids) QemuNbdServer.KillIfQemuNbd(pid);
        var qemu = host.Runtimes.Get(vmId);
        var tree = new LayerTree(Paths, Store.ListLayers(vmId));
        if (qemu is not null)
        {
            if (plan.Freezing) await GuestQuiescing.ThawQuietlyAsync(vmId, Paths, ct, host.Log);
            await Fleecing.TearDownAsync(qemu.Qmp, ToFleecing(plan, 0), ct, host.Log);
            await Fleecing.StopServerAsync(qemu.Qmp, ct, host.Log);
            foreach (var d in plan.Disks)
            {
                var node = "l" + d.LayerId;
                var bitmaps = await DirtyBitmaps.ListAsync(qemu.Qmp, node, ct);
                if (!bitmaps.Exists(b => b.Name == d.NewBitmap)) continue;
                if (d.OldBitmap is not null && bitmaps.Exists(b => b.Name == d.OldBitmap)) await DirtyBitmaps.MergeBackAsync(qemu.Qmp, node, d.OldBitmap, d.NewBitmap, ct);
                else await DirtyBitmaps.RemoveAsync(qemu.Qmp, node, d.NewBitmap, ct);
            }
        }
        else
        {
            foreach (var d in plan.Disks)
            {
                File.Delete(d.FleeceFile);
                if (!Store.ListLayers(vmId).Exists(l => l.Id == d.LayerId)) continue;
                var top = tree.PathOf(tree[d.LayerId]);
                var bitmaps = await DirtyBitmaps.ListOfflineAsync(top, ct);
                if (!bitmaps.Exists(b => b.Name == d.NewBitmap)) continue;
                // Our own bitmap edits change the file's mtime; keep the stamp current, but only where it
                // matched before them, so a write made outside Haven is never laundered.
                var stampHeld = plan.StampsHeld.Contains(d.Disk);
                if (d.OldBitmap is not null && bitmaps.Exists(b => b.Name == d.OldBitmap))
                {
                    await DirtyBitmaps.EditOfflineAsync(top, d.OldBitmap, ["--merge", d.NewBitmap], ct);
                    await DirtyBitmaps.EditOfflineAsync(top, d.OldBitmap, ["--enable"], ct);
                }
                await DirtyBitmaps.EditOfflineAsync(top, d.NewBitmap, ["--remove"], ct);
                if (stampHeld) host.Tracking.Restamp(vmId, d.Disk, plan.Consumer, top);
            }
        }
        Store.Write(w => w.DeleteOperation(op.Id));
    }

    private static async Task CloseAsync(List<NbdClient> clients, List<QemuNbdServer> servers)
    {
        foreach (var c in clients) await c.DisposeAsync();
        clients.Clear();
        foreach (var s in servers) await s.DisposeAsync();
        servers.Clear();
    }
}

/// <summary>One disk of a point in time: where to read it over NBD, and the dirty-bitmap context since the last point (null: read everything).</summary>
internal sealed record PointInTimeDisk(int Disk, NbdEndpoint Endpoint, string Export, string? DirtyContext);

/// <summary>The disks of a point in time, how consistent it is, and a UEFI VM's variable store (null for BIOS).</summary>
internal sealed record PointInTimeView(List<PointInTimeDisk> Disks, Consistency Consistency, double? FrozenMilliseconds, byte[]? UefiVars = null);
