using Haven.Api;
using Haven.Host.Checkpoints;
using Haven.Host.State;
using Haven.Qemu.Images;
using Haven.Qemu.Qmp;
using Haven.Qemu.Runtime;
using Microsoft.Extensions.Logging;

namespace Haven.Host.Vms;

/// <summary>VM definitions and their QEMU processes: create, start, stop, remove, describe.</summary>
public sealed class VmService(HavenHost host)
{
    private HostStore Store => host.Store;
    private HostPaths Paths => host.Paths;

    public VmRecord Find(string name)
    {
        Names.Validate(name, "VM");
        return Store.FindVmByName(name) ?? throw HavenException.NotFound($"no VM named '{name}'");
    }

    public Task<VmInfo> CreateAsync(VmCreateRequest req, CancellationToken ct) => CreateAsync(req, ct, storageFolder: null);

    /// <param name="storageFolder">
    /// Where the VM's files go instead of the data folder (a replica server's storage location): the VM's folder
    /// is then a link to &lt;storageFolder&gt;/&lt;vm id&gt;.
    /// </param>
    /// <param name="copyOfPrimary">
    /// A replica VM: its NICs keep the primary's MACs (the failed-over VM answers on its own MAC) and may name bridges
    /// this host does not have yet; both are checked when it starts, not now. Syntax is checked all the same.
    /// </param>
    internal async Task<VmInfo> CreateAsync(VmCreateRequest req, CancellationToken ct, string? storageFolder, bool copyOfPrimary = false)
    {
        if (storageFolder is not null && !Directory.Exists(storageFolder)) throw HavenException.Invalid($"storage location does not exist: {storageFolder}");
        var name = Names.Validate(req.Name, "VM");
        if (req.Disks.Count is 0 or > 16) throw HavenException.Invalid("a VM needs between 1 and 16 disks");
        if (req.Network is not ("none" or "user")) throw HavenException.Invalid($"network must be 'none' or 'user', not '{req.Network}'");
        var requested = new VmHardware
        {
            Vcpus = req.Vcpus,
            MemoryMiB = req.MemoryMiB,
            CpuModel = req.CpuModel,
            DiskBus = req.DiskBus,
            Nics = req.Nics ?? (req.Network == "user" ? [new NicSpec { Mode = "user" }] : []),
            CdromDrive = req.Cdrom is not null,
            CdromIso = req.Cdrom is null ? null : CheckIso(req.Cdrom),
            BootOrder = req.BootOrder ?? [],
            Firmware = req.Firmware,
        };
        // The firmware files are checked before anything is written; the variable store is copied into the VM's folder below.
        string? varsSource = null;
        if (req.Firmware is not (Firmware.Bios or Firmware.Uefi)) throw HavenException.Invalid($"firmware must be bios or uefi, not '{req.Firmware}'");
        if (req.Firmware == Firmware.Uefi)
        {
            requested = requested with { UefiCode = Firmware.ResolveCode(req.UefiCode) };
            varsSource = Firmware.ResolveVarsSource(requested.UefiCode!, req.UefiVars);
        }
        else if (req.UefiCode is not null || req.UefiVars is not null)
            throw HavenException.Invalid("a UEFI code image or variable store needs --firmware uefi");
        ParseAccelerator(req.Accelerator);
        foreach (var f in new[] { req.Kernel, req.Initrd })
        {
            if (f is not null && !File.Exists(f)) throw HavenException.Invalid($"file not found: {f}");
            // A multiboot kernel reads -initrd as a comma-separated list (QemuCommandLine).
            if (f is not null && f.Contains(',')) throw HavenException.Invalid($"kernel and initrd paths must not contain a comma: {f}");
        }
        if (req.Initrd is not null && req.Kernel is null) throw HavenException.Invalid("an initrd needs a kernel");

        // Check every source before writing anything, so a bad disk leaves no trace.
        var sources = new List<(ImageInfo? Info, long Size)>();
        foreach (var d in req.Disks)
        {
            if (d.ImportPath is { } src) sources.Add((await InspectImportAsync(src, d.ImportFormat, ct), 0));
            else if (d.SizeBytes is { } size and >= 1024 * 1024 && size % 512 == 0) sources.Add((null, size));
            else throw HavenException.Invalid("a new disk needs a size of at least 1 MiB, a multiple of 512 bytes");
        }

        await using var _ = await host.LockHostAsync(ct);
        if (Store.FindVmByName(name) is not null) throw HavenException.Conflict($"a VM named '{name}' already exists");
        // MACs are checked under the host lock: two creates cannot both take the same one.
        var hardware = copyOfPrimary
            ? requested with { Nics = Hardware.AssignNics(requested.Nics, new HashSet<string>()) }
            : requested with { Nics = Hardware.AssignNics(requested.Nics, MacsInUse(exceptVmId: null)) };
        if (copyOfPrimary) Hardware.Validate(hardware, req.Disks.Count);
        else CheckHardware(hardware, req.Disks.Count);
        var vmId = HostPaths.NewId();
        if (storageFolder is not null)
        {
            var target = Path.Combine(Path.GetFullPath(storageFolder), vmId);
            Qemu.OwnerOnly.CreateFolder(target);
            Directory.CreateSymbolicLink(Paths.VmDir(vmId), target);
        }
        Qemu.OwnerOnly.CreateFolder(Paths.DisksDir(vmId));
        Qemu.OwnerOnly.CreateFolder(Paths.StatesDir(vmId));
        var disks = new List<(DiskRecord Disk, LayerRecord Layer)>();
        try
        {
            if (varsSource is not null) Firmware.CopyVars(varsSource, Paths.UefiVarsFile(vmId));
            for (var i = 0; i < sources.Count; i++)
            {
                var layer = new LayerRecord(HostPaths.NewId(), vmId, i, null, null);
                var path = Paths.LayerFile(vmId, layer.Id);
                var (info, size) = sources[i];
                if (info is not null)
                {
                    await QemuImg.ConvertAsync(UntrustedImage.Spec(info.Path, info.Format!.Value), null, path, DiskFormat.Qcow2, ct);
                    size = info.VirtualSize;
                }
                else await QemuImg.CreateAsync(path, DiskFormat.Qcow2, size, ct);
                disks.Add((new DiskRecord(vmId, i, size, layer.Id), layer));
            }
        }
        catch
        {
            host.Cleanup("delete the folder of the VM being created", () => HostPaths.DeleteVmFolder(Paths.VmDir(vmId)));
            throw;
        }
        var vm = new VmRecord
        {
            Id = vmId,
            Name = name,
            Hardware = hardware,
            Kernel = req.Kernel is null ? null : Path.GetFullPath(req.Kernel),
            Initrd = req.Initrd is null ? null : Path.GetFullPath(req.Initrd),
            Append = req.Append,
            GuestAgent = req.GuestAgent,
            Accelerator = req.Accelerator,
            CheckpointType = req.CheckpointType,
            CreatedAt = host.Time.GetUtcNow(),
            Autostart = req.Autostart,
        };
        Store.Write(w =>
        {
            w.InsertVm(vm);
            foreach (var (disk, layer) in disks) { w.InsertLayer(layer); w.InsertDisk(disk); }
        });
        host.Log.LogInformation("created VM {Vm} ({Id}): {Hardware}", name, vmId, Hardware.Write(hardware));
        return await DescribeAsync(vm, ct);
    }

