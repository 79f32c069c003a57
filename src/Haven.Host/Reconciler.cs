using System.Text.Json;
using Haven.Api;
using Haven.Host.Checkpoints;
using Haven.Host.Vms;
using Haven.Qemu.Images;
using Haven.Qemu.Qmp;
using Haven.Qemu.Runtime;

namespace Haven.Host;

public sealed record ReconcileReport
{
    public int VmsReattached { get; set; }
    public List<string> OperationsRepaired { get; } = [];
    /// <summary>VMs whose QEMU is alive but did not answer, with the reason; they are re-attached in the background.</summary>
    public List<string> VmsUnresponsive { get; } = [];
    public List<string> OrphanFilesRemoved { get; } = [];
    /// <summary>Of <see cref="OrphanFilesRemoved"/>: layer files (vms/&lt;vm&gt;/disks/*) and memory-state files (vms/&lt;vm&gt;/states/*) no row named.</summary>
    public int OrphanLayersRemoved { get; set; }
    public int OrphanStatesRemoved { get; set; }
    public List<string> OrphanNodesRemoved { get; } = [];
    public int OrphanProcessesStopped { get; set; }
    /// <summary>Tap devices of bridge NICs whose VM was not running.</summary>
    public List<string> OrphanTapsRemoved { get; } = [];
}

/// <summary>
/// Runs at daemon start: finds VMs still running from before, finishes or rolls back every journaled
/// operation, then removes what nothing refers to (layer files, QEMU nodes, QEMU processes).
/// Roll forward wherever the data allows it; roll back only steps that changed nothing a guest can see.
/// </summary>
public sealed class Reconciler(HavenHost host)
{
    public async Task<ReconcileReport> RunAsync(CancellationToken ct)
    {
        var report = new ReconcileReport();
        var vms = host.Store.ListVms();
        // In parallel: a VM that does not answer costs its attach timeout once, not once per VM before it.
        var attached = await Task.WhenAll(vms.Select(vm => host.Runtimes.AttachAsync(vm.Id, ct)));
        report.VmsReattached = attached.Count(p => p is not null);
        // An unresponsive VM's QEMU may be in the middle of what its journal describes: its repair (and the
        // sweeps of its files and nodes) wait for the background re-attach.
        var unresponsive = new HashSet<string>();
        foreach (var vm in vms)
            if (host.Runtimes.Unresponsive(vm.Id) is { } u)
            {
                unresponsive.Add(vm.Id);
                report.VmsUnresponsive.Add($"VM '{vm.Name}' is unresponsive ({u.Reason}); re-attaching in the background");
            }
        report.OrphanProcessesStopped = StopUnknownQemus(vms.ConvertAll(v => v.Id)) + StopQemuNbds();
        // Taps of VMs whose QEMU is gone (killed with or without havend): nothing else would remove them.
        foreach (var tap in HostNetwork.OrphanTaps(vms.Where(v => unresponsive.Contains(v.Id) || host.Runtimes.Get(v.Id) is not null).Select(v => v.Id)))
        {
            await HostNetwork.DeleteTapAsync(tap, ct);
            report.OrphanTapsRemoved.Add(tap);
        }

        foreach (var op in host.Store.ListOperations())
            if (host.Store.FindVm(op.VmId) is null) host.Store.Write(w => w.DeleteOperation(op.Id));
        foreach (var vm in vms)
        {
            if (unresponsive.Contains(vm.Id) || !host.Store.ListOperations().Exists(o => o.VmId == vm.Id)) continue;
            await using var _ = await host.LockVmAsync(vm.Id, ct);
            try { report.OperationsRepaired.AddRange(await RepairOperationsAsync(vm.Id, ct)); }
            catch (QmpConnectionException e)
            {
                // QEMU stopped answering mid-repair: the re-attach loop finishes the repair once it answers again.
                unresponsive.Add(vm.Id);
                report.VmsUnresponsive.Add($"VM '{vm.Name}' stopped answering while its journal was repaired ({e.Message}); re-attaching in the background");
            }
        }

        SweepFiles(report, unresponsive);
        await SweepNodesAsync(report, unresponsive, ct);
        await SweepReplicaBitmapsAsync(ct);
        return report;
    }

