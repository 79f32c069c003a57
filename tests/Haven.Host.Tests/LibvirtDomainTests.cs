using Haven.Api;
using Haven.Host.Vms;
using Xunit;

namespace Haven.Host.Tests;

/// <summary>The libvirt domain parser: what maps to the create request, what is refused and how the refusal reads.</summary>
public sealed class LibvirtDomainTests
{
    /// <summary>A domain as virt-install and virsh dumpxml write it (running, so with aliases, pty paths and addresses).</summary>
    private const string Web = """
        <domain type='kvm' id='3'>
          <name>web</name>
          <uuid>4dea22b3-1d52-d8f3-2516-782e98ab3fa0</uuid>
          <metadata>
            <libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0">
              <libosinfo:os id="http://debian.org/debian/12"/>
            </libosinfo:libosinfo>
          </metadata>
          <memory unit='KiB'>2097152</memory>
          <currentMemory unit='KiB'>2097152</currentMemory>
          <vcpu placement='static'>2</vcpu>
          <resource>
            <partition>/machine</partition>
          </resource>
          <os firmware='efi'>
            <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
            <firmware>
              <feature enabled='no' name='enrolled-keys'/>
              <feature enabled='no' name='secure-boot'/>
            </firmware>
            <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>
            <nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>/var/lib/libvirt/qemu/nvram/web_VARS.fd</nvram>
            <boot dev='hd'/>
          </os>
          <features>
            <acpi/>
            <apic/>
            <vmport state='off'/>
          </features>
          <cpu mode='host-passthrough' check='none' migratable='on'/>
          <clock offset='utc'>
            <timer name='rtc' tickpolicy='catchup'/>
            <timer name='pit' tickpolicy='delay'/>
            <timer name='hpet' present='no'/>
          </clock>
          <on_poweroff>destroy</on_poweroff>
          <on_reboot>restart</on_reboot>
          <on_crash>destroy</on_crash>
          <pm>
            <suspend-to-mem enabled='no'/>
            <suspend-to-disk enabled='no'/>
          </pm>
          <devices>
            <emulator>/usr/bin/qemu-system-x86_64</emulator>
            <disk type='file' device='disk'>
              <driver name='qemu' type='qcow2' discard='unmap'/>
              <source file='/var/lib/libvirt/images/web.qcow2' index='2'/>
              <backingStore/>
              <target dev='vda' bus='virtio'/>
              <alias name='virtio-disk0'/>
              <address type='pci' domain='0x0000' bus='0x04' slot='0x00' function='0x0'/>
            </disk>
            <disk type='file' device='disk'>
              <driver name='qemu' type='raw'/>
              <source file='/var/lib/libvirt/images/web-data.img' index='1'/>
              <backingStore/>
              <target dev='vdb' bus='virtio'/>
              <alias name='virtio-disk1'/>
              <address type='pci' domain='0x0000' bus='0x07' slot='0x00' function='0x0'/>
            </disk>
            <disk type='file' device='cdrom'>
              <driver name='qemu' type='raw'/>
              <target dev='sda' bus='sata'/>
              <readonly/>
              <alias name='sata0-0-0'/>
              <address type='drive' controller='0' bus='0' target='0' unit='0'/>
            </disk>
            <controller type='usb' index='0' model='qemu-xhci' ports='15'>
              <alias name='usb'/>
            </controller>
            <controller type='pci' index='0' model='pcie-root'>
              <alias name='pcie.0'/>
            </controller>
            <controller type='sata' index='0'>
              <alias name='ide'/>
            </controller>
            <controller type='virtio-serial' index='0'>
              <alias name='virtio-serial0'/>
            </controller>
            <interface type='bridge'>
              <mac address='52:54:00:6b:3c:58'/>
              <source bridge='br0'/>
              <target dev='vnet2'/>
              <model type='virtio'/>
              <alias name='net0'/>
              <address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
            </interface>
            <interface type='bridge'>
              <mac address='52:54:00:6B:3C:59'/>
              <source bridge='br1'/>
              <target dev='vnet3'/>
              <model type='e1000'/>
              <link state='down'/>
              <alias name='net1'/>
            </interface>
            <serial type='pty'>
              <source path='/dev/pts/1'/>
              <target type='isa-serial' port='0'>
                <model name='isa-serial'/>
              </target>
              <alias name='serial0'/>
            </serial>
            <console type='pty' tty='/dev/pts/1'>
              <source path='/dev/pts/1'/>
              <target type='serial' port='0'/>
              <alias name='serial0'/>
            </console>
            <channel type='unix'>
              <source mode='bind' path='/run/libvirt/qemu/channel/3-web/org.qemu.guest_agent.0'/>
              <target type='virtio' name='org.qemu.guest_agent.0' state='connected'/>
              <alias name='channel0'/>
              <address type='virtio-serial' controller='0' bus='0' port='1'/>
            </channel>
            <input type='mouse' bus='ps2'>
              <alias name='input0'/>
            </input>
            <input type='keyboard' bus='ps2'>
              <alias name='input1'/>
            </input>
            <graphics type='vnc' port='5900' autoport='yes' listen='127.0.0.1'>
              <listen type='address' address='127.0.0.1'/>
            </graphics>
            <audio id='1' type='none'/>
            <video>
              <model type='virtio' heads='1' primary='yes'/>
              <alias name='video0'/>
            </video>
            <memballoon model='virtio'>
              <alias name='balloon0'/>
            </memballoon>
            <rng model='virtio'>
              <backend model='random'>/dev/urandom</backend>
              <alias name='rng0'/>
            </rng>
          </devices>
          <seclabel type='dynamic' model='apparmor' relabel='yes'>
            <label>libvirt-4dea22b3-1d52-d8f3-2516-782e98ab3fa0</label>
          </seclabel>
        </domain>
        """;

