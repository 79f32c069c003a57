using System.Text.Json;
using Haven.Api;
using Haven.Host.Replication;
using Haven.Host.State;
using Haven.Host.Vms;
using Haven.TestSupport;
using Microsoft.Data.Sqlite;
using Xunit;

namespace Haven.Host.Tests;

/// <summary>The hardware document: its rules, its storage, its versioning with checkpoints, and refusals of bad hardware.</summary>
public sealed class HardwareTests
{
    [Fact]
    public void Generated_macs_are_unicast_local_unique_and_given_ones_are_checked()
    {
        var taken = new HashSet<string>();
        for (var i = 0; i < 500; i++)
        {
            var mac = Hardware.NewMac(taken);
            Assert.Matches("^52:54:00:[0-9a-f]{2}:[0-9a-f]{2}:[0-9a-f]{2}$", mac);
            Assert.True(taken.Add(mac), "a generated MAC repeated one already taken");
        }
        Assert.Equal("52:54:00:ab:cd:ef", Hardware.NormalizeMac(" 52-54-00-AB-CD-EF "));
        foreach (var bad in new[] { "01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00", "52:54:00:12:34", "zz:54:00:12:34:56", "52:54:00:12:34:56:78" })
            Assert.Equal(ErrorCode.InvalidArgument, Assert.Throws<HavenException>(() => Hardware.NormalizeMac(bad)).Code);

        var inUse = new HashSet<string> { "52:54:00:00:00:01" };
        var e = Assert.Throws<HavenException>(() => Hardware.AssignNics([new NicSpec { Mode = "user", Mac = "52:54:00:00:00:01" }], inUse));
        Assert.Equal("MAC address 52:54:00:00:00:01 is already in use on this host", e.Message);
        var nics = Hardware.AssignNics([new NicSpec { Mode = "user" }, new NicSpec { Name = "nic0", Mode = "bridge", Bridge = "br0" }, new NicSpec { Mode = "user", Mac = "52:54:00:AA:00:02" }], inUse);
        Assert.Equal(["nic1", "nic0", "nic2"], nics.Select(n => n.Name));
        Assert.Equal("52:54:00:aa:00:02", nics[2].Mac);
        Assert.DoesNotContain(nics[0].Mac!, inUse);
        Assert.NotEqual(nics[0].Mac, nics[1].Mac);
    }

    [Fact]
    public void Validation_names_the_first_problem()
    {
        var ok = new VmHardware { Nics = [new NicSpec { Name = "nic0", Mode = "bridge", Bridge = "br0", Mac = "52:54:00:00:00:01" }], CdromDrive = true, BootOrder = ["cdrom", "disk0", "nic0"] };
        Hardware.Validate(ok, diskCount: 1);
        void Bad(VmHardware hw, string message) => Assert.Equal(message, Assert.Throws<HavenException>(() => Hardware.Validate(hw, 1)).Message);
        Bad(ok with { Vcpus = 0 }, "vcpus must be between 1 and 64");
        Bad(ok with { DiskBus = "ide" }, "disk bus must be virtio-blk or virtio-scsi, not 'ide'");
        Bad(ok with { CpuModel = "host,+vmx" }, "cpu model must be 'auto' or a QEMU CPU model name (letters, digits, '-', '_', '.'), not 'host,+vmx'");
        Bad(ok with { Nics = [ok.Nics[0] with { Model = "rtl8139" }] }, "NIC model must be virtio or e1000, not 'rtl8139'");
        Bad(ok with { Nics = [ok.Nics[0] with { Bridge = "br0,x" }] }, "nic0: a bridge NIC needs a bridge name (1-15 letters, digits, '-', '_', '.'), not 'br0,x'");
        Bad(ok with { Nics = [ok.Nics[0] with { Bridge = ".." }] }, "nic0: a bridge NIC needs a bridge name (1-15 letters, digits, '-', '_', '.'), not '..'");
        Bad(ok with { Nics = [ok.Nics[0] with { Bridge = "../../x" }] }, "nic0: a bridge NIC needs a bridge name (1-15 letters, digits, '-', '_', '.'), not '../../x'");
        Bad(ok with { Nics = [ok.Nics[0], ok.Nics[0] with { Name = "nic1" }] }, "MAC address 52:54:00:00:00:01 is given to two NICs");
        Bad(ok with { BootOrder = ["disk1"] }, "boot order names 'disk1', which is not one of this VM's devices (cdrom, disk0, nic0) or is named twice");
        Bad(ok with { CdromDrive = false, BootOrder = [] , CdromIso = "/x.iso" }, "an ISO needs a CD-ROM drive");
    }

