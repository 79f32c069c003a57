using System.Diagnostics;
using Haven.Api;
using Haven.Host.State;
using Haven.Qemu.Images;
using Haven.Qemu.Runtime;

namespace Haven.Host.Checkpoints;

/// <summary>
/// Removes checkpoints by merging their layers away so that no other checkpoint's data and not the
/// current data change. Each disk is merged by the cheapest correct move (see <see cref="MergeMode"/>):
/// live through QEMU block jobs for layers the running VM has open, with qemu-img for the rest.
/// Every step can be repeated, so the reconciler finishes a removal a crash interrupted.
/// </summary>
public sealed class CheckpointRemoval(HavenHost host)
{
    private HostStore Store => host.Store;
    private HostPaths Paths => host.Paths;

    public async Task<CheckpointRemoveResult> RemoveAsync(string vmName, string checkpointName, bool subtree, CancellationToken ct)
    {
        var clock = Stopwatch.StartNew();
        var vm = host.Vms.Find(vmName);
        await using var _ = await host.LockVmAsync(vm.Id, ct);
        var cp = host.Checkpoints.Find(vm, checkpointName);
        var live = host.Runtimes.Get(vm.Id) is not null;
        var removed = new List<string>();
        if (!subtree)
        {
            await RemoveOneAsync(vm.Id, cp.Id, ct);
            removed.Add(cp.Name);
        }
        else
        {
            var all = Store.ListCheckpoints(vm.Id);
            var order = PostOrder(all, cp.Id);
            var plan = new RemoveSubtreePlan(order);
            var op = new OperationRecord(HostPaths.NewId(), vm.Id, OperationKinds.RemoveSubtree, PlanJson.Write(plan), host.Time.GetUtcNow());
            Store.Write(w => w.InsertOperation(op));
            await ContinueSubtreeAsync(vm.Id, op.Id, plan, ct);
            removed.AddRange(order.ConvertAll(id => all.Find(c => c.Id == id)!.Name));
        }
        return new CheckpointRemoveResult { Removed = removed, Live = live, ElapsedMilliseconds = clock.Elapsed.TotalMilliseconds };
    }

    /// <summary>Children before parents, so every single removal sees a consistent tree.</summary>
    private static List<string> PostOrder(List<CheckpointRecord> all, string rootId)
    {
        var order = new List<string>();
        void Visit(string id)
        {
            foreach (var c in all) if (c.ParentId == id) Visit(c.Id);
            order.Add(id);
        }
        Visit(rootId);
        return order;
    }

    internal async Task ContinueSubtreeAsync(string vmId, string operationId, RemoveSubtreePlan plan, CancellationToken ct)
    {
        foreach (var id in plan.CheckpointIds)
        {
            if (!Store.ListCheckpoints(vmId).Exists(c => c.Id == id)) continue; // removed before a crash
            await RemoveOneAsync(vmId, id, ct);
            CrashPoints.Hit("subtree.after-one");
        }
        Store.Write(w => w.DeleteOperation(operationId));
    }

    internal async Task RemoveOneAsync(string vmId, string checkpointId, CancellationToken ct)
    {
        var tree = new LayerTree(Paths, Store.ListLayers(vmId));
        var plan = new RemovePlan
        {
            CheckpointId = checkpointId,
            Disks = Store.ListDisks(vmId).ConvertAll(d =>
            {
                var layer = tree.LayerOf(checkpointId, d.Index);
                var children = tree.Children(layer.Id).ConvertAll(c => c.Id);
                var mode = children.Count switch { 0 => MergeMode.Delete, 1 => MergeMode.CommitChild, _ => MergeMode.StreamIntoChildren };
                return new DiskRemovalPlan(d.Index, layer.Id, layer.ParentId, children, mode);
            }),
        };
        var op = new OperationRecord(HostPaths.NewId(), vmId, OperationKinds.RemoveCheckpoint, PlanJson.Write(plan), host.Time.GetUtcNow());
        Store.Write(w => w.InsertOperation(op));
        await ContinueRemoveAsync(vmId, op.Id, plan, ct);
    }

    /// <summary>Merges every disk not yet merged, then records the result. Repeatable after a crash.</summary>
    internal async Task ContinueRemoveAsync(string vmId, string operationId, RemovePlan plan, CancellationToken ct)
    {
        foreach (var disk in plan.Disks)
        {
            if (plan.DisksMerged.Contains(disk.Disk)) continue;
            await MergeDiskAsync(vmId, disk, ct);
            CrashPoints.Hit("remove.after-merge");
            plan.DisksMerged.Add(disk.Disk);
            Store.Write(w => w.UpdateOperation(operationId, PlanJson.Write(plan)));
        }
        var tree = new LayerTree(Paths, Store.ListLayers(vmId));
        var vm = Store.FindVm(vmId)!;
        var cp = Store.ListCheckpoints(vmId).Find(c => c.Id == plan.CheckpointId)!;
        var deadFiles = new List<string>();
        Store.Write(w =>
        {
            foreach (var d in plan.Disks)
            {
                switch (d.Mode)
                {
                    case MergeMode.Delete:
                        w.DeleteLayer(d.LayerId);
                        deadFiles.Add(Paths.LayerFile(vmId, d.LayerId));
                        break;
                    case MergeMode.CommitChild:
                        var child = tree[d.Children[0]];
                        w.SetLayerCheckpoint(d.LayerId, child.CheckpointId);
                        if (child.CheckpointId is null) w.SetActiveLayer(vmId, d.Disk, d.LayerId);
                        foreach (var grandchild in tree.Children(child.Id)) w.SetLayerParent(grandchild.Id, d.LayerId);
                        w.DeleteLayer(child.Id);
                        deadFiles.Add(Paths.LayerFile(vmId, child.Id));
                        break;
                    case MergeMode.StreamIntoChildren:
                        foreach (var c in d.Children) w.SetLayerParent(c, d.ParentLayerId);
                        w.DeleteLayer(d.LayerId);
                        deadFiles.Add(Paths.LayerFile(vmId, d.LayerId));
                        break;
                }
            }
            foreach (var c in Store.ListCheckpoints(vmId))
                if (c.ParentId == cp.Id) w.SetCheckpointParent(c.Id, cp.ParentId);
            if (vm.CurrentCheckpointId == cp.Id) w.SetCurrentCheckpoint(vmId, cp.ParentId);
            w.DeleteCheckpoint(cp.Id);
            w.DeleteOperation(operationId);
        });
        // Files go after the rows: a crash in between leaves files the start-up sweep deletes.
        CrashPoints.Hit("remove.after-commit");
        foreach (var f in deadFiles) File.Delete(f);
        File.Delete(Paths.StateFile(vmId, cp.Id));
        File.Delete(Paths.CheckpointVarsFile(vmId, cp.Id));
    }