    [Fact]
    public void A_virsh_dumpxml_domain_maps_to_the_request_that_creates_the_same_vm()
    {
        var r = LibvirtDomain.Parse(Web);
        Assert.Empty(r.Unsupported);
        var q = r.Request;
        Assert.Equal("web", q.Name);
        Assert.Equal((2048, 2, "auto"), (q.MemoryMiB, q.Vcpus, q.CpuModel));
        Assert.Equal([("/var/lib/libvirt/images/web.qcow2", "qcow2"), ("/var/lib/libvirt/images/web-data.img", "raw")],
            q.Disks.Select(d => (d.ImportPath, d.ImportFormat)));
        Assert.Equal("virtio-blk", q.DiskBus);
        var nics = q.Nics!;
        Assert.Equal(2, nics.Count);
        Assert.Equal(("bridge", "br0", "52:54:00:6b:3c:58", "virtio", true), (nics[0].Mode, nics[0].Bridge, nics[0].Mac, nics[0].Model, nics[0].LinkUp));
        Assert.Equal(("bridge", "br1", "52:54:00:6B:3C:59", "e1000", false), (nics[1].Mode, nics[1].Bridge, nics[1].Mac, nics[1].Model, nics[1].LinkUp));
        Assert.Equal(("uefi", "/usr/share/OVMF/OVMF_CODE_4M.fd", "/var/lib/libvirt/qemu/nvram/web_VARS.fd"), (q.Firmware, q.UefiCode, q.UefiVars));
        Assert.True(q.GuestAgent);
        Assert.Null(q.Cdrom);
        Assert.Equal(["disk0"], q.BootOrder!);
        Assert.Null(q.Kernel);
        Assert.Contains(r.Notes, n => n.Contains("empty CD-ROM drive sda", StringComparison.Ordinal));
        Assert.Contains("graphics (vnc)", r.Ignored);
        Assert.Contains("serial (pty)", r.Ignored);
    }

    [Theory]
    [InlineData("<memory>1048576</memory>", 1024)]
    [InlineData("<memory unit='KiB'>1048577</memory>", 1025)] // a partial MiB rounds up: the guest never gets less
    [InlineData("<memory unit='k'>524288</memory>", 512)]
    [InlineData("<memory unit='MiB'>768</memory>", 768)]
    [InlineData("<memory unit='M'>768</memory>", 768)]
    [InlineData("<memory unit='GiB'>4</memory>", 4096)]
    [InlineData("<memory unit='G'>2</memory>", 2048)]
    [InlineData("<memory unit='bytes'>536870912</memory>", 512)]
    [InlineData("<memory unit='b'>1048576</memory>", 1)]
    [InlineData("<memory unit='MB'>1000</memory>", 954)] // 10^9 bytes
    [InlineData("<memory unit='GB'>1</memory>", 954)]
    [InlineData("<memory unit='TiB'>1</memory>", 1024 * 1024)]
    [InlineData("<currentMemory unit='MiB'>300</currentMemory>", 300)]
    [InlineData("<memory unit='MiB'>1024</memory><currentMemory unit='MiB'>512</currentMemory>", 1024)]
    public void Memory_units_follow_libvirt(string memory, int mib)
    {
        Assert.Equal(mib, LibvirtDomain.Parse(Minimal(memory)).Request.MemoryMiB);
    }

