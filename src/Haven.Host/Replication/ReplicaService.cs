using System.Buffers;
using Haven.Api;
using Haven.Host.Checkpoints;
using Haven.Host.State;
using Haven.Nbd;
using Haven.Qemu.Images;
using Microsoft.Extensions.Logging;

namespace Haven.Host.Replication;

/// <summary>
/// The replica side of replication: replica VMs and their recovery points. A replica VM is an ordinary
/// Haven VM, kept off, whose checkpoints are the recovery points: a cycle's changed extents are written into
/// the VM's (empty) active layers, then a checkpoint named after the cycle freezes them. Until that checkpoint
/// is committed the cycle does not exist: a failure, or a crash (the reconciler), puts empty active layers back,
/// so the latest committed point is never touched and the disks always open in QEMU. docs/replication.md,
/// "Replica storage".
/// </summary>
public sealed partial class ReplicaService(HavenHost host)
{
    public const string CycleOperation = "replica-cycle";
    /// <summary>Largest extent one message may carry; the wire limit is set from it.</summary>
    public const int MaxExtentBytes = 4 << 20;

    private HostStore Store => host.Store;
    private HostPaths Paths => host.Paths;

    /// <summary>Test seam: runs at each named step of a cycle (the same names as the crash points).</summary>
    internal Func<string, Task>? AtStep { get; set; }

    private async Task StepAsync(string name)
    {
        CrashPoints.Hit(name);
        if (AtStep is not null) await AtStep(name);
    }

    /// <summary>The replica of a primary's VM, created off with empty disks of the primary's sizes.</summary>
    public async Task<ReplicaRecord> CreateAsync(ReplicaCreateSpec spec, CancellationToken ct)
    {
        Names.Validate(spec.VmName, "VM");
        if (spec.DiskSizes.Count == 0) throw HavenException.Invalid("a replica needs at least one disk");
        if (spec.AdditionalPoints is < 0 or > 24) throw HavenException.Invalid("additional recovery points must be 0..24");
        if (spec.AdoptExisting && Store.ListVms().Find(v => v.Name == spec.VmName) is { } copy)
            return await AdoptAsync(copy, spec, ct);
        var info = await host.Vms.CreateAsync(new VmCreateRequest
        {
            Name = spec.VmName,
            Vcpus = spec.Vcpus,
            MemoryMiB = spec.MemoryMiB,
            Disks = spec.DiskSizes.ConvertAll(size => new DiskSpec { SizeBytes = size }),
            Kernel = spec.Kernel,
            Initrd = spec.Initrd,
            Append = spec.Append,
            GuestAgent = spec.GuestAgent,
            Accelerator = spec.Accelerator,
            // Recovery points are checkpoints of the replica; Production: taken while the VM is off they are at rest.
            CheckpointType = CheckpointType.Production,
            Nics = spec.Hardware?.Nics ?? [],
            CpuModel = spec.Hardware?.CpuModel ?? "auto",
            DiskBus = spec.Hardware?.DiskBus ?? "virtio-blk",
            BootOrder = spec.Hardware?.BootOrder.Where(d => d != Vms.Hardware.CdromId).ToList(),
            Firmware = spec.Hardware?.Firmware ?? Vms.Firmware.Bios,
            UefiCode = spec.Hardware?.Firmware == Vms.Firmware.Uefi ? Vms.Firmware.LocalCode(spec.Hardware.UefiCode) : null,
        }, ct, string.IsNullOrEmpty(spec.StorageLocation) ? null : spec.StorageLocation, copyOfPrimary: true);
        var record = new ReplicaRecord(info.Id, spec.PrimaryHost, spec.PrimaryVmId, spec.TrustGroup, 0, spec.AdditionalPoints, host.Time.GetUtcNow(),
            PrimaryIdentity: spec.PrimaryIdentity);
        Store.Write(w => w.InsertReplica(record));
        return record;
    }

    /// <summary>Largest kernel or initrd a primary may send.</summary>
    public const long MaxBootFileBytes = 256L << 20;