    [Fact]
    public void Tap_names_fit_the_kernel_limit_and_lead_back_to_their_vm()
    {
        var tap = Hardware.TapName("0123456789ab", "nic7");
        Assert.Equal("hv0123456789n7", tap);
        Assert.True(tap.Length <= 15);
        Assert.Equal("0123456789", Hardware.VmIdPrefixOfTap(tap));
        Assert.Null(Hardware.VmIdPrefixOfTap("eth0"));
        Assert.Null(Hardware.VmIdPrefixOfTap("hv0123456789n9"));
    }

    [Fact]
    public void The_document_round_trips_through_json()
    {
        var hw = new VmHardware
        {
            Vcpus = 3, CpuModel = "max", MemoryMiB = 512, DiskBus = "virtio-scsi", CdromDrive = true, CdromIso = "/isos/x.iso", BootOrder = ["cdrom", "disk0"],
            Nics = [new NicSpec { Name = "nic0", Mode = "bridge", Bridge = "br0", Mac = "52:54:00:01:02:03", Model = "e1000", LinkUp = false }],
        };
        var back = Hardware.Read(Hardware.Write(hw));
        Assert.Equal(Hardware.Write(hw), Hardware.Write(back));
        Assert.Equal("e1000", back.Nics[0].Model);
        Assert.False(back.Nics[0].LinkUp);
        Assert.Equal(["cdrom", "disk0"], back.BootOrder);
    }

    /// <summary>A schema-5 database (vcpus, memory_mib, network columns) opens at the latest schema with each VM's document, copied into its checkpoints.</summary>
    [Fact]
    public void A_schema_5_database_migrates_its_vms_into_hardware_documents()
    {
        using var dir = new TempDir();
        var path = dir.File("state.db");
        OldDatabase.Create(path, 5, """
                INSERT INTO vms VALUES ('aaaaaaaaaaaa','web',2,512,NULL,NULL,NULL,1,'user','tcg','Production','c1','2026-01-01T00:00:00.0000000+00:00');
                INSERT INTO vms VALUES ('bbbbbbbbbbbb','db',1,64,NULL,NULL,NULL,0,'none','auto','Standard',NULL,'2026-01-01T00:00:00.0000000+00:00');
                INSERT INTO checkpoints VALUES ('c1','aaaaaaaaaaaa','first',NULL,'Production','ApplicationConsistent','2026-01-02T00:00:00.0000000+00:00',0);
            """);
        using (var store = new HostStore(path))
        {
            var web = store.FindVmByName("web")!;
            Assert.Equal(2, web.Vcpus);
            Assert.Equal(512, web.MemoryMiB);
            var nic = Assert.Single(web.Hardware.Nics);
            Assert.Equal(("nic0", "user", "52:54:00:12:34:56", "virtio", true), (nic.Name, nic.Mode, nic.Mac, nic.Model, nic.LinkUp));
            Assert.Equal("tcg", web.Accelerator);
            Assert.Equal("c1", web.CurrentCheckpointId);
            var db = store.FindVmByName("db")!;
            Assert.Empty(db.Hardware.Nics);
            Assert.Equal((1, 64, CheckpointType.Standard), (db.Vcpus, db.MemoryMiB, db.CheckpointType));
            Assert.Equal(Hardware.Write(web.Hardware), Hardware.Write(Assert.Single(store.ListCheckpoints(web.Id)).Hardware!));
        }

        using (var db = new SqliteConnection($"Data Source={path};Pooling=False"))
        {
            db.Open();
            using var cmd = db.CreateCommand();
            cmd.CommandText = "PRAGMA user_version";
            Assert.Equal(8L, cmd.ExecuteScalar());
            cmd.CommandText = "SELECT count(*) FROM pragma_table_info('vms') WHERE name IN ('vcpus','memory_mib','network')";
            Assert.Equal(0L, cmd.ExecuteScalar());
        }
    }