    [Theory]
    [InlineData("<memory unit='parsecs'>1</memory>", "cannot import 'm': <memory> has an unknown unit 'parsecs'")]
    [InlineData("<memory>-5</memory>", "cannot import 'm': <memory> is not a whole number: '-5'")]
    [InlineData("<memory unit='TiB'>99999999</memory>", "cannot import 'm': <memory> is too large")]
    [InlineData("<vcpu>0</vcpu>", "cannot import 'm': <vcpu> is not a positive whole number: '0'")]
    public void Bad_sizes_are_one_clear_error(string settings, string message)
    {
        Assert.Equal(message, Assert.Throws<HavenException>(() => LibvirtDomain.Parse(Minimal(settings))).Message);
    }

    [Fact]
    public void Vcpus_cpu_models_and_direct_kernel_boot()
    {
        var q = LibvirtDomain.Parse(Minimal("<memory unit='MiB'>256</memory><vcpu placement='static' current='2'>8</vcpu>"
            + "<cpu mode='custom' match='exact'><model fallback='allow'>Skylake-Client-IBRS</model><feature policy='require' name='vmx'/></cpu>"
            + "<os><type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type><kernel>/boot/vmlinuz</kernel><initrd>/boot/initrd.img</initrd>"
            + "<cmdline>root=/dev/vda console=ttyS0</cmdline><boot dev='hd'/></os>")).Request;
        Assert.Equal((2, "Skylake-Client-IBRS"), (q.Vcpus, q.CpuModel));
        Assert.Equal(("/boot/vmlinuz", "/boot/initrd.img", "root=/dev/vda console=ttyS0"), (q.Kernel, q.Initrd, q.Append));
        Assert.Null(q.BootOrder); // the kernel boots; QEMU's linuxboot ROM holds boot index 0
        Assert.Equal(("bios", null, null), (q.Firmware, q.UefiCode, q.UefiVars));
        Assert.False(q.GuestAgent); // no qemu-ga channel in the domain
        Assert.Equal("auto", LibvirtDomain.Parse(Minimal("<cpu mode='host-model' check='partial'/>")).Request.CpuModel);
        Assert.Equal("max", LibvirtDomain.Parse(Minimal("<cpu mode='maximum'/>")).Request.CpuModel);
        Assert.Equal(1, LibvirtDomain.Parse(Minimal("")).Request.Vcpus);
    }

    [Fact]
    public void Firmware_from_the_loader_and_nvram_forms_of_newer_libvirt()
    {
        var q = LibvirtDomain.Parse(Minimal("<os><type arch='x86_64'>hvm</type><loader readonly='yes' type='pflash' format='raw'>/opt/OVMF_CODE.fd</loader>"
            + "<nvram type='file' format='raw'><source file='/srv/vars.fd'/></nvram></os>")).Request;
        Assert.Equal(("uefi", "/opt/OVMF_CODE.fd", "/srv/vars.fd"), (q.Firmware, q.UefiCode, q.UefiVars));
        q = LibvirtDomain.Parse(Minimal("<os firmware='efi'><type arch='x86_64'>hvm</type></os>")).Request;
        Assert.Equal(("uefi", null, null), (q.Firmware, q.UefiCode, q.UefiVars));
    }