    /// <summary>
    /// A boot file (kernel or initrd) of a replica VM, received as bytes (never as a path on this host: a primary
    /// must not make a replica load this host's files). Written owner-only into the VM's own folder (temporary file,
    /// fsync, rename), exactly <paramref name="size"/> bytes or nothing, then the VM boots from it.
    /// </summary>
    public async Task SetBootFileAsync(string vmId, BootFile kind, long size, IAsyncEnumerable<ReadOnlyMemory<byte>> chunks, CancellationToken ct)
    {
        if (size is <= 0 or > MaxBootFileBytes) throw HavenException.Invalid($"a boot file is 1..{MaxBootFileBytes} bytes, not {size}");
        await using var _ = await host.LockVmAsync(vmId, ct);
        var vm = Store.FindVm(vmId) ?? throw HavenException.NotFound($"no VM with id {vmId}");
        var replica = Store.FindReplica(vmId) ?? throw HavenException.NotFound($"VM '{vm.Name}' is not a replica");
        if (replica.State != ReplicaState.Replicating || host.Runtimes.Get(vmId) is not null)
            throw HavenException.Conflict($"replica VM '{vm.Name}' is failed over; its boot files cannot change");
        if (kind == BootFile.Initrd && vm.Kernel is null) throw HavenException.Invalid("an initrd needs a kernel: send the kernel first");
        var path = Path.Combine(Paths.VmDir(vmId), kind == BootFile.Kernel ? "kernel" : "initrd");
        var partial = path + ".partial";
        try
        {
            await using (var file = ExportMedia.CreateOwnerOnly(partial))
            {
                long written = 0;
                await foreach (var chunk in chunks.WithCancellation(ct))
                {
                    written += chunk.Length;
                    if (written > size) throw HavenException.Invalid($"the {kind.ToString().ToLowerInvariant()} is longer than the {size} bytes announced");
                    await file.WriteAsync(chunk, ct);
                }
                if (written != size) throw HavenException.Invalid($"the {kind.ToString().ToLowerInvariant()} ended after {written} of {size} bytes");
                await file.FlushAsync(ct);
                file.Flush(flushToDisk: true);
            }
            File.Move(partial, path, overwrite: true);
        }
        catch
        {
            File.Delete(partial);
            throw;
        }
        Store.Write(w => w.SetVmBootFiles(vmId, kind == BootFile.Kernel ? path : vm.Kernel, kind == BootFile.Initrd ? path : vm.Initrd));
    }

    /// <summary>
    /// Initial replication from an existing copy: a VM already on this host (restored from a backup, imported)
    /// becomes the replica; the primary's first cycle then compares block hashes and sends only what differs.
    /// </summary>
    private async Task<ReplicaRecord> AdoptAsync(VmRecord copy, ReplicaCreateSpec spec, CancellationToken ct)
    {
        await using var _ = await host.LockVmAsync(copy.Id, ct);
        if (Store.FindReplica(copy.Id) is not null || Store.FindReplication(copy.Id) is not null)
            throw HavenException.Conflict($"VM '{copy.Name}' on the replica server is already part of a replication");
        if (host.Runtimes.Get(copy.Id) is not null) throw HavenException.Conflict($"VM '{copy.Name}' on the replica server is running; stop it to use it as the initial copy");
        var disks = Store.ListDisks(copy.Id);
        if (disks.Count != spec.DiskSizes.Count || disks.Exists(d => d.SizeBytes != spec.DiskSizes[d.Index]))
            throw HavenException.Invalid($"VM '{copy.Name}' on the replica server has other disks than the primary's VM; it cannot be the initial copy");
        var record = new ReplicaRecord(copy.Id, spec.PrimaryHost, spec.PrimaryVmId, spec.TrustGroup, 0, spec.AdditionalPoints, host.Time.GetUtcNow(),
            PrimaryIdentity: spec.PrimaryIdentity);
        Store.Write(w => w.InsertReplica(record));
        return record;
    }