    /// <summary>
    /// An import source must be a real, standalone disk image of the format given (or, with none given, the one
    /// its header shows): qcow2 or VHDX by header, or raw with a sector-sized length; nothing it names is followed
    /// (<see cref="UntrustedImage"/>).
    /// </summary>
    private static async Task<ImageInfo> InspectImportAsync(string path, string? format, CancellationToken ct)
    {
        DiskFormat? expected = null;
        if (format is not null)
            expected = QemuImg.ParseFormat(format) ?? throw HavenException.Invalid($"disk format must be qcow2, raw or vhdx, not '{format}'");
        try { return await UntrustedImage.InspectAsync(path, expected, ct); }
        catch (UntrustedImageException e) { throw HavenException.Invalid(e.Message); }
    }

    public static AcceleratorSetting ParseAccelerator(string s) => s switch
    {
        "auto" => AcceleratorSetting.Auto,
        "kvm" => AcceleratorSetting.Kvm,
        "tcg" => AcceleratorSetting.Tcg,
        _ => throw HavenException.Invalid($"accelerator must be auto, kvm or tcg, not '{s}'"),
    };

    public async Task<List<VmInfo>> ListAsync(CancellationToken ct)
    {
        var list = new List<VmInfo>();
        foreach (var vm in Store.ListVms()) list.Add(await DescribeAsync(vm, ct));
        return list;
    }