    /// <summary>VMs migrated from schema 5 share QEMU's default user-mode MAC: changing one of them is not refused for it.</summary>
    [Fact]
    public async Task A_mac_the_vm_already_has_is_not_checked_again()
    {
        await using var t = new TestHost();
        foreach (var name in new[] { "a", "b" })
        {
            var vm = await t.Host.Vms.CreateAsync(new VmCreateRequest { Name = name, Disks = [new DiskSpec { SizeBytes = 32 << 20 }], Network = "user" }, t.Ct);
            t.Host.Store.Write(w => w.SetHardware(vm.Id, Hardware.FromLegacy(1, 256, "user", "52:54:00:12:34:56")));
        }
        var a = await t.Host.Vms.UpdateAsync("a", new VmUpdateRequest { Vcpus = 2, SetNics = [new NicSpec { Name = "nic0", Mode = "user", Model = "e1000" }] }, t.Ct);
        Assert.Equal((2, "52:54:00:12:34:56", "e1000"), (a.Vcpus, a.Hardware!.Nics[0].Mac, a.Hardware.Nics[0].Model));
        var e = await Assert.ThrowsAsync<HavenException>(() => t.Host.Vms.UpdateAsync("a", new VmUpdateRequest { SetNics = [new NicSpec { Mode = "user", Mac = "52:54:00:12:34:56" }] }, t.Ct));
        Assert.Equal("MAC address 52:54:00:12:34:56 is given to two NICs", e.Message);
    }

    /// <summary>Hyper-V brings a checkpoint's configuration back with it: so does apply, disk sizes included.</summary>
    [Fact]
    public async Task Applying_a_checkpoint_brings_back_the_hardware_it_was_taken_with()
    {
        await using var t = new TestHost();
        await t.Host.Vms.CreateAsync(new VmCreateRequest
        {
            Name = "vm1", Disks = [new DiskSpec { SizeBytes = 32 << 20 }], Accelerator = "tcg", MemoryMiB = 64, Network = "user",
        }, t.Ct);
        var before = await t.Host.Vms.ShowAsync("vm1", t.Ct);
        await t.Host.Checkpoints.CreateAsync("vm1", "cp", t.Ct);
        var iso = t.Dir.File("x.iso");
        await File.WriteAllBytesAsync(iso, new byte[2048 * 16], t.Ct);
        var changed = await t.Host.Vms.UpdateAsync("vm1", new VmUpdateRequest
        {
            Vcpus = 2, MemoryMiB = 128, CpuModel = "max", DiskBus = "virtio-scsi", Cdrom = iso, BootOrder = ["cdrom", "disk0"],
            SetNics = [new NicSpec { Mode = "user", Model = "e1000" }], RemoveNics = ["nic0"], Resize = new() { ["disk0"] = 64 << 20 },
        }, t.Ct);
        Assert.Equal((2, 128, "virtio-scsi", iso), (changed.Vcpus, changed.MemoryMiB, changed.Hardware!.DiskBus, changed.Hardware.CdromIso));
        Assert.Equal("e1000", Assert.Single(changed.Hardware.Nics).Model);
        Assert.Equal(64 << 20, changed.Disks[0].SizeBytes);
        Assert.Equal(64L << 20, (await Qemu.Images.QemuImg.InfoAsync(t.TopLayer("vm1"), ct: t.Ct)).VirtualSize);

        await t.Host.Checkpoints.ApplyAsync("vm1", "cp", new CheckpointApplyRequest(), t.Ct);
        var after = await t.Host.Vms.ShowAsync("vm1", t.Ct);
        Assert.Equal(Json(before.Hardware), Json(after.Hardware));
        Assert.Equal(32 << 20, after.Disks[0].SizeBytes);
        Assert.Equal(32L << 20, (await Qemu.Images.QemuImg.InfoAsync(t.TopLayer("vm1"), ct: t.Ct)).VirtualSize);
    }

