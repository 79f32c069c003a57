using System.Diagnostics;
using System.Text.Json;
using Haven.Api;
using Haven.Backup;
using Haven.Host.Checkpoints;
using Haven.Host.State;
using Haven.Nbd;
using Haven.Qemu.Images;

namespace Haven.Host.Backups;

/// <summary>
/// Restores a backup as a new VM, over its VM (when off), or one disk into an image file. Every backup
/// restores as a full. Disks are written into new images (raw directly, qcow2/VHDX through qemu-nbd) with many chunks in flight;
/// files become visible (renamed, or recorded in the state database) only when complete.
/// </summary>
public sealed class RestoreService(HavenHost host)
{
    public async Task<RestoreResult> RestoreAsync(RestoreRequest req, CancellationToken ct)
    {
        var clock = Stopwatch.StartNew();
        var modes = (req.Disk is not null ? 1 : 0) + (req.InPlace ? 1 : 0) + (req.NewName is not null ? 1 : 0);
        if (modes != 1) throw HavenException.Invalid("restore takes exactly one of: a new VM name, in place, or a disk and a target path");
        await using var repo = await host.Repositories.OpenAsync(req, ct);
        Repository.BackupManifest manifest;
        try { manifest = await repo.ReadManifestAsync(req.BackupId, ct); }
        catch (Repository.BackupNotFoundException e) { throw HavenException.NotFound(e.Message); }

        if (req.Disk is { } diskIndex)
        {
            if (diskIndex < 0 || diskIndex >= manifest.Disks.Count) throw HavenException.Invalid($"backup {req.BackupId} has no disk {diskIndex}");
            var format = QemuImg.ParseFormat(req.Format) ?? throw HavenException.Invalid($"format must be qcow2, raw or vhdx, not '{req.Format}'");
            if (string.IsNullOrWhiteSpace(req.TargetPath)) throw HavenException.Invalid("restoring a disk needs a target path");
            var target = Path.GetFullPath(req.TargetPath);
            if (File.Exists(target) || Directory.Exists(target)) throw HavenException.Conflict($"{target} already exists");
            if (!Directory.Exists(Path.GetDirectoryName(target))) throw HavenException.Invalid($"folder does not exist: {Path.GetDirectoryName(target)}");
            var partial = target + ".partial";
            try
            {
                await RestoreDiskAsync(repo, manifest.Disks[diskIndex], partial, format, ct);
                File.Move(partial, target);
            }
            finally { File.Delete(partial); }
            return new RestoreResult { Files = [target], BytesWritten = manifest.Disks[diskIndex].SizeBytes, WallMilliseconds = clock.Elapsed.TotalMilliseconds };
        }

        var definition = manifest.VmDefinition.Deserialize<VmInfo>(ApiJson.Options) ?? throw HavenException.Invalid("the backup holds no VM definition");
        if (req.InPlace) return await RestoreInPlaceAsync(repo, manifest, definition, clock, ct);
        var name = Names.Validate(req.NewName ?? throw HavenException.Invalid("restore needs a new VM name, --in-place, or a disk and target"), "VM");
        await using var _ = await host.LockHostAsync(ct);
        if (host.Store.FindVmByName(name) is not null) throw HavenException.Conflict($"a VM named '{name}' already exists");
        // A new VM gets new MACs: it may run next to the original on one network (docs/architecture.md "VM hardware").
        var hardware = Vms.Hardware.WithNewMacs(HardwareOf(definition, manifest.Disks.Count), host.Vms.MacsInUse(exceptVmId: null));
        var vars = VarsOf(manifest, hardware);
        var vmId = HostPaths.NewId();
        Qemu.OwnerOnly.CreateFolder(host.Paths.DisksDir(vmId));
        Qemu.OwnerOnly.CreateFolder(host.Paths.StatesDir(vmId));
        var layers = new List<LayerRecord>();
        try
        {
            if (vars is not null) Vms.Firmware.WriteVars(host.Paths.UefiVarsFile(vmId), vars);
            for (var i = 0; i < manifest.Disks.Count; i++)
            {
                var layer = new LayerRecord(HostPaths.NewId(), vmId, i, null, null);
                await RestoreDiskAsync(repo, manifest.Disks[i], host.Paths.LayerFile(vmId, layer.Id), DiskFormat.Qcow2, ct);
                layers.Add(layer);
            }
        }
        catch
        {
            host.Cleanup("delete the folder of the VM being restored", () => HostPaths.DeleteVmFolder(host.Paths.VmDir(vmId)));
            throw;
        }
        host.Store.Write(w =>
        {
            w.InsertVm(ToRecord(definition, vmId, name, hardware));
            for (var i = 0; i < layers.Count; i++)
            {
                w.InsertLayer(layers[i]);
                w.InsertDisk(new DiskRecord(vmId, i, manifest.Disks[i].SizeBytes, layers[i].Id));
            }
        });
        return new RestoreResult { Vm = name, BytesWritten = Total(manifest), WallMilliseconds = clock.Elapsed.TotalMilliseconds };
    }