    public async Task<VmInfo> ShowAsync(string name, CancellationToken ct) => await DescribeAsync(Find(name), ct);

    /// <summary>
    /// Changes settings and hardware. Everything is checked before anything changes. While the VM runs only the
    /// CD-ROM medium (live through QMP) and the checkpoint type may change; the rest needs the VM off.
    /// </summary>
    public async Task<VmInfo> UpdateAsync(string name, VmUpdateRequest req, CancellationToken ct)
    {
        var vm = Find(name);
        await using var _ = await host.LockVmAsync(vm.Id, ct);
        vm = Store.FindVm(vm.Id)!;
        var old = vm.Hardware;
        if (req.Cdrom is not null && req.Eject) throw HavenException.Invalid("insert an ISO or eject, not both");
        if (req.Eject && !old.CdromDrive) throw HavenException.Invalid($"VM '{name}' has no CD-ROM drive");
        var offline = new List<string>();
        if (req.Vcpus is not null) offline.Add("vcpus");
        if (req.MemoryMiB is not null) offline.Add("memory");
        if (req.CpuModel is not null) offline.Add("the CPU model");
        if (req.DiskBus is not null) offline.Add("the disk bus");
        if (req.BootOrder is not null) offline.Add("the boot order");
        if (req.SetNics is { Count: > 0 } || req.RemoveNics is { Count: > 0 }) offline.Add("NICs");
        if (req.Resize is { Count: > 0 }) offline.Add("disk sizes");
        if (req.Cdrom is not null && !old.CdromDrive) offline.Add("the CD-ROM drive (it is added)");
        var running = host.Runtimes.Get(vm.Id);
        if (running is not null && offline.Count > 0)
            throw HavenException.Conflict($"VM '{name}' is running: stop the VM first to change {string.Join(", ", offline)}");

        var nics = old.Nics.ToList();
        foreach (var r in req.RemoveNics ?? [])
            if (nics.RemoveAll(n => n.Name == r) == 0) throw HavenException.Invalid($"VM '{name}' has no NIC '{r}'");
        foreach (var n in req.SetNics ?? [])
        {
            var i = nics.FindIndex(x => x.Name == n.Name && n.Name.Length > 0);
            // A replaced NIC is the same card on another network: it keeps its MAC unless one is given.
            if (i >= 0) nics[i] = n with { Mac = string.IsNullOrEmpty(n.Mac) ? nics[i].Mac : n.Mac };
            else nics.Add(n);
        }
        var disks = Store.ListDisks(vm.Id);
        var hw = old with
        {
            Vcpus = req.Vcpus ?? old.Vcpus,
            MemoryMiB = req.MemoryMiB ?? old.MemoryMiB,
            CpuModel = req.CpuModel ?? old.CpuModel,
            DiskBus = req.DiskBus ?? old.DiskBus,
            BootOrder = req.BootOrder ?? old.BootOrder,
            // MACs the VM has already are not checked again (VMs migrated from schema 5 share QEMU's default user-mode MAC).
            Nics = Hardware.AssignNics(nics, MacsInUse(exceptVmId: vm.Id), keep: old.Nics.Select(n => n.Mac!).ToList()),
            CdromDrive = old.CdromDrive || req.Cdrom is not null,
            CdromIso = req.Eject ? null : req.Cdrom is { } iso ? CheckIso(iso) : old.CdromIso,
        };
        CheckHardware(hw, disks.Count);
        var resize = new List<(DiskRecord Disk, long Size)>();
        foreach (var (id, size) in req.Resize ?? [])
        {
            var d = disks.Find(x => x.DeviceId == id) ?? throw HavenException.Invalid($"VM '{name}' has no disk '{id}'");
            if (size < d.SizeBytes) throw HavenException.Invalid($"{id} is {d.SizeBytes} bytes; a disk can only grow (shrinking would cut off the guest's data)");
            if (size % 512 != 0) throw HavenException.Invalid($"the new size of {id} must be a multiple of 512 bytes");
            if (size > d.SizeBytes) resize.Add((d, size));
        }

        if (running is not null && hw.CdromIso != old.CdromIso) await ChangeMediumAsync(running, hw.CdromIso, ct);
        // Only the writable top grows: checkpoint layers keep the size they had (applying one brings that size back).
        foreach (var (d, size) in resize) await QemuImg.ResizeAsync(Paths.LayerFile(vm.Id, d.ActiveLayerId), size, ct);
        Store.Write(w =>
        {
            if (req.CheckpointType is { } t) w.SetCheckpointType(vm.Id, t);
            if (req.Autostart is { } on) w.SetAutostart(vm.Id, on);
            w.SetHardware(vm.Id, hw);
            foreach (var (d, size) in resize) w.SetDiskSize(vm.Id, d.Index, size);
        });
        host.Log.LogInformation("VM {Vm}: hardware now {Hardware}{Resized}", name, Hardware.Write(hw),
            resize.Count == 0 ? "" : "; grew " + string.Join(", ", resize.Select(r => $"{r.Disk.DeviceId} to {r.Size} bytes")));
        return await ShowAsync(name, ct);
    }