    /// <summary>
    /// Initial replication by external media, replica side: creates the replica from an export folder and applies
    /// its cycle. The folder must be signed by the primary's host key (<see cref="FolderReplicaTarget"/>);
    /// <paramref name="authorize"/> checks the signer's certificate (trusted here, allowed by an authorization entry)
    /// and says into which storage and trust group, and to which identity the replica is bound. Every file's hash must
    /// match the signed definition. Refused, with nothing written, otherwise.
    /// </summary>
    public async Task<ReplicaRecord> ImportAsync(string folder, Func<System.Security.Cryptography.X509Certificates.X509Certificate2, ImportDecision> authorize, CancellationToken ct)
    {
        var media = await ExportMedia.OpenAsync(folder, ct);
        using var signer = media.Signer;
        var decision = authorize(signer);
        if (!decision.Allowed) throw HavenException.Conflict(decision.Reason);
        var exported = media.Definition;
        var primaryHost = decision.PrimaryHost;
        var spec = exported.Spec;
        if (Store.ListReplicas().Exists(r => r.PrimaryVmId == spec.PrimaryVmId))
            throw HavenException.Conflict($"a replica of {primaryHost}'s VM '{spec.VmName}' exists already");
        await media.VerifyFilesAsync(ct); // before anything is created: a tampered folder leaves no trace
        var created = await CreateAsync(spec with
        {
            PrimaryHost = primaryHost, PrimaryIdentity = decision.Owner, TrustGroup = decision.TrustGroup ?? "",
            AdoptExisting = false, StorageLocation = decision.Storage, Kernel = null, Initrd = null,
        }, ct);
        try
        {
            foreach (var (kind, file) in new[] { (BootFile.Kernel, ExportMedia.KernelFile), (BootFile.Initrd, ExportMedia.InitrdFile) })
                if (media.Has(file))
                    await SetBootFileAsync(created.VmId, kind, media.Length(file), ExportMedia.Chunks(media.Open(file), ct), ct);
            await ApplyCycleAsync(created.VmId, exported.Header, FolderReplicaTarget.ReadExtentsAsync(media.Open(ExportMedia.ExtentsFile), ct), ct);
        }
        catch
        {
            // A folder that does not apply (or changed since it was checked) leaves no half replica behind.
            await host.CleanupAsync("remove the replica whose import failed", () => host.Vms.RemoveAsync(Store.FindVm(created.VmId)!.Name, CancellationToken.None));
            throw;
        }
        return Store.FindReplica(created.VmId)!;
    }

    public ReplicaRecord? FindByPrimary(string primaryHost, string primaryVmId)
        => Store.ListReplicas().Find(r => r.PrimaryHost == primaryHost && r.PrimaryVmId == primaryVmId);

    public ReplicaRecord Find(string vmName)
    {
        var vm = host.Vms.Find(vmName);
        return Store.FindReplica(vm.Id) ?? throw HavenException.NotFound($"VM '{vmName}' is not a replica");
    }