    private async Task<RestoreResult> RestoreInPlaceAsync(Repository.Repository repo, Repository.BackupManifest manifest, VmInfo definition, Stopwatch clock, CancellationToken ct)
    {
        var vm = host.Vms.Find(definition.Name);
        await using var _ = await host.LockVmAsync(vm.Id, ct);
        if (host.Runtimes.Get(vm.Id) is not null) throw HavenException.Conflict($"VM '{vm.Name}' is running; stop it before restoring over it");
        var hardware = HardwareOf(definition, manifest.Disks.Count);
        var vars = VarsOf(manifest, hardware);
        var newLayers = new List<LayerRecord>();
        try
        {
            for (var i = 0; i < manifest.Disks.Count; i++)
            {
                var layer = new LayerRecord(HostPaths.NewId(), vm.Id, i, null, null);
                await RestoreDiskAsync(repo, manifest.Disks[i], host.Paths.LayerFile(vm.Id, layer.Id), DiskFormat.Qcow2, ct);
                newLayers.Add(layer);
            }
        }
        catch
        {
            foreach (var l in newLayers) host.Cleanup("delete the restored layer " + l.Id, () => File.Delete(host.Paths.LayerFile(vm.Id, l.Id)));
            throw;
        }
        var oldLayers = host.Store.ListLayers(vm.Id);
        var oldCheckpoints = host.Store.ListCheckpoints(vm.Id);
        // One transaction swaps the disks; the old files (and the VM's checkpoints) go after it. A crash
        // before it leaves unreferenced new files, after it old ones: the start-up sweep removes either.
        host.Store.Write(w =>
        {
            foreach (var l in oldLayers) w.DeleteLayer(l.Id);
            foreach (var c in oldCheckpoints) w.DeleteCheckpoint(c.Id);
            w.SetCurrentCheckpoint(vm.Id, null);
            // The VM comes back as it was backed up, its MACs included (it is the same machine).
            if (definition.Hardware is not null) w.SetHardware(vm.Id, hardware);
            foreach (var l in newLayers) { w.InsertLayer(l); w.SetActiveLayer(vm.Id, l.DiskIndex, l.Id); }
        });
        // The store follows the disks (a crash in between leaves the old store with the restored disks: restore again).
        if (vars is not null) Vms.Firmware.WriteVars(host.Paths.UefiVarsFile(vm.Id), vars);
        foreach (var l in oldLayers) File.Delete(host.Paths.LayerFile(vm.Id, l.Id));
        foreach (var c in oldCheckpoints)
        {
            File.Delete(host.Paths.StateFile(vm.Id, c.Id));
            File.Delete(host.Paths.CheckpointVarsFile(vm.Id, c.Id));
        }
        return new RestoreResult { Vm = vm.Name, BytesWritten = Total(manifest), WallMilliseconds = clock.Elapsed.TotalMilliseconds };
    }

    /// <summary>The backed-up VM's hardware (older backups carry only vcpus, memory and network), checked like any input.</summary>
    private static VmHardware HardwareOf(VmInfo d, int diskCount)
    {
        var hw = d.Hardware ?? Vms.Hardware.FromLegacy(d.Vcpus, d.MemoryMiB, d.Network, "52:54:00:12:34:56");
        Vms.Hardware.Validate(hw, diskCount);
        return hw;
    }

    /// <summary>
    /// A UEFI backup's variable store (size and SHA-256 checked); a UEFI definition without one (it should not
    /// happen) gets the empty template that goes with its code image. Null for BIOS.
    /// </summary>
    private static byte[]? VarsOf(Repository.BackupManifest manifest, VmHardware hw)
    {
        if (hw.Firmware != Vms.Firmware.Uefi) return null;
        return Vms.PackedVars.Unpack(manifest.VmDefinition)
            ?? Vms.Firmware.ReadVars(Vms.Firmware.ResolveVarsSource(hw.UefiCode!, null));
    }

    private static long Total(Repository.BackupManifest m)
    {
        long t = 0;
        foreach (var d in m.Disks) t += d.SizeBytes;
        return t;
    }

    private VmRecord ToRecord(VmInfo d, string vmId, string name, VmHardware hardware) => new()
    {
        Id = vmId,
        Name = name,
        Hardware = hardware,
        Kernel = d.Kernel,
        Initrd = d.Initrd,
        Append = d.Append,
        GuestAgent = d.GuestAgent,
        Accelerator = d.Accelerator,
        CheckpointType = d.CheckpointType,
        CreatedAt = host.Time.GetUtcNow(),
    };

    /// <summary>Creates <paramref name="path"/> and writes the disk into it: directly for raw, through qemu-nbd for qcow2/VHDX.</summary>
    private async Task RestoreDiskAsync(Repository.Repository repo, Repository.DiskManifest disk, string path, DiskFormat format, CancellationToken ct)
    {
        try
        {
            if (format == DiskFormat.Raw)
            {
                // A new sparse file reads as zeros: zero chunks stay holes.
                using var file = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, FileOptions.Asynchronous);
                RandomAccess.SetLength(file, disk.SizeBytes);
                await DiskRestore.RunAsync(repo, disk.Chunks, disk.ChunkSize, disk.SizeBytes, new RawFileBlockTarget(file), targetIsZeroed: true, null, ct);
                return;
            }
            await QemuImg.CreateAsync(path, format, disk.SizeBytes, ct);
            var socket = Path.Combine(host.Paths.RunDir, $"restore-{HostPaths.NewId()}.nbd");
            await using var server = await QemuNbdServer.StartAsync(path, format, socket, "restore", writable: true, ct: ct);
            await using var target = await NbdClient.ConnectAsync(new NbdEndpoint.Unix(socket), "restore", [], ct);
            await DiskRestore.RunAsync(repo, disk.Chunks, disk.ChunkSize, disk.SizeBytes, new NbdBlockTarget(target), targetIsZeroed: true, null, ct);
        }
        catch
        {
            host.Cleanup("delete the partial restore " + path, () => File.Delete(path));
            throw;
        }
    }
}