    /// <summary>Sets a NIC's link up or down: stored, and live through QMP set_link when the VM runs.</summary>
    public async Task<VmInfo> SetNicLinkAsync(string name, string nicName, bool up, CancellationToken ct)
    {
        var vm = Find(name);
        await using var _ = await host.LockVmAsync(vm.Id, ct);
        vm = Store.FindVm(vm.Id)!;
        var i = vm.Hardware.Nics.FindIndex(n => n.Name == nicName);
        if (i < 0) throw HavenException.NotFound($"VM '{name}' has no NIC '{nicName}'");
        if (host.Runtimes.Get(vm.Id) is { } p)
            await p.Qmp.ExecuteAsync("set_link", new System.Text.Json.Nodes.JsonObject { ["name"] = nicName, ["up"] = up }, ct);
        var nics = vm.Hardware.Nics.ToList();
        nics[i] = nics[i] with { LinkUp = up };
        Store.Write(w => w.SetHardware(vm.Id, vm.Hardware with { Nics = nics }));
        host.Log.LogInformation("VM {Vm}: link of {Nic} {State}", name, nicName, up ? "up" : "down");
        return await DescribeAsync(vm, ct);
    }

    private static async Task ChangeMediumAsync(QemuProcess p, string? iso, CancellationToken ct)
    {
        if (iso is null)
            await p.Qmp.ExecuteAsync("eject", new System.Text.Json.Nodes.JsonObject { ["id"] = QemuCommandLine.CdromId, ["force"] = true }, ct);
        else
            await p.Qmp.ExecuteAsync("blockdev-change-medium", new System.Text.Json.Nodes.JsonObject
            {
                ["id"] = QemuCommandLine.CdromId, ["filename"] = iso, ["format"] = "raw", ["read-only-mode"] = "read-only",
            }, ct);
    }

    /// <summary>An ISO given by the user: it must exist; stored as a full path.</summary>
    private static string CheckIso(string path)
    {
        var full = Path.GetFullPath(path);
        if (!File.Exists(full)) throw HavenException.Invalid($"ISO image not found: {full}");
        return full;
    }

    /// <summary>Validates the document and checks what it names on this host (bridges).</summary>
    private static VmHardware CheckHardware(VmHardware hw, int diskCount)
    {
        Hardware.Validate(hw, diskCount);
        foreach (var n in hw.Nics)
            if (n.Mode == "bridge" && !HostNetwork.BridgeExists(n.Bridge!)) throw HavenException.Invalid($"bridge '{n.Bridge}' does not exist on this host");
        return hw;
    }

    /// <summary>MACs another VM's NIC or one of the host's interfaces has (a new or given MAC must be none of them).</summary>
    internal HashSet<string> MacsInUse(string? exceptVmId)
    {
        var macs = HostNetwork.InterfaceMacs();
        foreach (var v in Store.ListVms())
            if (v.Id != exceptVmId)
                foreach (var n in v.Hardware.Nics) if (n.Mac is not null) macs.Add(n.Mac);
        return macs;
    }