    /// <summary>
    /// Applies one cycle, all or nothing: the extents (disk, offset, data or zeroes) go into the active layers,
    /// then the recovery point is committed. <paramref name="header"/>.BaseCycle must be the last committed
    /// cycle; otherwise <see cref="ReplicaOutOfSyncException"/> and nothing is written (the primary must resync).
    /// </summary>
    public async Task<ReplicaPointRecord> ApplyCycleAsync(string vmId, ReplicaCycleHeader header, IAsyncEnumerable<ReplicaExtent> extents, CancellationToken ct)
    {
        await using var _ = await host.LockVmAsync(vmId, ct);
        var vm = Store.FindVm(vmId) ?? throw HavenException.NotFound($"no VM with id {vmId}");
        var replica = Store.FindReplica(vmId) ?? throw HavenException.NotFound($"VM '{vm.Name}' is not a replica");
        if (header.Cycle <= 0 || header.BaseCycle < 0) throw HavenException.Invalid($"cycle numbers are positive (cycle {header.Cycle}, base {header.BaseCycle})");
        if (header.FailoverNetwork is { } network) FailoverNetworkMap.CheckSyntax(network);
        if (header.BaseCycle != replica.LastCycle) throw new ReplicaOutOfSyncException(vm.Name, replica.LastCycle, header.BaseCycle);
        if (header.Cycle <= replica.LastCycle) throw HavenException.Invalid($"cycle {header.Cycle} is not after the last committed cycle {replica.LastCycle}");
        if (replica.State != ReplicaState.Replicating || host.Runtimes.Get(vmId) is not null)
            throw HavenException.Conflict($"replica VM '{vm.Name}' is failed over; it takes no cycles until the failover is cancelled");
        if (header.UefiVars is { } sentVars && (vm.Hardware.Firmware != Vms.Firmware.Uefi || sentVars.Length < Vms.Firmware.MinVarsBytes || sentVars.Length > Vms.Firmware.MaxVarsBytes))
            throw HavenException.Invalid($"the cycle carries a UEFI variable store of {sentVars.Length} bytes for {(vm.Hardware.Firmware == Vms.Firmware.Uefi ? "a" : "a BIOS")} replica that cannot take it");
        var disks = Store.ListDisks(vmId);
        if (header.DiskSizes.Count != disks.Count) throw HavenException.Invalid($"the cycle has {header.DiskSizes.Count} disk(s), the replica {disks.Count}");
        for (var i = 0; i < disks.Count; i++)
            if (header.DiskSizes[i] != disks[i].SizeBytes)
                throw HavenException.Invalid($"disk {i} is {header.DiskSizes[i]} bytes on the primary and {disks[i].SizeBytes} on the replica");

        var plan = new ReplicaCyclePlan
        {
            Cycle = header.Cycle,
            CheckpointName = PointName(header.Cycle),
            ActiveLayers = disks.ConvertAll(d => d.ActiveLayerId),
        };
        var op = new OperationRecord(HostPaths.NewId(), vmId, CycleOperation, PlanJson.Write(plan), host.Time.GetUtcNow());
        Store.Write(w => w.InsertOperation(op));
        var committed = false;
        try
        {
            var ranges = new List<(int Disk, long Offset, long Length)>();
            await WriteExtentsAsync(vmId, disks, op, plan, extents, ranges, ct);
            await StepAsync("replica.after-data");
            host.Extended.Mark(vmId, disks, ranges); // before the commit: an extended cycle must never miss these blocks
            // Into the VM's own folder only; the recovery point's checkpoint keeps its copy (states/<cp>.vars).
            if (header.UefiVars is { } vars) Vms.Firmware.WriteVars(Paths.UefiVarsFile(vmId), vars);
            await host.Checkpoints.CreateLockedAsync(vm, plan.CheckpointName, ct);
            var cp = Store.ListCheckpoints(vmId).Find(c => c.Name == plan.CheckpointName)!;
            await StepAsync("replica.after-checkpoint");
            var point = new ReplicaPointRecord(vmId, header.Cycle, cp.Id, header.PointInTime, header.Consistency);
            Store.Write(w =>
            {
                w.InsertReplicaPoint(point);
                w.SetReplicaCycle(vmId, header.Cycle);
                w.DeleteOperation(op.Id);
            });
            committed = true;
            if (header.FailoverNetwork is { } map)
            {
                // The cycle stands either way; a mapping not stored now is sent again with the next cycle.
                try { StoreFailoverNetwork(vmId, map); }
                catch (IOException e) { host.Log.LogWarning("replica VM {Vm}: failover network not stored: {Error}", vm.Name, e.Message); }
            }
            await StepAsync("replica.after-commit");
            await PruneLockedAsync(vmId, replica.AdditionalPoints, ct);
            return point;
        }
        finally
        {
            if (!committed) await DiscardAsync(vmId, op, plan, CancellationToken.None);
        }
    }

    /// <summary>NBD writes kept in flight on the replica while the next extent arrives.</summary>
    private const int WriteDepth = 4;