    [Fact]
    public async Task Bad_hardware_is_refused_with_one_line_and_changes_nothing()
    {
        await using var t = new TestHost();
        await t.Host.Vms.CreateAsync(new VmCreateRequest { Name = "vm1", Disks = [new DiskSpec { SizeBytes = 32 << 20 }], Accelerator = "tcg", MemoryMiB = 64, Network = "user" }, t.Ct);
        var mac = (await t.Host.Vms.ShowAsync("vm1", t.Ct)).Hardware!.Nics[0].Mac!;
        var hostMac = HostNetwork.InterfaceMacs().FirstOrDefault(m => m != "00:00:00:00:00:00");

        async Task Refused(string message, Func<Task> action)
        {
            var before = await State(t);
            var e = await Assert.ThrowsAsync<HavenException>(action);
            Assert.Equal(message, e.Message);
            Assert.Equal(before, await State(t));
        }
        VmCreateRequest Create(params NicSpec[] nics) => new() { Name = "vm2", Disks = [new DiskSpec { SizeBytes = 32 << 20 }], Nics = [.. nics] };
        await Refused("bridge 'nosuchbr0' does not exist on this host", () => t.Host.Vms.CreateAsync(Create(new NicSpec { Mode = "bridge", Bridge = "nosuchbr0" }), t.Ct));
        await Refused($"MAC address {mac} is already in use on this host", () => t.Host.Vms.CreateAsync(Create(new NicSpec { Mode = "user", Mac = mac }), t.Ct));
        if (hostMac is not null)
            await Refused($"MAC address {hostMac} is already in use on this host", () => t.Host.Vms.CreateAsync(Create(new NicSpec { Mode = "user", Mac = hostMac }), t.Ct));
        await Refused($"ISO image not found: {t.Dir.File("missing.iso")}", () => t.Host.Vms.UpdateAsync("vm1", new VmUpdateRequest { Cdrom = t.Dir.File("missing.iso"), Vcpus = 2 }, t.Ct));
        await Refused($"disk0 is {32 << 20} bytes; a disk can only grow (shrinking would cut off the guest's data)",
            () => t.Host.Vms.UpdateAsync("vm1", new VmUpdateRequest { Resize = new() { ["disk0"] = 16 << 20 }, Vcpus = 2 }, t.Ct));
        await Refused("bridge 'nosuchbr0' does not exist on this host",
            () => t.Host.Vms.UpdateAsync("vm1", new VmUpdateRequest { SetNics = [new NicSpec { Name = "nic0", Mode = "bridge", Bridge = "nosuchbr0" }] }, t.Ct));
        await Refused("VM 'vm1' has no NIC 'nic5'", () => t.Host.Vms.UpdateAsync("vm1", new VmUpdateRequest { RemoveNics = ["nic5"] }, t.Ct));

        await t.Host.Vms.StartAsync("vm1", t.Ct);
        try
        {
            await Refused("VM 'vm1' is running: stop the VM first to change vcpus, memory",
                () => t.Host.Vms.UpdateAsync("vm1", new VmUpdateRequest { Vcpus = 2, MemoryMiB = 128 }, t.Ct));
        }
        finally { await t.Host.Vms.StopAsync("vm1", new VmStopRequest { Force = true }, t.Ct); }
    }

