using Haven.Qemu.Runtime;
using Xunit;

namespace Haven.Qemu.Tests;

/// <summary>The hardware parts of the QEMU command line (pure; the E2E tests start QEMU with them).</summary>
public sealed class QemuCommandLineTests
{
    private static VmLaunchSpec Spec => new()
    {
        Name = "t", Vcpus = 2, MemoryMiB = 64, Accelerator = Accelerator.Tcg,
        Disks = [new DiskLaunch("disk0", [new LayerRef("lbase", "/d/base.qcow2"), new LayerRef("ltop", "/d/top.qcow2")])],
        QmpSocket = "/r/q.qmp", PidFile = "/r/q.pid", SerialLog = "/r/s.log",
    };

    [Fact]
    public void Nics_disk_bus_cdrom_boot_order_and_cpu_model_become_devices()
    {
        var a = QemuCommandLine.Build(Spec with
        {
            CpuModel = "Skylake-Server",
            DiskBus = DiskBus.VirtioScsi,
            CdromDrive = true,
            CdromIso = "/isos/a,b.iso",
            BootOrder = ["cdrom", "disk0"],
            Nics = [new NicLaunch("nic0", "52:54:00:00:00:01", "virtio", "hv0123456789n0"), new NicLaunch("nic1", "52:54:00:00:00:02", "e1000", null)],
        });
        string After(string flag, string prefix) => a.Where((x, i) => i > 0 && a[i - 1] == flag && x.StartsWith(prefix, StringComparison.Ordinal)).Single();
        Assert.Equal("Skylake-Server", a[a.IndexOf("-cpu") + 1]);
        Assert.Equal("virtio-scsi-pci,id=scsi0", After("-device", "virtio-scsi"));
        Assert.Equal("scsi-hd,bus=scsi0.0,drive=ltop,id=disk0,bootindex=1", After("-device", "scsi-hd"));
        Assert.Equal("ide-cd,bus=ide.2,id=cdrom,drive=cdrom-medium,bootindex=0", After("-device", "ide-cd"));
        Assert.Contains("""{"driver":"file","filename":"/isos/a,b.iso","node-name":"fcdrom-medium","read-only":true}""", a);
        Assert.Equal("tap,id=net-nic0,ifname=hv0123456789n0,script=no,downscript=no", After("-netdev", "tap"));
        Assert.Equal("virtio-net-pci,netdev=net-nic0,id=nic0,mac=52:54:00:00:00:01", After("-device", "virtio-net"));
        Assert.Equal("user,id=net-nic1", After("-netdev", "user"));
        Assert.Equal("e1000,netdev=net-nic1,id=nic1,mac=52:54:00:00:00:02", After("-device", "e1000"));

        var plain = QemuCommandLine.Build(Spec);
        Assert.Equal("max", plain[plain.IndexOf("-cpu") + 1]);
        Assert.Equal("virtio-blk-pci,drive=ltop,id=disk0", plain[plain.IndexOf("-device") + 1]);
        Assert.DoesNotContain("-netdev", plain);
        Assert.DoesNotContain(plain, x => x.StartsWith("ide-cd", StringComparison.Ordinal));
    }

    [Fact]
    public void With_a_kernel_the_boot_order_starts_after_the_kernel_loader()
    {
        // QEMU's kernel-loading option ROM holds bootindex 0; a device asking for it stops QEMU from starting.
        var a = QemuCommandLine.Build(Spec with { Kernel = "/k/vmlinuz", BootOrder = ["disk0"] });
        Assert.Equal("virtio-blk-pci,drive=ltop,id=disk0,bootindex=1", a[a.IndexOf("-device") + 1]);
    }
}

/// <summary>UEFI: OVMF as two pflash drives; a BIOS VM's command line has none of it.</summary>
public sealed class QemuCommandLineFirmwareTests
{
    private static VmLaunchSpec Spec => new()
    {
        Name = "t", Vcpus = 1, MemoryMiB = 64, Accelerator = Accelerator.Tcg,
        Disks = [new DiskLaunch("disk0", [new LayerRef("ltop", "/d/top.qcow2")])],
        QmpSocket = "/r/q.qmp", PidFile = "/r/q.pid", SerialLog = "/r/s.log",
    };

    [Fact]
    public void Uefi_adds_read_only_code_and_writable_vars_flash_and_bios_adds_nothing()
    {
        var a = QemuCommandLine.Build(Spec with { UefiCode = "/usr/share/OVMF/OVMF_CODE_4M.fd", UefiVars = "/data/vms/x/uefi-vars.fd", BootOrder = ["disk0"] });
        Assert.Equal("q35,pflash0=uefi-code,pflash1=uefi-vars", a[a.IndexOf("-machine") + 1]);
        Assert.Contains("""{"driver":"file","filename":"/usr/share/OVMF/OVMF_CODE_4M.fd","node-name":"uefi-code","read-only":true}""", a);
        Assert.Contains("""{"driver":"file","filename":"/data/vms/x/uefi-vars.fd","node-name":"uefi-vars","read-only":false}""", a);
        Assert.Contains("virtio-blk-pci,drive=ltop,id=disk0,bootindex=0", a);
        Assert.DoesNotContain("-kernel", a);

        var bios = QemuCommandLine.Build(Spec);
        Assert.Equal("q35", bios[bios.IndexOf("-machine") + 1]);
        Assert.DoesNotContain(bios, x => x.Contains("uefi", StringComparison.Ordinal) || x.Contains("pflash", StringComparison.Ordinal));
        Assert.Throws<ArgumentException>(() => QemuCommandLine.Build(Spec with { UefiCode = "/c.fd" }));
    }
}