    private async Task WriteExtentsAsync(string vmId, List<DiskRecord> disks, OperationRecord op, ReplicaCyclePlan plan,
        IAsyncEnumerable<ReplicaExtent> extents, List<(int Disk, long Offset, long Length)> ranges, CancellationToken ct)
    {
        var tree = new LayerTree(Paths, Store.ListLayers(vmId));
        var servers = new List<QemuNbdServer>();
        var clients = new List<NbdClient>();
        // Writes in flight, oldest first: each holds a pooled copy of its data (an extent's data is only valid until
        // the next extent is asked for), so the next message is received while the previous ones are written.
        var writing = new Queue<(int Disk, long Offset, long Length, byte[]? Buffer, Task Write)>();
        try
        {
            foreach (var d in disks)
            {
                var socket = Path.Combine(Paths.RunDir, $"{vmId}-replica{d.Index}.nbd");
                var server = await QemuNbdServer.StartAsync(tree.PathOf(tree[d.ActiveLayerId]), DiskFormat.Qcow2, socket, "replica", writable: true, connections: 1, ct: ct);
                servers.Add(server);
                plan.QemuNbdPids.Add(server.Pid);
                Store.Write(w => w.UpdateOperation(op.Id, PlanJson.Write(plan)));
                clients.Add(await NbdClient.ConnectAsync(new NbdEndpoint.Unix(socket), "replica", [], ct));
            }
            await foreach (var e in extents.WithCancellation(ct))
            {
                if (e.Disk < 0 || e.Disk >= disks.Count) throw HavenException.Invalid($"extent for disk {e.Disk}, which the replica does not have");
                // Written so that it cannot overflow: a hostile offset near long.MaxValue must not wrap around.
                if (e.Offset < 0 || e.Length <= 0 || e.Length > MaxExtentBytes || e.Offset > disks[e.Disk].SizeBytes - e.Length)
                    throw HavenException.Invalid($"extent {e.Offset}+{e.Length} does not fit disk {e.Disk} ({disks[e.Disk].SizeBytes} bytes)");
                if (e.Data is { } checkedData && checkedData.Length != e.Length)
                    throw HavenException.Invalid($"extent at {e.Offset} says {e.Length} bytes and carries {checkedData.Length}");
                ranges.Add((e.Disk, e.Offset, e.Length));
                // Overlapping extents land in the order sent: wait for an earlier write to the same bytes first.
                while (writing.Count >= WriteDepth || writing.Count > 0 && Overlaps(writing, e))
                    await FinishOldestAsync(writing);
                if (e.Data is not { } data)
                {
                    writing.Enqueue((e.Disk, e.Offset, e.Length, null, clients[e.Disk].WriteZeroesAsync(e.Offset, e.Length, ct)));
                    continue;
                }
                var buffer = ArrayPool<byte>.Shared.Rent(e.Length);
                data.CopyTo(buffer);
                Task write;
                try { write = clients[e.Disk].WriteAsync(e.Offset, buffer.AsMemory(0, e.Length), ct); }
                catch { ArrayPool<byte>.Shared.Return(buffer); throw; }
                writing.Enqueue((e.Disk, e.Offset, e.Length, buffer, write));
            }
            while (writing.Count > 0) await FinishOldestAsync(writing);
            foreach (var c in clients) await c.FlushAsync(ct);
        }
        finally
        {
            // A failure anywhere: the writes still in flight end (the cycle is discarded) before their buffers go back.
            foreach (var (_, _, _, buffer, write) in writing)
            {
                try { await write; }
                catch (Exception) { /* the cycle fails with the first error; this write's outcome no longer matters */ }
                if (buffer is not null) ArrayPool<byte>.Shared.Return(buffer);
            }
            foreach (var c in clients) await c.DisposeAsync();
            foreach (var s in servers) await s.DisposeAsync();
            foreach (var d in disks) File.Delete(Path.Combine(Paths.RunDir, $"{vmId}-replica{d.Index}.nbd"));
        }

        static bool Overlaps(Queue<(int Disk, long Offset, long Length, byte[]? Buffer, Task Write)> writing, ReplicaExtent e)
        {
            foreach (var w in writing)
                if (w.Disk == e.Disk && w.Offset < e.Offset + e.Length && e.Offset < w.Offset + w.Length) return true;
            return false;
        }

        static async Task FinishOldestAsync(Queue<(int Disk, long Offset, long Length, byte[]? Buffer, Task Write)> writing)
        {
            await writing.Peek().Write; // a failure leaves it queued: the finally above waits for the rest and returns every buffer
            var done = writing.Dequeue();
            if (done.Buffer is not null) ArrayPool<byte>.Shared.Return(done.Buffer);
        }
    }

    /// <summary>
    /// Undoes a cycle that did not commit: a checkpoint it made is removed again, and every active layer is
    /// recreated empty over the latest recovery point. Also the reconciler's repair after a crash.
    /// </summary>
    internal async Task DiscardAsync(string vmId, OperationRecord op, ReplicaCyclePlan plan, CancellationToken ct)
    {
        foreach (var pid in plan.QemuNbdPids) QemuNbdServer.KillIfQemuNbd(pid);
        var cp = Store.ListCheckpoints(vmId).Find(c => c.Name == plan.CheckpointName);
        if (cp is not null && !Store.ListReplicaPoints(vmId).Exists(p => p.CheckpointId == cp.Id))
        {
            // Frozen but not committed: the point never existed for anyone; its layers hold the partial data.
            await host.Removal.RemoveOneAsync(vmId, cp.Id, ct);
        }
        foreach (var d in Store.ListDisks(vmId)) await RecreateEmptyAsync(vmId, d, ct);
        // The variable store goes back to the latest point's too (the next cycle without one copies it into its point).
        if (Store.ListReplicaPoints(vmId) is { Count: > 0 } points && Paths.CheckpointVarsFile(vmId, points[^1].CheckpointId) is var kept && File.Exists(kept))
            Vms.Firmware.CopyVars(kept, Paths.UefiVarsFile(vmId));
        Store.Write(w => w.DeleteOperation(op.Id));
    }

