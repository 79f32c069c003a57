using Haven.Api;
using Haven.Host.Checkpoints;
using Haven.Host.State;
using Haven.Qemu.Runtime;

namespace Haven.Host.Replication;

/// <summary>Failover on the replica host: test, and the failover proper (planned or unplanned), with cancel and complete.</summary>
public sealed partial class ReplicaService
{
    public static string TestVmName(string vmName) => vmName + " - Test";

    /// <summary>
    /// Test failover (Hyper-V's): a new VM "&lt;name&gt; - Test" from a recovery point (the latest, or
    /// <paramref name="cycle"/>), started; the replica VM and its cycles are not touched. One at a time: stop the
    /// running test first. Its NICs are the failed-over VM's (failover network applied, same MACs) with every link
    /// down, as Hyper-V's test VM is not connected: 'haven vm nic VM NIC --link up' connects one. Their bridges must
    /// exist, or it is refused before anything is made.
    /// </summary>
    public async Task<VmInfo> TestFailoverAsync(string vmName, long? cycle, bool start, CancellationToken ct)
    {
        var replica = Find(vmName);
        var vm = Store.FindVm(replica.VmId)!;
        var testName = TestVmName(vm.Name);
        if (Store.ListVms().Exists(v => v.Name == testName)) throw HavenException.Conflict($"a test failover of '{vm.Name}' is running ('{testName}'); stop it first");
        var point = Point(replica, cycle);
        var checkpoint = Store.ListCheckpoints(vm.Id).Find(c => c.Id == point.CheckpointId)!;
        var hardware = FailoverHardware(vm.Id, checkpoint.Hardware ?? vm.Hardware);
        FailoverNetworkMap.CheckBridges(hardware, "test failover", vm.Name);
        var exportBase = Path.Combine(Paths.RunDir, $"{vm.Id}-test-{HostPaths.NewId()}.qcow2");
        var files = (await host.Checkpoints.ExportAsync(vm.Name, checkpoint.Name, new CheckpointExportRequest { Path = exportBase }, ct)).Files;
        try
        {
            await StepAsync("test-failover.after-export");
            var info = await host.Vms.DescribeAsync(vm, ct);
            var test = await host.Vms.CreateAsync(new VmCreateRequest
            {
                Name = testName,
                Vcpus = info.Vcpus,
                MemoryMiB = info.MemoryMiB,
                Disks = files.ConvertAll(f => new DiskSpec { ImportPath = f }),
                Kernel = info.Kernel,
                Initrd = info.Initrd,
                Append = info.Append,
                GuestAgent = info.GuestAgent,
                // A test must not meet the production network: links down until the user connects one.
                Nics = hardware.Nics.ConvertAll(n => n with { LinkUp = false }),
                Accelerator = info.Accelerator,
                CheckpointType = info.CheckpointType,
                // A UEFI VM boots with the point's variable store.
                Firmware = vm.Hardware.Firmware,
                UefiCode = vm.Hardware.UefiCode,
                UefiVars = vm.Hardware.Firmware == Vms.Firmware.Uefi ? Paths.CheckpointVarsFile(vm.Id, checkpoint.Id) : null,
            }, ct, storageFolder: null, copyOfPrimary: true); // the replica's MACs (the replica VM holds them too); bridges checked above
            await StepAsync("test-failover.after-create");
            Store.Write(w => w.SetReplicaTestFailover(vm.Id, host.Time.GetUtcNow()));
            return start ? await host.Vms.StartAsync(test.Name, ct) : test;
        }
        finally
        {
            foreach (var f in files) File.Delete(f);
        }
    }

    /// <summary>Stop test failover: the test VM is stopped and deleted.</summary>
    public async Task StopTestFailoverAsync(string vmName, CancellationToken ct)
    {
        var replica = Find(vmName);
        var testName = TestVmName(Store.FindVm(replica.VmId)!.Name);
        if (!Store.ListVms().Exists(v => v.Name == testName)) throw HavenException.NotFound($"no test failover of '{vmName}' is running");
        if (host.Runtimes.Get(host.Vms.Find(testName).Id) is not null) await host.Vms.StopAsync(testName, new VmStopRequest { Force = true }, ct);
        await host.Vms.RemoveAsync(testName, ct);
    }

    /// <summary>
    /// Failover: the replica VM goes back to a recovery point (the latest, or <paramref name="cycle"/>) and
    /// starts. Until it is completed or cancelled it takes no cycles. Its disks get change tracking from
    /// this point on, so reverse replication later sends only what changed here.
    /// </summary>
    public async Task<VmInfo> FailoverAsync(string vmName, long? cycle, bool start, CancellationToken ct)
    {
        var replica = Find(vmName);
        var vm = Store.FindVm(replica.VmId)!;
        if (replica.State == ReplicaState.FailedOver) throw HavenException.Conflict($"'{vm.Name}' is already failed over; cancel or complete that first");
        if (host.Runtimes.Get(vm.Id) is not null) throw HavenException.Conflict($"replica VM '{vm.Name}' is running");
        var point = Point(replica, cycle);
        var checkpoint = Store.ListCheckpoints(vm.Id).Find(c => c.Id == point.CheckpointId)!;
        // The point's hardware on the failover network's bridges; checked before anything changes when it is to start.
        var hardware = FailoverHardware(vm.Id, checkpoint.Hardware ?? vm.Hardware);
        if (start) FailoverNetworkMap.CheckBridges(hardware, "failover", vm.Name);
        await host.Checkpoints.ApplyAsync(vm.Name, checkpoint.Name, new CheckpointApplyRequest(), ct);
        await StepAsync("failover.after-apply");
        await using (await host.LockVmAsync(vm.Id, ct))
        {
            await TrackFromHereAsync(vm.Id, point, ct);
            Store.Write(w =>
            {
                w.SetHardware(vm.Id, hardware);
                w.SetReplicaState(vm.Id, ReplicaState.FailedOver);
            });
        }
        await StepAsync("failover.after-state");
        return start ? await host.Vms.StartAsync(vm.Name, ct) : await host.Vms.DescribeAsync(vm, ct);
    }