    /// <summary>
    /// After a VM was re-attached (or its QEMU found gone) at run time: finishes or rolls back what its failed
    /// operation journaled, then removes its leftover files and QEMU nodes. The caller holds the VM's lock.
    /// </summary>
    public async Task<ReconcileReport> RepairVmAsync(string vmId, CancellationToken ct)
    {
        var report = new ReconcileReport();
        report.OperationsRepaired.AddRange(await RepairOperationsAsync(vmId, ct));
        if (host.Store.FindVm(vmId) is not { } vm) return report;
        SweepVmFolder(vmId, report);
        await SweepNodesAsync(vm, report, ct);
        return report;
    }

    /// <summary>Finishes or rolls back each journaled operation of one VM. The caller holds the VM's lock.</summary>
    private async Task<List<string>> RepairOperationsAsync(string vmId, CancellationToken ct)
    {
        // Inner removals before the subtree removals that started them; a replica cycle after the checkpoint
        // create or removal it was in the middle of.
        var ops = host.Store.ListOperations().FindAll(o => o.VmId == vmId);
        static int Order(State.OperationRecord o) => o.Kind switch { OperationKinds.RemoveSubtree => 1, Replication.ReplicaService.CycleOperation => 2, _ => 0 };
        ops.Sort((a, b) => Order(a).CompareTo(Order(b)));
        var repaired = new List<string>();
        foreach (var op in ops)
        {
            if (host.Store.FindOperation(op.Id) is null) continue;
            switch (op.Kind)
            {
                case OperationKinds.CreateCheckpoint:
                    await ResumeCreateAsync(op, PlanJson.Read<CreatePlan>(op.Payload), ct);
                    break;
                case OperationKinds.ApplyCheckpoint:
                    await host.Checkpoints.CompleteApplyAsync(op.VmId, op.Id, PlanJson.Read<ApplyPlan>(op.Payload), ct);
                    break;
                case OperationKinds.RemoveCheckpoint:
                    await host.Removal.ContinueRemoveAsync(op.VmId, op.Id, PlanJson.Read<RemovePlan>(op.Payload), ct);
                    break;
                case OperationKinds.RemoveSubtree:
                    await host.Removal.ContinueSubtreeAsync(op.VmId, op.Id, PlanJson.Read<RemoveSubtreePlan>(op.Payload), ct);
                    break;
                case Backups.BackupService.OperationKind:
                case Replication.ReplicationService.OperationKind:
                    // The backup itself cannot go on (its reader died): drop the view, hand tracking back.
                    await host.Backups.AbandonAsync(op.VmId, op, PlanJson.Read<Backups.BackupPlan>(op.Payload), [], [], ct);
                    break;
                case Replication.ReplicaService.CycleOperation:
                    // A cycle that had not committed never happened: back to empty active layers.
                    await host.Replicas.DiscardAsync(op.VmId, op, PlanJson.Read<Replication.ReplicaCyclePlan>(op.Payload), ct);
                    break;
                case Replication.ReplicationService.PlannedFailoverOperation:
                    // Its steps are on the replica: havend finishes it once the replica answers (ReplicationScheduler).
                    continue;
                default:
                    throw new InvalidDataException($"unknown operation kind '{op.Kind}' in the journal");
            }
            repaired.Add($"{op.Kind} on VM {op.VmId}");
        }
        return repaired;
    }