    /// <summary>The CD-ROM medium changes live; the VM starts on the document (CPU model, SCSI disk, NIC MAC, boot order).</summary>
    [Fact]
    public async Task A_running_vm_gets_its_cdrom_changed_live_and_starts_with_its_hardware()
    {
        await using var t = new TestHost();
        var iso1 = t.Dir.File("one.iso");
        var iso2 = t.Dir.File("two.iso");
        await File.WriteAllBytesAsync(iso1, new byte[2048 * 16], t.Ct);
        await File.WriteAllBytesAsync(iso2, new byte[2048 * 32], t.Ct);
        await t.Host.Vms.CreateAsync(new VmCreateRequest
        {
            Name = "vm1", Disks = [new DiskSpec { SizeBytes = 32 << 20 }], Accelerator = "tcg", MemoryMiB = 64, CpuModel = "qemu64",
            DiskBus = "virtio-scsi", Cdrom = iso1, BootOrder = ["cdrom", "disk0"], Nics = [new NicSpec { Mode = "user", Mac = "52:54:00:00:99:01" }],
        }, t.Ct);
        await t.Host.Vms.StartAsync("vm1", t.Ct);
        try
        {
            async Task<string?> Medium()
            {
                foreach (var b in (await t.Qmp("vm1").ExecuteAsync("query-block", null, t.Ct)).EnumerateArray())
                    if (b.GetProperty("qdev").GetString() == "cdrom")
                        return b.TryGetProperty("inserted", out var ins) ? ins.GetProperty("file").GetString() : null;
                throw new InvalidOperationException("no cdrom device");
            }
            Assert.Equal(iso1, await Medium());
            var network = (await t.Qmp("vm1").ExecuteAsync("human-monitor-command", new System.Text.Json.Nodes.JsonObject { ["command-line"] = "info network" }, t.Ct)).GetString();
            Assert.Contains("macaddr=52:54:00:00:99:01", network);
            Assert.Null((await t.Host.Vms.UpdateAsync("vm1", new VmUpdateRequest { Eject = true }, t.Ct)).Hardware!.CdromIso);
            Assert.Null(await Medium());
            Assert.Equal(iso2, (await t.Host.Vms.UpdateAsync("vm1", new VmUpdateRequest { Cdrom = iso2 }, t.Ct)).Hardware!.CdromIso);
            Assert.Equal(iso2, await Medium());
            // The disk is on the SCSI bus: the chain lookup by device still finds it (checkpoints, backups rely on it).
            Assert.Single(await Qemu.Runtime.BlockOperations.GetChainAsync(t.Qmp("vm1"), "disk0", t.Ct));
            await t.Host.Checkpoints.CreateAsync("vm1", "live", t.Ct);
        }
        finally { await t.Host.Vms.StopAsync("vm1", new VmStopRequest { Force = true }, t.Ct); }
    }

    /// <summary>A replica keeps the primary's MACs (a failed-over VM answers on its own MAC); a peer's bad values are refused.</summary>
    [Fact]
    public async Task A_replica_keeps_the_primarys_nics_and_refuses_bad_ones()
    {
        await using var t = new TestHost();
        ReplicaCreateSpec Spec(string name, params NicSpec[] nics) => new()
        {
            VmName = name, PrimaryHost = "primary.test", PrimaryVmId = "p-" + name, TrustGroup = "", DiskSizes = [32 << 20], MemoryMiB = 64,
            Accelerator = "tcg", Hardware = new VmHardware { Nics = [.. nics], DiskBus = "virtio-scsi" },
        };
        var nic = new NicSpec { Name = "nic0", Mode = "bridge", Bridge = "br-primary", Mac = "52:54:00:77:00:01", Model = "e1000" };
        var replica = await t.Host.Replicas.CreateAsync(Spec("web", nic), t.Ct);
        var hw = (await t.Host.Vms.DescribeAsync(t.Host.Store.FindVm(replica.VmId)!, t.Ct)).Hardware!;
        Assert.Equal(Hardware.Write(new VmHardware { Nics = [nic], DiskBus = "virtio-scsi" }), Hardware.Write(hw with { Vcpus = 1, MemoryMiB = 256 }));
        // Its bridge is checked when it starts, with one clear line.
        Assert.Equal("bridge 'br-primary' does not exist on this host",
            (await Assert.ThrowsAsync<HavenException>(() => t.Host.Vms.StartAsync("web", t.Ct))).Message);
        foreach (var bad in new[] { nic with { Mac = "01:00:5e:00:00:01" }, nic with { Bridge = "br0;rm -rf" }, nic with { Mode = "vde" }, nic with { Name = "eth0" } })
            Assert.Equal(ErrorCode.InvalidArgument, (await Assert.ThrowsAsync<HavenException>(() => t.Host.Replicas.CreateAsync(Spec("bad", bad), t.Ct))).Code);
        Assert.Null(t.Host.Store.FindVmByName("bad"));
    }

    private static async Task<string> State(TestHost t)
    {
        var vms = await t.Host.Vms.ListAsync(t.Ct);
        var files = Directory.GetFiles(t.Host.Paths.VmsDir, "*", SearchOption.AllDirectories).Order();
        return Json(vms.Select(v => v with { State = VmState.Off, Pid = null }).ToList()) + string.Join("\n", files);
    }

    private static string Json<T>(T value) => JsonSerializer.Serialize(value, ApiJson.Options);
}