    /// <summary>
    /// Failover asked for by the primary (the last step of its planned failover): a replica already failed over counts as
    /// done (and is started if asked), so a primary interrupted after this step can ask again.
    /// </summary>
    public async Task FailoverForPrimaryAsync(string vmName, bool start, CancellationToken ct)
    {
        var replica = Find(vmName);
        if (replica.State != ReplicaState.FailedOver) { await FailoverAsync(vmName, null, start, ct); return; }
        if (start && host.Runtimes.Get(replica.VmId) is null) await host.Vms.StartAsync(vmName, ct);
    }

    /// <summary>Cancel failover: the VM stops, what it wrote is discarded, and it goes back to taking cycles.</summary>
    public async Task CancelFailoverAsync(string vmName, CancellationToken ct)
    {
        var replica = Find(vmName);
        var vm = Store.FindVm(replica.VmId)!;
        if (replica.State != ReplicaState.FailedOver) throw HavenException.Conflict($"'{vm.Name}' is not failed over");
        var latest = Point(replica, null);
        var checkpoint = Store.ListCheckpoints(vm.Id).Find(c => c.Id == latest.CheckpointId)!;
        // Applying the latest point turns the VM off and puts an empty active layer over it: as before the failover.
        await host.Checkpoints.ApplyAsync(vm.Name, checkpoint.Name, new CheckpointApplyRequest(), ct);
        Store.Write(w => w.SetReplicaState(vm.Id, ReplicaState.Replicating));
    }

    /// <summary>
    /// Complete failover: the recovery points are merged away and the VM is an ordinary VM of this host from
    /// now on (irreversible). Replicating it back is reverse replication.
    /// </summary>
    public async Task CompleteFailoverAsync(string vmName, CancellationToken ct)
    {
        var replica = Find(vmName);
        var vm = Store.FindVm(replica.VmId)!;
        if (replica.State != ReplicaState.FailedOver) throw HavenException.Conflict($"'{vm.Name}' is not failed over");
        await using var _ = await host.LockVmAsync(vm.Id, ct);
        foreach (var p in Store.ListReplicaPoints(vm.Id))
            await host.Removal.RemoveOneAsync(vm.Id, p.CheckpointId, ct);
        Store.Write(w => w.DeleteReplica(vm.Id));
    }

    private ReplicaPointRecord Point(ReplicaRecord replica, long? cycle)
    {
        var points = Store.ListReplicaPoints(replica.VmId);
        if (points.Count == 0) throw HavenException.Conflict("the replica has no recovery point yet (initial replication not done)");
        if (cycle is null) return points[^1];
        return points.Find(p => p.Cycle == cycle) ?? throw HavenException.NotFound($"no recovery point of cycle {cycle} (kept: {string.Join(", ", points.ConvertAll(p => p.Cycle))})");
    }

    /// <summary>
    /// A dirty bitmap on every active layer (the VM is off), recorded as the VM's replication tracking point
    /// at <paramref name="point"/>'s cycle: changes made after the failover are what reverse replication sends.
    /// </summary>
    private async Task TrackFromHereAsync(string vmId, ReplicaPointRecord point, CancellationToken ct)
    {
        var tree = new LayerTree(Paths, Store.ListLayers(vmId));
        var consumer = Tracking.TrackingConsumer.ForReplication(vmId);
        var records = new List<Tracking.TrackingPoint>();
        foreach (var d in Store.ListDisks(vmId))
        {
            var top = tree.PathOf(tree[d.ActiveLayerId]);
            var bitmap = "haven-rp-" + HostPaths.NewId();
            await DirtyBitmaps.EditOfflineAsync(top, bitmap, ["--add", "--granularity", ReplicationService.BlockSize.ToString()], ct);
            await StepAsync("failover.after-tracking");
            records.Add(new Tracking.TrackingPoint
            {
                VmId = vmId,
                DiskIndex = d.Index,
                Consumer = consumer,
                Bitmap = bitmap,
                LayerId = d.ActiveLayerId,
                Mark = Tracking.TrackingMark.OfCycle(point.Cycle),
                Consistency = point.Consistency,
                CreatedAt = host.Time.GetUtcNow(),
                FileStamp = Tracking.ChangeTracker.FileStamp(top),
            });
        }
        host.Tracking.Record(records);
    }
}