    /// <summary>The active layer of <paramref name="d"/> as a new empty overlay (same id and file name) of its parent.</summary>
    private async Task RecreateEmptyAsync(string vmId, DiskRecord d, CancellationToken ct)
    {
        var layers = Store.ListLayers(vmId);
        var tree = new LayerTree(Paths, layers);
        var active = tree[d.ActiveLayerId];
        var path = tree.PathOf(active);
        // Delete first: on a full disk there may be no room for a second file. A crash in between is repaired
        // by running this again (the journal row stays until the end).
        File.Delete(path);
        if (active.ParentId is { } parent) await QemuImg.CreateOverlayAsync(path, tree.PathOf(tree[parent]), ct);
        else await QemuImg.CreateAsync(path, DiskFormat.Qcow2, d.SizeBytes, ct);
    }

    /// <summary>
    /// Keeps the latest recovery point and, when asked for additional points, the newest point of each of the
    /// last N hours; removes (merges away) the rest, oldest first.
    /// </summary>
    private async Task PruneLockedAsync(string vmId, int additionalPoints, CancellationToken ct)
    {
        var points = Store.ListReplicaPoints(vmId);
        if (points.Count <= 1) return;
        var keep = RecoveryPointRetention.Keep(points, additionalPoints);
        foreach (var p in points)
        {
            if (keep.Contains(p.Cycle)) continue;
            if (!await TryRemovePointAsync(vmId, p, ct)) return;
            Store.Write(w => w.DeleteReplicaPoint(vmId, p.Cycle));
        }
    }

    /// <summary>
    /// Removes one old recovery point after a cycle committed. Best effort: the cycle stands whatever happens here,
    /// and the next cycle's prune tries again. A lock conflict (another qemu-img or qemu-nbd briefly holding a layer,
    /// seen under load) is retried once.
    /// </summary>
    private async Task<bool> TryRemovePointAsync(string vmId, ReplicaPointRecord p, CancellationToken ct)
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                await host.Removal.RemoveOneAsync(vmId, p.CheckpointId, ct);
                return true;
            }
            catch (ToolFailedException e) when (attempt == 1 && e.Message.Contains("lock", StringComparison.Ordinal))
            {
                await Task.Delay(500, ct);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                host.Log.LogWarning("VM {Vm}: recovery point {Cycle} stays until the next cycle; removing it failed: {Error}", vmId, p.Cycle, e.Message);
                return false;
            }
        }
    }

    public static string PointName(long cycle) => $"rp-{cycle:D8}";

    /// <summary>
    /// Resynchronization, replica side: an XxHash128 of every 64 KiB block of the latest recovery point (16 bytes
    /// each, per disk; before any point, of the empty disks), so the primary can send only the blocks that differ.
    /// </summary>
    public async Task<byte[][]> HashLatestAsync(string vmId, CancellationToken ct)
    {
        await using var _ = await host.LockVmAsync(vmId, ct);
        var points = Store.ListReplicaPoints(vmId);
        var disks = Store.ListDisks(vmId);
        var tree = new LayerTree(Paths, Store.ListLayers(vmId));
        var result = new byte[disks.Count][];
        for (var i = 0; i < disks.Count; i++)
        {
            var layer = points.Count == 0 ? tree[disks[i].ActiveLayerId] : tree.LayerOf(points[^1].CheckpointId, disks[i].Index);
            var socket = Path.Combine(Paths.RunDir, $"{vmId}-hash{i}.nbd");
            await using var server = await QemuNbdServer.StartAsync(tree.PathOf(layer), DiskFormat.Qcow2, socket, "point", writable: false, connections: 1, ct: ct);
            try
            {
                await StepAsync("replica.while-hashing");
                await using var nbd = await NbdClient.ConnectAsync(new NbdEndpoint.Unix(socket), "point", ["base:allocation"], ct);
                result[i] = await BlockHashes.OfAsync(nbd, ct);
            }
            finally { File.Delete(socket); }
        }
        return result;
    }
}

