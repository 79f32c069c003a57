using System.Diagnostics;
using Haven.Api;
using Haven.Host.State;
using Haven.Host.Vms;
using Haven.Qemu.GuestAgent;
using Haven.Qemu.Images;
using Haven.Qemu.Qmp;
using Haven.Qemu.Runtime;

namespace Haven.Host.Checkpoints;

/// <summary>
/// Hyper-V checkpoints on qcow2 layers. Taking a checkpoint freezes each disk's writable layer (it
/// becomes the checkpoint's layer) and puts a new writable overlay on top; applying one puts a fresh
/// overlay on the checkpoint's layers; removing one merges its layer away (<see cref="CheckpointRemoval"/>).
/// docs/checkpoints.md explains the mapping.
/// </summary>
public sealed class CheckpointService(HavenHost host)
{
    private static readonly TimeSpan FreezeTimeout = GuestQuiescing.FreezeTimeout;

    private HostStore Store => host.Store;
    private HostPaths Paths => host.Paths;

    /// <summary>Test seam: runs while guest file systems are frozen, on the agent connection that froze them.</summary>
    internal Func<GuestAgentClient, Task>? WhileFrozen { get; set; }

    public CheckpointRecord Find(VmRecord vm, string name)
    {
        Names.Validate(name, "checkpoint");
        return Store.ListCheckpoints(vm.Id).Find(c => c.Name == name)
            ?? throw HavenException.NotFound($"VM '{vm.Name}' has no checkpoint named '{name}'");
    }

    public List<CheckpointInfo> List(string vmName)
    {
        var vm = host.Vms.Find(vmName);
        var all = Store.ListCheckpoints(vm.Id);
        var names = all.ToDictionary(c => c.Id, c => c.Name);
        return all.ConvertAll(c => ToInfo(c, names, vm));
    }

    private static CheckpointInfo ToInfo(CheckpointRecord c, Dictionary<string, string> names, VmRecord vm) => new()
    {
        Id = c.Id,
        Name = c.Name,
        Parent = c.ParentId is { } p && names.TryGetValue(p, out var pn) ? pn : null,
        Kind = c.Kind,
        Consistency = c.Consistency,
        CreatedAt = c.CreatedAt,
        HasSavedState = c.HasState,
        IsCurrent = vm.CurrentCheckpointId == c.Id,
    };

    private CheckpointInfo Describe(string vmId, string checkpointId)
    {
        var vm = Store.FindVm(vmId)!;
        var all = Store.ListCheckpoints(vmId);
        return ToInfo(all.Find(c => c.Id == checkpointId)!, all.ToDictionary(c => c.Id, c => c.Name), vm);
    }

    // ---------------- create ----------------

    public async Task<CheckpointCreateResult> CreateAsync(string vmName, string? name, CancellationToken ct)
    {
        var vm = host.Vms.Find(vmName);
        await using var _ = await host.LockVmAsync(vm.Id, ct);
        return await CreateLockedAsync(Store.FindVm(vm.Id)!, name, ct);
    }

    internal async Task<CheckpointCreateResult> CreateLockedAsync(VmRecord vm, string? requestedName, CancellationToken ct)
    {
        var qemu = host.Runtimes.Get(vm.Id);
        try { return await CreateLockedAsync(vm, qemu, requestedName, ct); }
        catch (QmpConnectionException e) when (qemu is not null)
        {
            // QEMU stopped answering (or exited) mid-way. Whether its last command ran is unknown, so nothing is
            // undone now: the journal stays, and is finished or rolled back once QEMU answers again.
            throw host.Runtimes.Lost(vm.Id, qemu, e, "checkpoint creation");
        }
    }