    [Fact]
    public void Scsi_disks_cdrom_user_and_mapped_network_nics_and_per_device_boot_order()
    {
        var r = LibvirtDomain.Parse(Minimal("<devices>"
            + "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/a.qcow2'/><target dev='sda' bus='scsi'/><boot order='2'/></disk>"
            + "<disk type='file' device='disk'><source file='/b.raw'/><target dev='sdb' bus='scsi'/></disk>"
            + "<disk type='file' device='cdrom'><source file='/isos/debian.iso'/><target dev='sdc' bus='sata'/><readonly/><boot order='1'/></disk>"
            + "<interface type='user'><mac address='52:54:00:00:00:07'/><model type='virtio'/></interface>"
            + "<interface type='network'><mac address='52:54:00:00:00:08'/><source network='default'/><model type='e1000e'/><boot order='3'/></interface>"
            + "<controller type='scsi' index='0' model='virtio-scsi'/>"
            + "</devices>"), new Dictionary<string, string> { ["default"] = "virbr0" });
        Assert.Empty(r.Unsupported);
        var q = r.Request;
        Assert.Equal("virtio-scsi", q.DiskBus);
        Assert.Equal([("/a.qcow2", "qcow2"), ("/b.raw", null)], q.Disks.Select(d => (d.ImportPath, d.ImportFormat)));
        Assert.Equal("/isos/debian.iso", q.Cdrom);
        Assert.Equal([("user", null, "virtio"), ("bridge", "virbr0", "e1000")], q.Nics!.Select(n => (n.Mode, n.Bridge, n.Model)));
        Assert.Equal(["cdrom", "disk0", "nic1"], q.BootOrder!);
        Assert.Contains(r.Notes, n => n.Contains("e1000e", StringComparison.Ordinal));

        // Mixed buses: one controller for all, virtio-blk; sata disks move to virtio, said in a note.
        r = LibvirtDomain.Parse(Minimal("<devices>"
            + "<disk type='file' device='disk'><source file='/a.qcow2'/><target dev='sda' bus='sata'/></disk>"
            + "<disk type='file' device='disk'><source file='/b.qcow2'/><target dev='sdb' bus='scsi'/></disk></devices>"));
        Assert.Equal("virtio-blk", r.Request.DiskBus);
        Assert.Contains(r.Notes, n => n.Contains("disk sda (sata) goes on virtio", StringComparison.Ordinal));
        Assert.Contains(r.Notes, n => n.Contains("SCSI disks go on virtio-blk", StringComparison.Ordinal));
    }

    [Fact]
    public void Every_unsupported_device_is_named_in_order()
    {
        var r = LibvirtDomain.Parse(Minimal("<devices>"
            + "<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' bus='0x03' slot='0x00' function='0x0'/></source></hostdev>"
            + "<filesystem type='mount' accessmode='passthrough'><driver type='virtiofs'/><source dir='/srv'/><target dir='share'/></filesystem>"
            + "<hostdev mode='subsystem' type='usb'><source><vendor id='0x046d'/><product id='0xc52b'/></source></hostdev>"
            + "<sound model='ich9'/>"
            + "<watchdog model='i6300esb' action='reset'/>"
            + "<tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm>"
            + "<redirdev bus='usb' type='spicevmc'/>"
            + "<smartcard mode='passthrough' type='spicevmc'/>"
            + "<disk type='block' device='disk'><source dev='/dev/sdb'/><target dev='vdb' bus='virtio'/></disk>"
            + "<disk type='network' device='disk'><source protocol='rbd' name='pool/img'/><target dev='vdc' bus='virtio'/></disk>"
            + "<disk type='file' device='disk'><driver type='vmdk'/><source file='/x.vmdk'/><target dev='vdd' bus='virtio'/></disk>"
            + "<disk type='file' device='floppy'><source file='/f.img'/><target dev='fda'/></disk>"
            + "<interface type='direct'><mac address='52:54:00:00:00:09'/><source dev='eth0' mode='bridge'/></interface>"
            + "<interface type='network'><mac address='52:54:00:00:00:0a'/><source network='default'/><model type='virtio'/></interface>"
            + "<interface type='bridge'><source bridge='br0'/><model type='rtl8139'/></interface>"
            + "<interface type='bridge'><source bridge='ovsbr0'/><virtualport type='openvswitch'/></interface>"
            + "<interface type='bridge'><source bridge='br0'/><filterref filter='clean-traffic'/></interface>"
            + "<channel type='unix'><target type='virtio' name='org.example.custom'/></channel>"
            + "<shmem name='ivshmem'/>"
            + "</devices>") + "");
        Assert.Equal([
            "hostdev (pci 0000:03:00.0)", "filesystem (/srv -> share)", "hostdev (usb 046d:c52b)", "sound (ich9)", "watchdog (i6300esb)",
            "tpm (tpm-crb, emulator)", "redirdev (usb spicevmc)", "smartcard (passthrough)", "disk (block /dev/sdb as vdb)",
            "disk (network pool/img as vdc)", "disk (vdd, format vmdk)", "disk (floppy fda)", "interface (direct eth0, 52:54:00:00:00:09)",
            "interface (libvirt network 'default', 52:54:00:00:00:0a; map it to a bridge with --network-map default=BRIDGE)",
            "interface (model rtl8139)", "interface (openvswitch bridge ovsbr0)", "interface (packet filter clean-traffic)",
            "channel (org.example.custom)", "shmem",
        ], r.Unsupported);
    }