    private async Task MergeDiskAsync(string vmId, DiskRemovalPlan d, CancellationToken ct)
    {
        var tree = new LayerTree(Paths, Store.ListLayers(vmId));
        var qemu = host.Runtimes.Get(vmId);
        var layer = tree[d.LayerId];
        var layerRef = tree.Ref(layer);
        var parentNode = layer.ParentId is null ? null : tree[layer.ParentId].NodeName;
        var chain = qemu is null ? [] : await BlockOperations.GetChainAsync(qemu.Qmp, "disk" + d.Disk, ct);

        switch (d.Mode)
        {
            case MergeMode.Delete:
                return;

            case MergeMode.CommitChild:
            {
                var child = tree[d.Children[0]];
                var jobId = "commit-" + layer.Id;
                if (qemu is not null && (chain.Contains(child.NodeName) || chain.Contains(layer.NodeName)))
                {
                    await BlockOperations.FinishJobIfPresentAsync(qemu.Qmp, jobId, ct);
                    chain = await BlockOperations.GetChainAsync(qemu.Qmp, "disk" + d.Disk, ct);
                    if (chain.Contains(child.NodeName))
                    {
                        var childIsTop = chain[0] == child.NodeName;
                        await BlockOperations.ReopenAsync(qemu.Qmp, layerRef, parentNode, readOnly: false, ct);
                        CrashPoints.Hit("remove.before-live-commit");
                        await BlockOperations.CommitAsync(qemu.Qmp, jobId, chain[0], child.NodeName, layer.NodeName, ct);
                        // A backing layer goes back to read-only; after an active commit the layer is the top and stays writable.
                        if (!childIsTop) await BlockOperations.ReopenAsync(qemu.Qmp, layerRef, parentNode, readOnly: true, ct);
                    }
                    await BlockOperations.DeleteLayerNodesAsync(qemu.Qmp, child.NodeName, ct, host.Log);
                }
                else if (File.Exists(tree.PathOf(child)))
                {
                    // Repeating a commit after a crash rewrites the same clusters: the child is unchanged by it.
                    await QemuImg.CommitAsync(tree.PathOf(child), ct);
                }
                foreach (var grandchild in tree.Children(child.Id))
                {
                    if (chain.Contains(grandchild.NodeName)) continue; // QEMU rewrote its backing link during the live commit
                    await QemuImg.RebaseAsync(tree.PathOf(grandchild), tree.PathOf(layer), safe: false, ct);
                }
                return;
            }

            case MergeMode.StreamIntoChildren:
            {
                var parentPath = layer.ParentId is null ? null : tree.PathOf(tree[layer.ParentId]);
                foreach (var childId in d.Children)
                {
                    var child = tree[childId];
                    if (qemu is not null && chain.Contains(child.NodeName))
                    {
                        var jobId = "stream-" + child.Id;
                        await BlockOperations.FinishJobIfPresentAsync(qemu.Qmp, jobId, ct);
                        chain = await BlockOperations.GetChainAsync(qemu.Qmp, "disk" + d.Disk, ct);
                        if (!chain.Contains(layer.NodeName)) continue;
                        var childIsTop = chain[0] == child.NodeName;
                        if (!childIsTop) await BlockOperations.ReopenAsync(qemu.Qmp, tree.Ref(child), layer.NodeName, readOnly: false, ct);
                        await BlockOperations.StreamAsync(qemu.Qmp, jobId, child.NodeName, parentNode, ct);
                        if (!childIsTop) await BlockOperations.ReopenAsync(qemu.Qmp, tree.Ref(child), parentNode, readOnly: true, ct);
                    }
                    else
                    {
                        var info = await QemuImg.InfoAsync(tree.PathOf(child), forceShare: true, ct);
                        if (info.BackingFile == tree.PathOf(layer))
                            await QemuImg.RebaseAsync(tree.PathOf(child), parentPath, safe: true, ct);
                    }
                }
                if (qemu is not null) await BlockOperations.DeleteLayerNodesAsync(qemu.Qmp, layer.NodeName, ct, host.Log);
                return;
            }
        }
    }
}