    private async Task<CheckpointCreateResult> CreateLockedAsync(VmRecord vm, QemuProcess? qemu, string? requestedName, CancellationToken ct)
    {
        var clock = Stopwatch.StartNew();
        if (vm.CheckpointType == CheckpointType.Disabled) throw HavenException.Conflict($"checkpoints are disabled for VM '{vm.Name}'");
        var name = Names.Validate(requestedName ?? $"{vm.Name} - ({DateTime.Now:yyyy-MM-dd HH:mm:ss})", "checkpoint");
        if (Store.ListCheckpoints(vm.Id).Exists(c => c.Name == name))
            throw HavenException.Conflict($"VM '{vm.Name}' already has a checkpoint named '{name}'");

        var kind = vm.CheckpointType == CheckpointType.Standard ? CheckpointKind.Standard : CheckpointKind.Production;
        GuestAgentClient? agent = null;
        string? fallback = null;
        if (qemu is not null && kind == CheckpointKind.Production)
        {
            (agent, var unavailable) = await GuestQuiescing.ConnectAsync(vm, Paths, "take a production checkpoint of", ct);
            if (unavailable is not null)
            {
                kind = CheckpointKind.Standard;
                fallback = $"guest agent unavailable ({unavailable}); took a Standard checkpoint instead";
            }
        }

        await using var agentScope = agent;
        var disks = Store.ListDisks(vm.Id);
        var plan = new CreatePlan
        {
            CheckpointId = HostPaths.NewId(),
            Name = name,
            ParentCheckpointId = vm.CurrentCheckpointId,
            Kind = kind,
            // An off VM's disks are at rest; a running one is consistent only when its file systems were frozen.
            Consistency = qemu is null || agent is not null ? Consistency.ApplicationConsistent : Consistency.CrashConsistent,
            Live = qemu is not null,
            NewLayers = disks.ConvertAll(d => new NewLayerPlan(d.Index, HostPaths.NewId(), d.ActiveLayerId)),
        };
        var op = new OperationRecord(HostPaths.NewId(), vm.Id, OperationKinds.CreateCheckpoint, PlanJson.Write(plan), host.Time.GetUtcNow());
        Store.Write(w => w.InsertOperation(op));

        double? frozenMs = null;
        var saveState = false;
        try
        {
            if (qemu is null)
            {
                SaveVars(vm, plan.CheckpointId);
                foreach (var l in plan.NewLayers)
                    await QemuImg.CreateOverlayAsync(NewLayerPath(vm.Id, l), Paths.LayerFile(vm.Id, l.ParentLayerId), ct);
                CrashPoints.Hit("create.after-overlays");
            }
            else
            {
                saveState = kind == CheckpointKind.Standard;
                if (saveState)
                {
                    // Paused, the VM's memory and disks stay at the same instant until the state is saved.
                    plan.PausedByUs = true;
                    Journal(op, plan);
                    await MachineState.PauseAsync(qemu.Qmp, ct);
                }
                if (agent is not null) { plan.Freezing = true; Journal(op, plan); }
                var frozen = Stopwatch.StartNew();
                var actions = new List<BlockOperations.SnapshotAction>();
                foreach (var l in plan.NewLayers)
                {
                    await QemuImg.CreateOverlayUnsafeAsync(NewLayerPath(vm.Id, l), Paths.LayerFile(vm.Id, l.ParentLayerId), disks[l.Disk].SizeBytes, ct);
                    actions.Add(new BlockOperations.SnapshotAction("l" + l.ParentLayerId, new LayerRef("l" + l.LayerId, NewLayerPath(vm.Id, l))));
                }
                try
                {
                    if (agent is not null) await agent.FreezeFileSystemsAsync(FreezeTimeout, ct);
                    CrashPoints.Hit("create.while-frozen");
                    if (agent is not null && WhileFrozen is not null) await WhileFrozen(agent);
                    // The variable store just before the disks' instant, inside the freeze (the guest writes it rarely:
                    // boot entries, settings); before the snapshot, so a failure here still rolls back cleanly.
                    SaveVars(vm, plan.CheckpointId);
                    await BlockOperations.SnapshotAsync(qemu.Qmp, actions, ct);
                }
                finally
                {
                    if (agent is not null)
                    {
                        await agent.ThawFileSystemsAsync(FreezeTimeout, CancellationToken.None);
                        frozenMs = frozen.Elapsed.TotalMilliseconds;
                    }
                }
                plan.Snapshotted = true;
                Journal(op, plan);
                CrashPoints.Hit("create.after-snapshot");
            }
        }
        catch (Exception e) when (!plan.Snapshotted && e is not QmpConnectionException)
        {
            await RollBackCreateAsync(vm.Id, op, plan, CancellationToken.None);
            throw;
        }

        var hasState = false;
        if (saveState)
        {
            try
            {
                await SaveStateAsync(qemu!, Paths.StateFile(vm.Id, plan.CheckpointId), ct);
                hasState = true;
            }
            catch (Exception e) when (e is not OperationCanceledException and not QmpConnectionException)
            {
                // The disks already moved to the new layers, so the checkpoint stands, without memory.
                fallback = $"memory state could not be saved ({e.Message}); the checkpoint holds disks only";
            }
            await MachineState.ResumeAsync(qemu!.Qmp, CancellationToken.None);
        }
        FinishCreate(vm.Id, op.Id, plan, hasState);
        return new CheckpointCreateResult
        {
            Checkpoint = Describe(vm.Id, plan.CheckpointId),
            FrozenMilliseconds = frozenMs,
            FallbackReason = fallback,
            ElapsedMilliseconds = clock.Elapsed.TotalMilliseconds,
        };
    }