    public async Task<VmInfo> StartAsync(string name, CancellationToken ct)
    {
        var vm = Find(name);
        await using var _ = await host.LockVmAsync(vm.Id, ct);
        if (host.Runtimes.Get(vm.Id) is not null) throw HavenException.Conflict($"VM '{name}' is already running");
        host.Replications.CheckNoPlannedFailover(vm, "start");
        host.Tracking.CheckBeforeStart(vm.Id);
        await LaunchAsync(vm, incomingState: false, ct);
        return await DescribeAsync(vm, ct);
    }

    /// <summary>Starts QEMU for the VM's current chains. With <paramref name="incomingState"/> it waits paused for a saved state.</summary>
    internal async Task<QemuProcess> LaunchAsync(VmRecord vm, bool incomingState, CancellationToken ct)
    {
        var tree = new LayerTree(Paths, Store.ListLayers(vm.Id));
        var disks = Store.ListDisks(vm.Id).ConvertAll(d => new DiskLaunch(d.DeviceId, tree.LaunchChain(d.ActiveLayerId)));
        var hw = vm.Hardware;
        if (hw.CdromIso is { } iso && !File.Exists(iso)) throw HavenException.Invalid($"ISO image not found: {iso} (eject it or insert another)");
        if (hw.Firmware == Firmware.Uefi)
        {
            // The code image is the host's (a restored or failed-over VM may name one this host lacks).
            Firmware.CheckFile(hw.UefiCode!, "UEFI code image", Firmware.MinCodeBytes, Firmware.MaxCodeBytes);
            if (!File.Exists(Paths.UefiVarsFile(vm.Id))) throw HavenException.Invalid($"VM '{vm.Name}' has no UEFI variable store ({Paths.UefiVarsFile(vm.Id)} is missing)");
        }
        var nics = new List<NicLaunch>();
        try
        {
            foreach (var n in hw.Nics)
            {
                string? tap = null;
                if (n.Mode == "bridge")
                {
                    tap = Hardware.TapName(vm.Id, n.Name);
                    await HostNetwork.CreateTapAsync(tap, n.Bridge!, ct);
                }
                nics.Add(new NicLaunch(n.Name, n.Mac!, n.Model, tap));
            }
        }
        catch
        {
            HostNetwork.DeleteTapsOf(vm.Id);
            throw;
        }
        var spec = new VmLaunchSpec
        {
            Name = vm.Name,
            Vcpus = hw.Vcpus,
            MemoryMiB = hw.MemoryMiB,
            CpuModel = hw.CpuModel == "auto" ? null : hw.CpuModel,
            Nics = nics,
            DiskBus = hw.DiskBus == "virtio-scsi" ? DiskBus.VirtioScsi : DiskBus.VirtioBlk,
            CdromDrive = hw.CdromDrive,
            CdromIso = hw.CdromIso,
            BootOrder = hw.BootOrder,
            UefiCode = hw.Firmware == Firmware.Uefi ? hw.UefiCode : null,
            UefiVars = hw.Firmware == Firmware.Uefi ? Paths.UefiVarsFile(vm.Id) : null,
            Disks = disks,
            Accelerator = await host.ResolveAcceleratorAsync(ParseAccelerator(vm.Accelerator), ct),
            QmpSocket = Paths.QmpSocket(vm.Id),
            PidFile = Paths.PidFile(vm.Id),
            SerialLog = Paths.SerialLog(vm.Id),
            ConsoleSocket = Paths.ConsoleSocket(vm.Id),
            VncSocket = Paths.VncSocket(vm.Id),
            GuestAgentSocket = vm.GuestAgent ? Paths.GuestAgentSocket(vm.Id) : null,
            Kernel = vm.Kernel,
            Initrd = vm.Initrd,
            Append = vm.Append,
            WaitForIncomingState = incomingState,
        };
        QemuProcess p;
        try { p = await QemuProcess.LaunchAsync(spec, ct); }
        catch (Exception e)
        {
            HostNetwork.DeleteTapsOf(vm.Id);
            if (e is ToolFailedException) throw new HavenException(ErrorCode.Failed, $"QEMU did not start VM '{vm.Name}': {e.Message}", e);
            throw;
        }
        host.Runtimes.Add(vm.Id, p);
        // QEMU has no start-up option for a NIC's link state.
        foreach (var n in hw.Nics.Where(n => !n.LinkUp))
            await p.Qmp.ExecuteAsync("set_link", new System.Text.Json.Nodes.JsonObject { ["name"] = n.Name, ["up"] = false }, ct);
        return p;
    }