    [Fact]
    public void Settings_haven_cannot_honour_are_refused_too()
    {
        var r = LibvirtDomain.Parse("""
            <domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
              <name>s</name><memory unit='MiB'>512</memory>
              <os><type arch='aarch64' machine='virt'>hvm</type><loader readonly='yes' secure='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.secboot.fd</loader></os>
              <launchSecurity type='sev'/>
              <qemu:commandline><qemu:arg value='-s'/></qemu:commandline>
            </domain>
            """);
        Assert.Equal(["launchSecurity (sev)", "qemu:commandline (QEMU pass-through)", "architecture aarch64", "secure boot (loader secure='yes')"], r.Unsupported);
        Assert.Equal(["domain type xen (only kvm and qemu domains)"], LibvirtDomain.Parse("<domain type='xen'><name>x</name><memory>1024</memory></domain>").Unsupported);
    }

    [Theory]
    [InlineData("<?xml version='1.0'?><!DOCTYPE domain [<!ENTITY x SYSTEM 'file:///etc/shadow'>]><domain><name>&x;</name></domain>",
        "the libvirt domain XML has a document type declaration (<!DOCTYPE>), which is not allowed")]
    [InlineData("<domain><name>web</name><memory>1024</memory>", "the libvirt domain XML is not well-formed: ")]
    [InlineData("", "the libvirt domain XML is not well-formed: ")]
    [InlineData("<vm><name>x</name></vm>", "not a libvirt domain: the root element is <vm>, not <domain>")]
    [InlineData("<domain><memory>1024</memory></domain>", "the libvirt domain has no <name>")]
    [InlineData("<domain><name>n</name></domain>", "cannot import 'n': it has no <memory>")]
    [InlineData("<domain><name>k</name><memory>1024</memory><os><kernel>vmlinuz</kernel></os></domain>", "cannot import 'k': the path of kernel is not absolute: 'vmlinuz'")]
    [InlineData("<domain><name>k</name><memory>1024</memory><devices><disk type='file' device='cdrom'><source file='x.iso'/><target dev='hdc'/></disk></devices></domain>",
        "cannot import 'k': the path of CD-ROM hdc is not absolute: 'x.iso'")]
    public void Hostile_or_broken_xml_is_one_clear_error(string xml, string message)
    {
        var e = Assert.Throws<HavenException>(() => LibvirtDomain.Parse(xml));
        Assert.Equal(ErrorCode.InvalidArgument, e.Code);
        Assert.True(e.Message.StartsWith(message, StringComparison.Ordinal), e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void Oversized_xml_is_refused_before_it_is_parsed()
    {
        var xml = Minimal("<description>" + new string('x', LibvirtDomain.MaxXmlChars) + "</description>");
        Assert.Equal("the libvirt domain XML is larger than 1 MiB", Assert.Throws<HavenException>(() => LibvirtDomain.Parse(xml)).Message);
    }

    [Fact]
    public void Text_from_the_xml_in_the_error_is_one_bounded_line()
    {
        var r = LibvirtDomain.Parse(Minimal("<devices><sound model='a&#10;b" + new string('y', 500) + "'/></devices>"));
        var d = Assert.Single(r.Unsupported);
        Assert.DoesNotContain('\n', d);
        Assert.True(d.Length < 120, d);
    }

    private static string Minimal(string settings) => $"<domain type='kvm'><name>m</name>{(settings.Contains("emory") ? "" : "<memory unit='MiB'>256</memory>")}{settings}</domain>";
}