    private string NewLayerPath(string vmId, NewLayerPlan l) => Paths.LayerFile(vmId, l.LayerId);

    /// <summary>A UEFI VM's checkpoint keeps a copy of the variable store (states/&lt;cp&gt;.vars), written before the journal says the snapshot is done.</summary>
    private void SaveVars(VmRecord vm, string checkpointId)
    {
        if (vm.Hardware.Firmware != Firmware.Uefi) return;
        Firmware.CopyVars(Paths.UefiVarsFile(vm.Id), Paths.CheckpointVarsFile(vm.Id, checkpointId));
    }

    private void Journal<T>(OperationRecord op, T plan) => Store.Write(w => w.UpdateOperation(op.Id, PlanJson.Write(plan)));

    /// <summary>Records the checkpoint: old writable layers become its layers, the new overlays become writable.</summary>
    internal void FinishCreate(string vmId, string operationId, CreatePlan plan, bool hasState)
    {
        // Rolled forward after a crash between the snapshot and the copy: the store as it is now.
        if (!File.Exists(Paths.CheckpointVarsFile(vmId, plan.CheckpointId))) SaveVars(Store.FindVm(vmId)!, plan.CheckpointId);
        Store.Write(w =>
        {
            w.InsertCheckpoint(new CheckpointRecord
            {
                Id = plan.CheckpointId,
                VmId = vmId,
                Name = plan.Name,
                ParentId = plan.ParentCheckpointId,
                Kind = plan.Kind,
                Consistency = plan.Consistency,
                CreatedAt = host.Time.GetUtcNow(),
                HasState = hasState,
                // The VM's lock is held from plan to here (or the reconciler runs before anything else): no change in between.
                Hardware = Store.FindVm(vmId)!.Hardware,
            });
            foreach (var l in plan.NewLayers)
            {
                w.SetLayerCheckpoint(l.ParentLayerId, plan.CheckpointId);
                w.InsertLayer(new LayerRecord(l.LayerId, vmId, l.Disk, l.ParentLayerId, null));
                w.SetActiveLayer(vmId, l.Disk, l.LayerId);
            }
            w.SetCurrentCheckpoint(vmId, plan.CheckpointId);
            w.DeleteOperation(operationId);
        });
    }

    internal async Task RollBackCreateAsync(string vmId, OperationRecord op, CreatePlan plan, CancellationToken ct)
    {
        var qemu = host.Runtimes.Get(vmId);
        if (qemu is not null)
        {
            if (plan.Freezing) await GuestQuiescing.ThawQuietlyAsync(vmId, Paths, ct, host.Log);
            if (plan.PausedByUs) await MachineState.ResumeAsync(qemu.Qmp, ct);
            foreach (var l in plan.NewLayers) await BlockOperations.DeleteLayerNodesAsync(qemu.Qmp, "l" + l.LayerId, ct, host.Log);
        }
        foreach (var l in plan.NewLayers) File.Delete(NewLayerPath(vmId, l));
        File.Delete(Paths.StateFile(vmId, plan.CheckpointId) + ".partial");
        File.Delete(Paths.CheckpointVarsFile(vmId, plan.CheckpointId));
        Store.Write(w => w.DeleteOperation(op.Id));
    }