    public async Task<VmInfo> StopAsync(string name, VmStopRequest req, CancellationToken ct)
    {
        var vm = Find(name);
        await using var _ = await host.LockVmAsync(vm.Id, ct);
        // A QEMU that does not answer cannot be asked to quit: --force kills it.
        if (req.Force && await host.Runtimes.KillUnresponsiveAsync(vm.Id, ct)) return await DescribeAsync(vm, ct);
        var p = host.Runtimes.Get(vm.Id) ?? throw HavenException.Conflict($"VM '{name}' is not running");
        if (req.Force) await p.QuitAsync(ct);
        else if (!await p.ShutdownAsync(TimeSpan.FromSeconds(Math.Clamp(req.TimeoutSeconds, 0, 3600)), ct))
            host.Log.LogWarning("VM {Vm} did not shut down within {Timeout} s of the ACPI request: forced off", name, req.TimeoutSeconds);
        host.Runtimes.Forget(vm.Id);
        return await DescribeAsync(vm, ct);
    }

    /// <summary>
    /// havend's start: starts every autostart VM that is off, all at once, each as a logged operation; one that
    /// fails is logged and does not keep the others from starting. Returns the names started.
    /// </summary>
    public async Task<List<string>> AutostartAsync(CancellationToken ct)
    {
        var started = new List<string>();
        await Task.WhenAll(Store.ListVms().Where(v => v.Autostart).Select(async vm =>
        {
            try
            {
                if (host.Runtimes.Unresponsive(vm.Id) is not null || host.Runtimes.Get(vm.Id) is not null) return; // reattached
                await host.RunOperationAsync("autostart", vm.Name, () => StartAsync(vm.Name, ct));
                lock (started) started.Add(vm.Name);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                // RunOperationAsync logged the failure; carry on with the others.
            }
        }));
        return started;
    }

    /// <summary>
    /// The host is going down (haven-guests.service's ExecStop, like libvirt-guests): ACPI shutdown of every running
    /// VM at once, then each one still running after <paramref name="timeoutSeconds"/> is forced off.
    /// </summary>
    public async Task<HostShutdownResult> ShutdownAllAsync(HostShutdownRequest req, CancellationToken ct)
    {
        if (req.TimeoutSeconds is < 0 or > 3600) throw HavenException.Invalid("the timeout must be between 0 and 3600 seconds");
        var running = Store.ListVms().Where(v => host.Runtimes.Unresponsive(v.Id) is not null || host.Runtimes.Get(v.Id) is not null).ToList();
        host.Log.LogInformation("shutting down {Count} running VM(s), forcing off after {Timeout} s", running.Count, req.TimeoutSeconds);
        var results = await Task.WhenAll(running.Select(async vm =>
        {
            try
            {
                return await host.RunOperationAsync("shutdown-vms", vm.Name, async () =>
                {
                    await using var _ = await host.LockVmAsync(vm.Id, ct);
                    // An unresponsive QEMU cannot take an ACPI request: killed, as vm stop --force does.
                    if (await host.Runtimes.KillUnresponsiveAsync(vm.Id, ct)) return new VmShutdownResult(vm.Name, "forced-off");
                    if (host.Runtimes.Get(vm.Id) is not { } p) return new VmShutdownResult(vm.Name, "shut-down");
                    var obeyed = await p.ShutdownAsync(TimeSpan.FromSeconds(req.TimeoutSeconds), ct);
                    host.Runtimes.Forget(vm.Id);
                    host.Log.LogInformation(obeyed ? "VM {Vm} shut down" : "VM {Vm} did not shut down within {Timeout} s: forced off", vm.Name, req.TimeoutSeconds);
                    return new VmShutdownResult(vm.Name, obeyed ? "shut-down" : "forced-off");
                });
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                return new VmShutdownResult(vm.Name, "failed", e.Message.ReplaceLineEndings(" "));
            }
        }));
        return new HostShutdownResult { Vms = [.. results.OrderBy(r => r.Name, StringComparer.Ordinal)] };
    }