/// <summary>What the replica needs to create the replica VM.</summary>
public sealed record ReplicaCreateSpec
{
    public required string VmName { get; init; }
    public required string PrimaryHost { get; init; }
    public required string PrimaryVmId { get; init; }
    public required string TrustGroup { get; init; }
    public required List<long> DiskSizes { get; init; }
    public int Vcpus { get; init; } = 1;
    public int MemoryMiB { get; init; } = 256;
    public string? Kernel { get; init; }
    public string? Initrd { get; init; }
    public string? Append { get; init; }
    public bool GuestAgent { get; init; }
    public string Accelerator { get; init; } = "auto";
    /// <summary>NICs (with the primary's MACs), CPU model, disk bus, boot order; null: no NICs, defaults. No CD-ROM.</summary>
    public VmHardware? Hardware { get; init; }
    public int AdditionalPoints { get; init; }
    /// <summary>Use a VM of that name already on the replica host as the initial copy (its blocks are compared, not sent).</summary>
    public bool AdoptExisting { get; init; }
    /// <summary>The replica server's storage location for this primary (authorization entry); null: the data folder.</summary>
    public string? StorageLocation { get; init; }
    /// <summary>The only primary that may touch the replica (<see cref="ReplicaRecord.PrimaryIdentity"/>); not exported.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public string PrimaryIdentity { get; init; } = "";
}

/// <summary>A replica VM's boot file, received as bytes.</summary>
public enum BootFile { Kernel, Initrd }

/// <summary>The replica server's answer to an export folder's signer: refused (why), or where the replica goes and whose it is.</summary>
public sealed record ImportDecision(bool Allowed, string Reason, string PrimaryHost = "", string Owner = "", string? TrustGroup = null, string? Storage = null);

/// <param name="UefiVars">A UEFI VM's variable store at the point in time (kept with the recovery point); null: none sent.</param>
public sealed record ReplicaCycleHeader(long Cycle, long BaseCycle, List<long> DiskSizes, DateTimeOffset PointInTime, Consistency Consistency, byte[]? UefiVars = null)
{
    /// <summary>The primary's failover network (NIC to bridge) as of this cycle; empty: none; null: not sent (kept as it is).</summary>
    public Dictionary<string, string>? FailoverNetwork { get; init; }
}

/// <summary>One changed extent: data, or zeroes when <see cref="Data"/> is null.</summary>
public readonly record struct ReplicaExtent(int Disk, long Offset, int Length, ReadOnlyMemory<byte>? Data);

/// <summary>The journal payload of a cycle being applied.</summary>
public sealed record ReplicaCyclePlan
{
    public required long Cycle { get; init; }
    public required string CheckpointName { get; init; }
    public required List<string> ActiveLayers { get; init; }
    /// <summary>The qemu-nbd servers writing the active layers, to end after a crash.</summary>
    public List<int> QemuNbdPids { get; init; } = [];
}

/// <summary>The primary sent a cycle built on another base than the replica's last committed cycle.</summary>
public sealed class ReplicaOutOfSyncException(string vm, long replicaCycle, long baseCycle)
    : Exception($"replica VM '{vm}' is at cycle {replicaCycle}, the primary sent changes since cycle {baseCycle}; resynchronization needed")
{
    public long ReplicaCycle { get; } = replicaCycle;
}

/// <summary>Which recovery points to keep: the latest, plus the newest point of each of the last N clock hours that have one.</summary>
public static class RecoveryPointRetention
{
    public static HashSet<long> Keep(IReadOnlyList<ReplicaPointRecord> points, int additionalPoints)
    {
        var keep = new HashSet<long>();
        if (points.Count == 0) return keep;
        var latest = points[^1];
        keep.Add(latest.Cycle);
        if (additionalPoints <= 0) return keep;
        var hoursSeen = new HashSet<long>();
        for (var i = points.Count - 2; i >= 0 && hoursSeen.Count < additionalPoints; i--)
        {
            var hour = points[i].PointTime.ToUnixTimeSeconds() / 3600;
            if (hour == latest.PointTime.ToUnixTimeSeconds() / 3600) continue; // the latest stands for its own hour
            if (hoursSeen.Add(hour)) keep.Add(points[i].Cycle);
        }
        return keep;
    }
}