    /// <summary>Writes the paused VM's memory and device state to a file, atomically (a .partial file renamed when complete).</summary>
    internal static async Task SaveStateAsync(QemuProcess qemu, string stateFile, CancellationToken ct)
    {
        var partial = stateFile + ".partial";
        File.Delete(partial);
        try { await MachineState.SaveAsync(qemu.Qmp, partial, ct); }
        catch (MigrationFailedException e) { throw new HavenException(ErrorCode.Failed, e.Message); }
        File.Move(partial, stateFile, overwrite: true);
    }

    // ---------------- apply ----------------

    public async Task<CheckpointApplyResult> ApplyAsync(string vmName, string checkpointName, CheckpointApplyRequest req, CancellationToken ct)
    {
        var vm = host.Vms.Find(vmName);
        await using var _ = await host.LockVmAsync(vm.Id, ct);
        // Its disks must stay as the last cycle sent them: they become the replica of that cycle.
        host.Replications.CheckNoPlannedFailover(vm, "apply a checkpoint of");
        var cp = Find(vm, checkpointName);
        CheckpointInfo? createdFirst = null;
        if (req.CreateCheckpointFirst)
            createdFirst = (await CreateLockedAsync(Store.FindVm(vm.Id)!, req.NewCheckpointName, ct)).Checkpoint;

        // Hyper-V turns the VM off to apply; the current state is discarded (unless checkpointed above).
        if (host.Runtimes.Get(vm.Id) is { } running)
        {
            await running.QuitAsync(ct);
            host.Runtimes.Forget(vm.Id);
        }

        var disks = Store.ListDisks(vm.Id);
        var tree = new LayerTree(Paths, Store.ListLayers(vm.Id));
        var plan = new ApplyPlan
        {
            CheckpointId = cp.Id,
            NewLayers = disks.ConvertAll(d => new NewLayerPlan(d.Index, HostPaths.NewId(), tree.LayerOf(cp.Id, d.Index).Id)),
            DiscardedLayers = disks.ConvertAll(d => d.ActiveLayerId),
            Hardware = cp.Hardware,
            DiskSizes = [],
        };
        foreach (var l in plan.NewLayers) plan.DiskSizes.Add((await QemuImg.InfoAsync(Paths.LayerFile(vm.Id, l.ParentLayerId), ct: ct)).VirtualSize);
        var op = new OperationRecord(HostPaths.NewId(), vm.Id, OperationKinds.ApplyCheckpoint, PlanJson.Write(plan), host.Time.GetUtcNow());
        Store.Write(w => w.InsertOperation(op));
        await CompleteApplyAsync(vm.Id, op.Id, plan, ct);

        var state = VmState.Off;
        if (cp.HasState)
        {
            await ResumeSavedStateAsync(Store.FindVm(vm.Id)!, Paths.StateFile(vm.Id, cp.Id), ct);
            state = VmState.Running;
        }
        return new CheckpointApplyResult { State = state, CreatedFirst = createdFirst };
    }

    /// <summary>Creates the fresh overlays (skipping ones already there) and switches the disks to them. Safe to repeat.</summary>
    internal async Task CompleteApplyAsync(string vmId, string operationId, ApplyPlan plan, CancellationToken ct)
    {
        foreach (var l in plan.NewLayers)
            if (!File.Exists(NewLayerPath(vmId, l)))
            {
                var tmp = NewLayerPath(vmId, l) + ".partial";
                await QemuImg.CreateOverlayAsync(tmp, Paths.LayerFile(vmId, l.ParentLayerId), ct);
                File.Move(tmp, NewLayerPath(vmId, l));
            }
        // The variable store comes back with the disks (a checkpoint without a copy, e.g. of a BIOS VM, keeps the current one).
        var vars = Paths.CheckpointVarsFile(vmId, plan.CheckpointId);
        if ((plan.Hardware ?? Store.FindVm(vmId)!.Hardware).Firmware == Firmware.Uefi && File.Exists(vars))
            Firmware.CopyVars(vars, Paths.UefiVarsFile(vmId));
        CrashPoints.Hit("apply.after-overlays");
        Store.Write(w =>
        {
            foreach (var old in plan.DiscardedLayers) w.DeleteLayer(old);
            foreach (var l in plan.NewLayers)
            {
                w.InsertLayer(new LayerRecord(l.LayerId, vmId, l.Disk, l.ParentLayerId, null));
                w.SetActiveLayer(vmId, l.Disk, l.LayerId);
            }
            if (plan.Hardware is not null) w.SetHardware(vmId, plan.Hardware);
            for (var i = 0; i < (plan.DiskSizes?.Count ?? 0); i++) w.SetDiskSize(vmId, plan.NewLayers[i].Disk, plan.DiskSizes![i]);
            w.SetCurrentCheckpoint(vmId, plan.CheckpointId);
            w.DeleteOperation(operationId);
        });
        foreach (var old in plan.DiscardedLayers) File.Delete(Paths.LayerFile(vmId, old));
    }