    public async Task RemoveAsync(string name, CancellationToken ct)
    {
        var vm = Find(name);
        await using var hostLock = await host.LockHostAsync(ct);
        await using var _ = await host.LockVmAsync(vm.Id, ct);
        if (host.Runtimes.Get(vm.Id) is not null) throw HavenException.Conflict($"VM '{name}' is running; stop it before removing it");
        Store.Write(w => w.DeleteVm(vm.Id));
        // Files go after the rows: a crash in between leaves a folder the start-up sweep deletes.
        HostPaths.DeleteVmFolder(Paths.VmDir(vm.Id));
    }

    /// <summary>How long describing a VM waits for QEMU's status before showing it unresponsive (the query itself goes on, bounded by the QMP command timeout).</summary>
    public static readonly TimeSpan StatusTimeout = TimeSpan.FromSeconds(2);

    /// <summary>State, QEMU pid and (when unresponsive) why. Never waits longer than <see cref="StatusTimeout"/> on QEMU.</summary>
    private async Task<(VmState State, int? Pid, string? Reason)> RuntimeStateAsync(string vmId, CancellationToken ct)
    {
        QemuProcess? p;
        try { p = host.Runtimes.Get(vmId); }
        catch (HavenException) { p = null; }
        if (host.Runtimes.Unresponsive(vmId) is { } u) return (VmState.Unresponsive, u.Pid, u.Reason);
        if (p is null) return (VmState.Off, null, null);
        var query = p.QueryStatusAsync(CancellationToken.None);
        try { return (await query.WaitAsync(StatusTimeout, ct) == "running" ? VmState.Running : VmState.Paused, p.Pid, null); }
        catch (TimeoutException)
        {
            // A QEMU that stays silent past the command timeout breaks the connection and is re-attached in the background.
            _ = query.ContinueWith(t => t.Exception, TaskScheduler.Default);
            return (VmState.Unresponsive, p.Pid, $"QEMU did not answer query-status within {StatusTimeout.TotalSeconds:0.#} s");
        }
        catch (QmpConnectionException e) when (p.IsAlive) { return (VmState.Unresponsive, p.Pid, e.Message); }
        catch (QmpConnectionException) { return (VmState.Off, null, null); }
    }

    public async Task<VmInfo> DescribeAsync(VmRecord vm, CancellationToken ct)
    {
        vm = Store.FindVm(vm.Id) ?? vm;
        var tree = new LayerTree(Paths, Store.ListLayers(vm.Id));
        var checkpoints = Store.ListCheckpoints(vm.Id).ToDictionary(c => c.Id);
        var (state, pid, reason) = await RuntimeStateAsync(vm.Id, ct);
        return new VmInfo
        {
            Id = vm.Id,
            Name = vm.Name,
            State = state,
            StateReason = reason,
            Vcpus = vm.Vcpus,
            MemoryMiB = vm.MemoryMiB,
            CheckpointType = vm.CheckpointType,
            Accelerator = vm.Accelerator,
            Network = Hardware.NetworkSummary(vm.Hardware),
            Hardware = vm.Hardware,
            GuestAgent = vm.GuestAgent,
            Autostart = vm.Autostart,
            QmpSocket = Paths.QmpSocket(vm.Id),
            GuestAgentSocket = vm.GuestAgent ? Paths.GuestAgentSocket(vm.Id) : null,
            VncSocket = state != VmState.Off && File.Exists(Paths.VncSocket(vm.Id)) ? Paths.VncSocket(vm.Id) : null,
            Pid = pid,
            CurrentCheckpoint = vm.CurrentCheckpointId is { } c && checkpoints.TryGetValue(c, out var cur) ? cur.Name : null,
            Kernel = vm.Kernel,
            Initrd = vm.Initrd,
            Append = vm.Append,
            Disks = Store.ListDisks(vm.Id).ConvertAll(d => new DiskInfo
            {
                DeviceId = d.DeviceId,
                SizeBytes = d.SizeBytes,
                Chain = tree.ChainFrom(d.ActiveLayerId).ConvertAll(l => new LayerInfo(tree.PathOf(l),
                    l.CheckpointId is { } id && checkpoints.TryGetValue(id, out var cp) ? cp.Name : null)),
            }),
        };
    }
}