    /// <summary>
    /// Ends every qemu-nbd serving a socket in this host's run folder: havend's qemu-nbd servers live only as long
    /// as the request that started them (backups of VMs that are off, replica cycles, resync hashing, restores),
    /// so at start each one is a leftover of a crash, holding its image open.
    /// </summary>
    private int StopQemuNbds()
    {
        var stopped = 0;
        var marker = host.Paths.RunDir.TrimEnd('/') + "/";
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out var pid)) continue;
            string cmdline;
            try { cmdline = File.ReadAllText(Path.Combine(dir, "cmdline")); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { continue; }
            if (!cmdline.StartsWith("qemu-nbd\0", StringComparison.Ordinal) || !cmdline.Contains("\0" + marker, StringComparison.Ordinal)) continue;
            QemuNbdServer.KillIfQemuNbd(pid);
            stopped++;
        }
        return stopped;
    }

    /// <summary>
    /// A failover killed after it put change tracking on a replica's disks but before it recorded it leaves
    /// bitmaps no tracking point names; the replica's next cycle would freeze them into a recovery point.
    /// </summary>
    private async Task SweepReplicaBitmapsAsync(CancellationToken ct)
    {
        foreach (var replica in host.Store.ListReplicas())
        {
            if (replica.State != State.ReplicaState.Replicating || host.Runtimes.Unresponsive(replica.VmId) is not null || host.Runtimes.Get(replica.VmId) is not null) continue;
            var known = host.Tracking.PointsOf(replica.VmId).ConvertAll(r => r.Bitmap).ToHashSet();
            var tree = new LayerTree(host.Paths, host.Store.ListLayers(replica.VmId));
            foreach (var d in host.Store.ListDisks(replica.VmId))
            {
                var top = tree.PathOf(tree[d.ActiveLayerId]);
                foreach (var b in await DirtyBitmaps.ListOfflineAsync(top, ct))
                    if (b.Name.StartsWith("haven-rp-", StringComparison.Ordinal) && !known.Contains(b.Name))
                        await DirtyBitmaps.EditOfflineAsync(top, b.Name, ["--remove"], ct);
            }
        }
    }

    private async Task ResumeCreateAsync(State.OperationRecord op, CreatePlan plan, CancellationToken ct)
    {
        var qemu = host.Runtimes.Get(op.VmId);
        if (plan.Freezing && qemu is not null) await GuestQuiescing.ThawQuietlyAsync(op.VmId, host.Paths, ct, host.Log);
        bool snapshotted;
        if (plan.Live && qemu is not null)
        {
            var first = plan.NewLayers[0];
            var chain = await BlockOperations.GetChainAsync(qemu.Qmp, "disk" + first.Disk, ct);
            snapshotted = chain.Count > 0 && chain[0] == "l" + first.LayerId;
        }
        else
        {
            // Without a QEMU to ask, the new layers count when every one of them is a sound overlay.
            snapshotted = true;
            foreach (var l in plan.NewLayers)
                snapshotted &= await IsOverlayOfAsync(host.Paths.LayerFile(op.VmId, l.LayerId), host.Paths.LayerFile(op.VmId, l.ParentLayerId), ct);
        }
        if (!snapshotted)
        {
            await host.Checkpoints.RollBackCreateAsync(op.VmId, op, plan, ct);
            return;
        }
        var hasState = false;
        if (qemu is not null && plan.PausedByUs)
        {
            var stateFile = host.Paths.StateFile(op.VmId, plan.CheckpointId);
            var status = await qemu.QueryStatusAsync(ct);
            if (status == "postmigrate" && File.Exists(stateFile + ".partial"))
            {
                File.Move(stateFile + ".partial", stateFile, overwrite: true);
                hasState = true;
            }
            else if (status == "paused")
            {
                // Still paused at the checkpoint's instant: the state saved now is the state of then.
                await CheckpointService.SaveStateAsync(qemu, stateFile, ct);
                hasState = true;
            }
            else hasState = File.Exists(stateFile);
            await MachineState.ResumeAsync(qemu.Qmp, ct);
        }
        host.Checkpoints.FinishCreate(op.VmId, op.Id, plan, hasState);
    }

    private static async Task<bool> IsOverlayOfAsync(string path, string backing, CancellationToken ct)
    {
        if (!File.Exists(path)) return false;
        try { return (await QemuImg.InfoAsync(path, forceShare: true, ct)).BackingFile == backing; }
        catch (ToolFailedException) { return false; }
    }

    /// <summary>Kills QEMUs whose pid files name VMs this host no longer knows.</summary>
    private int StopUnknownQemus(List<string> knownIds)
    {
        var stopped = 0;
        foreach (var pidFile in Directory.EnumerateFiles(host.Paths.RunDir, "*.pid"))
        {
            var id = Path.GetFileNameWithoutExtension(pidFile);
            if (knownIds.Contains(id)) continue;
            if (QemuProcess.ReadPid(pidFile) is { } pid && QemuProcess.IsProcessAlive(pid, pidFile))
            {
                QemuProcess.Kill(pid, pidFile);
                stopped++;
            }
            host.Runtimes.Forget(id);
        }
        return stopped;
    }

    /// <summary>Deletes VM folders, layer files and state files that no database row refers to.</summary>
    private void SweepFiles(ReconcileReport report, HashSet<string> skip)
    {
        // Point-in-time views and NBD sockets of backups (every journaled backup was abandoned above), and the
        // exported images of a test failover killed before it imported them: no image in run/ outlives a request.
        foreach (var f in Directory.EnumerateFiles(host.Paths.RunDir))
            if (f.EndsWith(".qcow2", StringComparison.Ordinal) || (f.EndsWith(".nbd", StringComparison.Ordinal) && !IsLiveSocket(f)))
            {
                File.Delete(f);
                report.OrphanFilesRemoved.Add(f);
            }
        var vmIds = host.Store.ListVms().ConvertAll(v => v.Id);
        foreach (var dir in Directory.EnumerateDirectories(host.Paths.VmsDir))
        {
            var vmId = Path.GetFileName(dir);
            if (!vmIds.Contains(vmId))
            {
                HostPaths.DeleteVmFolder(dir);
                report.OrphanFilesRemoved.Add(dir);
                continue;
            }
            if (!skip.Contains(vmId)) SweepVmFolder(vmId, report);
        }
    }

    /// <summary>Deletes the VM's layer and state files that no row refers to.</summary>
    private void SweepVmFolder(string vmId, ReconcileReport report)
    {
        var layerIds = host.Store.ListLayers(vmId).ConvertAll(l => l.Id).ToHashSet();
        var states = host.Store.ListCheckpoints(vmId).Where(c => c.HasState).Select(c => c.Id).ToHashSet();
        // Also what a crash between a removal's commit and its file deletions left (CheckpointRemoval).
        report.OrphanLayersRemoved += Sweep(host.Paths.DisksDir(vmId), f => f.EndsWith(".qcow2", StringComparison.Ordinal) && layerIds.Contains(Path.GetFileNameWithoutExtension(f)), report);
        var checkpoints = host.Store.ListCheckpoints(vmId).Select(c => c.Id).ToHashSet();
        report.OrphanStatesRemoved += Sweep(host.Paths.StatesDir(vmId), f => f.EndsWith(".state", StringComparison.Ordinal) && states.Contains(Path.GetFileNameWithoutExtension(f))
            || f.EndsWith(".vars", StringComparison.Ordinal) && checkpoints.Contains(Path.GetFileNameWithoutExtension(f)), report);
    }

    /// <summary>A running VM's QEMU NBD server socket stays (it may serve another client); the rest are leftovers.</summary>
    private bool IsLiveSocket(string path)
    {
        var name = Path.GetFileName(path);
        foreach (var id in host.Runtimes.RunningIds)
            if (name == id + ".nbd") return true;
        return false;
    }

    /// <summary>Deletes the files of <paramref name="dir"/> that <paramref name="keep"/> rejects; returns how many.</summary>
    private static int Sweep(string dir, Func<string, bool> keep, ReconcileReport report)
    {
        if (!Directory.Exists(dir)) return 0;
        var removed = 0;
        foreach (var f in Directory.EnumerateFiles(dir))
        {
            if (keep(Path.GetFileName(f))) continue;
            File.Delete(f);
            report.OrphanFilesRemoved.Add(f);
            removed++;
        }
        return removed;
    }

    /// <summary>Deletes QEMU nodes of layers that are no longer in any of the VM's chains.</summary>
    private async Task SweepNodesAsync(ReconcileReport report, HashSet<string> skip, CancellationToken ct)
    {
        foreach (var vm in host.Store.ListVms())
            if (!skip.Contains(vm.Id) && host.Runtimes.Unresponsive(vm.Id) is null) await SweepNodesAsync(vm, report, ct);
    }

    private async Task SweepNodesAsync(State.VmRecord vm, ReconcileReport report, CancellationToken ct)
    {
        if (host.Runtimes.Get(vm.Id) is not { } qemu) return;
        var tree = new LayerTree(host.Paths, host.Store.ListLayers(vm.Id));
        var wanted = new HashSet<string>();
        foreach (var d in host.Store.ListDisks(vm.Id))
            foreach (var l in tree.ChainFrom(d.ActiveLayerId)) wanted.Add(l.NodeName);
        try
        {
            if (await BlockOperations.HasAnyJobAsync(qemu.Qmp, ct)) return;
            foreach (var name in await BlockOperations.ListNodeNamesAsync(qemu.Qmp, ct))
            {
                if (name.Length < 2 || name[0] != 'l' || wanted.Contains(name)) continue;
                await BlockOperations.DeleteLayerNodesAsync(qemu.Qmp, name, ct, host.Log);
                report.OrphanNodesRemoved.Add($"{vm.Name}:{name}");
            }
        }
        catch (QmpTimeoutException) { } // the connection's watch marks the VM unresponsive
        catch (QmpConnectionException) when (!qemu.IsAlive) { host.Runtimes.Forget(vm.Id); }
    }
}