    private async Task ResumeSavedStateAsync(VmRecord vm, string stateFile, CancellationToken ct)
    {
        var qemu = await host.Vms.LaunchAsync(vm, incomingState: true, ct);
        try
        {
            try { await MachineState.LoadAsync(qemu.Qmp, stateFile, ct); }
            catch (MigrationFailedException e) { throw new HavenException(ErrorCode.Failed, e.Message); }
            await MachineState.ResumeAsync(qemu.Qmp, ct);
        }
        catch
        {
            await host.CleanupAsync("stop the QEMU that could not load the memory state", () => qemu.QuitAsync(CancellationToken.None));
            host.Runtimes.Forget(vm.Id);
            throw;
        }
    }

    // ---------------- rename, export ----------------

    public async Task<CheckpointInfo> RenameAsync(string vmName, string checkpointName, string newName, CancellationToken ct)
    {
        var vm = host.Vms.Find(vmName);
        await using var _ = await host.LockVmAsync(vm.Id, ct);
        var cp = Find(vm, checkpointName);
        Names.Validate(newName, "checkpoint");
        if (newName != cp.Name && Store.ListCheckpoints(vm.Id).Exists(c => c.Name == newName))
            throw HavenException.Conflict($"VM '{vm.Name}' already has a checkpoint named '{newName}'");
        Store.Write(w => w.RenameCheckpoint(cp.Id, newName));
        return Describe(vm.Id, cp.Id);
    }

    /// <summary>Writes each disk of the checkpoint as one standalone image (its whole chain flattened).</summary>
    public async Task<CheckpointExportResult> ExportAsync(string vmName, string checkpointName, CheckpointExportRequest req, CancellationToken ct)
    {
        var vm = host.Vms.Find(vmName);
        await using var _ = await host.LockVmAsync(vm.Id, ct);
        var cp = Find(vm, checkpointName);
        var format = QemuImg.ParseFormat(req.Format) ?? throw HavenException.Invalid($"export format must be qcow2, raw or vhdx, not '{req.Format}'");
        if (string.IsNullOrWhiteSpace(req.Path)) throw HavenException.Invalid("export needs a target path");
        var target = Path.GetFullPath(req.Path);
        var dir = Path.GetDirectoryName(target)!;
        if (!Directory.Exists(dir)) throw HavenException.Invalid($"folder does not exist: {dir}");
        var disks = Store.ListDisks(vm.Id);
        var targets = disks.Count == 1
            ? [target]
            : disks.ConvertAll(d => Path.Combine(dir, $"{Path.GetFileNameWithoutExtension(target)}-disk{d.Index}{Path.GetExtension(target)}"));
        foreach (var t in targets)
            if (File.Exists(t) || Directory.Exists(t)) throw HavenException.Conflict($"{t} already exists");
        var tree = new LayerTree(Paths, Store.ListLayers(vm.Id));
        var written = new List<string>();
        try
        {
            for (var i = 0; i < disks.Count; i++)
            {
                var partial = targets[i] + ".partial";
                written.Add(partial);
                await QemuImg.ConvertAsync(tree.PathOf(tree.LayerOf(cp.Id, disks[i].Index)), DiskFormat.Qcow2, partial, format, ct);
            }
            for (var i = 0; i < disks.Count; i++) File.Move(targets[i] + ".partial", targets[i]);
        }
        catch
        {
            foreach (var f in written) host.Cleanup("delete the partial export " + f, () => File.Delete(f));
            throw;
        }
        return new CheckpointExportResult { Files = targets };
    }
}
