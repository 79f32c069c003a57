using System.Diagnostics;
using Haven.Api;
using Haven.TestSupport;

namespace Haven.EndToEnd.Tests;

/// <summary>
/// <c>haven vm import --libvirt</c> of domain XML as <c>virsh dumpxml</c> writes it: a Debian guest with two disks (its
/// system disk and a raw data disk) and two bridge NICs with given MACs boots in Haven (from its ESP with UEFI, and by
/// direct kernel boot), and sees both disks and both MACs; a domain with devices Haven cannot give is refused with all
/// of them named, and bad files and bridges are one clear line with nothing created.
/// </summary>
public sealed class LibvirtImportTests
{
    private const string Mac0 = "52:54:00:4c:11:01";
    private const string Mac1 = "52:54:00:4c:11:02";
    private const long DataDiskSize = 64 * HavenWorld.M;
    private const string DataMark = "haven-libvirt-data-disk";

    [Fact(Timeout = 900_000)]
    public async Task A_uefi_domain_with_two_disks_and_two_bridge_nics_imports_and_boots_from_its_esp()
    {
        var ct = TestContext.Current.CancellationToken;
        await DebianGuest.EnsureBuiltAsync();
        await using var ns = await TestNetNamespace.CreateAsync();
        await using var w = new HavenWorld(ct) { NetNamespace = ns.Name };
        await w.StartDaemonAsync();
        var (root, data) = await DisksAsync(w);
        var vars = w.Dir.File("web_VARS.fd");
        File.Copy(DebianGuest.OvmfVarsTemplate, vars);
        var os = $"""
            <os firmware='efi'>
              <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
              <firmware>
                <feature enabled='no' name='enrolled-keys'/>
                <feature enabled='no' name='secure-boot'/>
              </firmware>
              <loader readonly='yes' type='pflash'>{DebianGuest.OvmfCode}</loader>
              <nvram template='{DebianGuest.OvmfVarsTemplate}'>{vars}</nvram>
              <boot dev='hd'/>
            </os>
            """;
        var vm = await ImportAndCheckAsync(w, "web", Domain("web", os, root, data));
        Assert.Equal(("uefi", DebianGuest.OvmfCode), (vm.Hardware!.Firmware, vm.Hardware.UefiCode));
        Assert.Null(vm.Kernel); // no kernel given: the firmware finds GRUB on the ESP
        Assert.Equal(["disk0"], vm.Hardware.BootOrder);
        await BootAndCheckGuestAsync(w, vm, ct);
    }

    /// <summary>The same domain with BIOS and direct kernel boot (&lt;kernel&gt;, &lt;initrd&gt;, &lt;cmdline&gt; in &lt;os&gt;).</summary>
    [Fact(Timeout = 900_000)]
    public async Task A_direct_kernel_boot_domain_with_two_disks_and_two_bridge_nics_imports_and_boots()
    {
        var ct = TestContext.Current.CancellationToken;
        await DebianGuest.EnsureBuiltAsync();
        await using var ns = await TestNetNamespace.CreateAsync();
        await using var w = new HavenWorld(ct) { NetNamespace = ns.Name };
        await w.StartDaemonAsync();
        var (root, data) = await DisksAsync(w);
        var os = $"""
            <os>
              <type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>
              <kernel>{DebianGuest.Kernel}</kernel>
              <initrd>{DebianGuest.Initrd}</initrd>
              <cmdline>{System.Security.SecurityElement.Escape(DebianGuest.Append)}</cmdline>
              <boot dev='hd'/>
            </os>
            """;
        var vm = await ImportAndCheckAsync(w, "db", Domain("db", os, root, data));
        Assert.Equal("bios", vm.Hardware!.Firmware);
        Assert.Equal((DebianGuest.Kernel, DebianGuest.Append), (vm.Kernel, vm.Append));
        Assert.Empty(vm.Hardware.BootOrder); // <boot dev='hd'/> means nothing when a kernel is given
        await BootAndCheckGuestAsync(w, vm, ct);
    }

    [Fact]
    public async Task A_domain_with_unsupported_devices_is_refused_with_every_one_named_and_nothing_is_created()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var w = new HavenWorld(ct);
        await w.StartDaemonAsync();
        await w.CreateVmAsync("other");
        var disk = w.Dir.File("small.qcow2");
        await Haven.Qemu.Images.ProcessRunner.RunAsync("qemu-img", ["create", "-q", "-f", "qcow2", disk, "32M"], ct);
        var xml = w.Dir.File("passthrough.xml");
        await File.WriteAllTextAsync(xml, Domain("gpu", "<os><type arch='x86_64' machine='q35'>hvm</type></os>", disk, null, user: true, extra: """
                <hostdev mode='subsystem' type='pci' managed='yes'>
                  <source>
                    <address domain='0x0000' bus='0x03' slot='0x00' function='0x0'/>
                  </source>
                  <address type='pci' domain='0x0000' bus='0x06' slot='0x00' function='0x0'/>
                </hostdev>
                <filesystem type='mount' accessmode='passthrough'>
                  <driver type='virtiofs'/>
                  <source dir='/srv'/>
                  <target dir='share'/>
                </filesystem>
            """), ct);
        var before = await StateAsync(w);

        var r = await w.Cli("vm", "import", "--libvirt", xml, "--accel", "tcg");

        AssertRefused(r, "haven: cannot import 'gpu': unsupported devices: hostdev (pci 0000:03:00.0), filesystem (/srv -> share)");
        Assert.Equal(before, await StateAsync(w));
    }

    public static TheoryData<string, string> BadInputs => new()
    {
        { "a domain XML file that does not exist", "haven: domain XML file not found: {dir}/nope.xml" },
        { "a domain naming a disk that does not exist", "haven: cannot import 'web': " },
        { "a domain with a NIC on a bridge that does not exist", "haven: cannot import 'web': bridge 'nobr0' does not exist on this host" },
        { "a domain with a DTD", "haven: the libvirt domain XML has a document type declaration (<!DOCTYPE>), which is not allowed" },
    };

    [Theory]
    [MemberData(nameof(BadInputs))]
    public async Task Bad_input_is_one_line_and_nothing_is_created(string what, string message)
    {
        var ct = TestContext.Current.CancellationToken;
        await using var w = new HavenWorld(ct);
        await w.StartDaemonAsync();
        var disk = w.Dir.File("web.qcow2");
        await Haven.Qemu.Images.ProcessRunner.RunAsync("qemu-img", ["create", "-q", "-f", "qcow2", disk, "32M"], ct);
        var os = "<os><type arch='x86_64' machine='q35'>hvm</type><boot dev='hd'/></os>";
        var xml = w.Dir.File("web.xml");
        switch (what)
        {
            case "a domain XML file that does not exist": xml = w.Dir.File("nope.xml"); break;
            case "a domain naming a disk that does not exist":
                await File.WriteAllTextAsync(xml, Domain("web", os, disk, w.Dir.File("gone.raw"), user: true), ct);
                break;
            case "a domain with a NIC on a bridge that does not exist":
                await File.WriteAllTextAsync(xml, Domain("web", os, disk, null, bridge: "nobr0"), ct);
                break;
            default:
                await File.WriteAllTextAsync(xml, "<!DOCTYPE domain [<!ENTITY x SYSTEM 'file:///etc/passwd'>]>\n" + Domain("web", os, disk, null, user: true), ct);
                break;
        }
        var before = await StateAsync(w);

        var r = await w.Cli("vm", "import", "--libvirt", xml, "--accel", "tcg");

        AssertRefused(r, message.Replace("{dir}", w.Dir.Path), exact: what != "a domain naming a disk that does not exist");
        if (what == "a domain naming a disk that does not exist") Assert.Contains(w.Dir.File("gone.raw"), r.Stderr);
        Assert.Equal(before, await StateAsync(w));
    }

    /// <summary>The Debian guest's disk and a raw data disk with a mark at its start.</summary>
    private static async Task<(string Root, string Data)> DisksAsync(HavenWorld w)
    {
        var root = w.Dir.File("system.qcow2");
        await DebianGuest.CopyDiskAsync(root);
        var data = w.Dir.File("data.img");
        await using (var f = File.Create(data))
        {
            f.SetLength(DataDiskSize);
            f.Write(System.Text.Encoding.ASCII.GetBytes(DataMark));
        }
        return (root, data);
    }

    /// <summary>Imports the XML, then checks 'vm show': memory, vCPUs, both disks, both NICs with their MACs on br0.</summary>
    private static async Task<VmInfo> ImportAndCheckAsync(HavenWorld w, string name, string domainXml)
    {
        var xml = w.Dir.File(name + ".xml");
        await File.WriteAllTextAsync(xml, domainXml, w.Ct);
        var imported = await w.JsonAsync<VmInfo>("vm", "import", "--libvirt", xml, "--accel", "tcg");
        Assert.Equal(name, imported.Name);
        await w.LearnVmAsync(name);
        var vm = await w.ShowAsync(name);
        Assert.Equal((768, 2, VmState.Off), (vm.MemoryMiB, vm.Vcpus, vm.State));
        Assert.Equal(2, vm.Disks.Count);
        Assert.Equal(DataDiskSize, vm.Disks[1].SizeBytes);
        Assert.Equal([("nic0", "bridge", "br0", Mac0, "virtio"), ("nic1", "bridge", "br0", Mac1, "virtio")],
            vm.Hardware!.Nics.Select(n => (n.Name, n.Mode, n.Bridge, n.Mac, n.Model)));
        Assert.True(vm.GuestAgent);
        // Copied, not referenced: the disks live in the data folder.
        Assert.All(vm.Disks, d => Assert.StartsWith(w.Data, d.Chain[0].Path));
        return vm;
    }

    /// <summary>Starts the VM, waits for qemu-ga, and checks from inside: eth0/eth1 carry the MACs, vdb is the data disk.</summary>
    private static async Task BootAndCheckGuestAsync(HavenWorld w, VmInfo vm, CancellationToken ct)
    {
        var boot = Stopwatch.StartNew();
        await w.OkAsync("vm", "start", vm.Name);
        var agent = w.Paths.GuestAgentSocket(vm.Id);
        await DebianGuest.WaitForAgentAsync(agent, TimeSpan.FromSeconds(300), ct);
        TestContext.Current.TestOutputHelper?.WriteLine($"imported guest {vm.Name} up (qemu-ga) after {boot.Elapsed.TotalSeconds:0.0} s");
        Assert.Equal($"{Mac0}\n{Mac1}", (await DebianGuest.ShOkAsync(agent, "cat /sys/class/net/eth0/address /sys/class/net/eth1/address", ct)).Trim());
        Assert.Equal(DataDiskSize.ToString(), (await DebianGuest.ShOkAsync(agent, "lsblk -bdno SIZE /dev/vdb", ct)).Trim());
        Assert.Equal(DataMark, await DebianGuest.ShOkAsync(agent, $"head -c {DataMark.Length} /dev/vdb", ct));
        await w.OkAsync("vm", "stop", vm.Name, "--force");
    }

    /// <summary>
    /// A domain as virsh dumpxml writes one for a virt-install'ed VM: disks with driver, alias and PCI address, NICs on br0
    /// (or a user NIC, or another bridge), a pty serial console, the qemu-ga channel, VNC graphics, balloon and RNG.
    /// </summary>
    private static string Domain(string name, string os, string root, string? data, bool user = false, string bridge = "br0", string extra = "")
    {
        var dataDisk = data is null ? "" : $"""
                <disk type='file' device='disk'>
                  <driver name='qemu' type='raw' cache='none' io='native'/>
                  <source file='{data}' index='1'/>
                  <backingStore/>
                  <target dev='vdb' bus='virtio'/>
                  <alias name='virtio-disk1'/>
                  <address type='pci' domain='0x0000' bus='0x07' slot='0x00' function='0x0'/>
                </disk>
            """;
        var nics = user ? """
                <interface type='user'>
                  <mac address='52:54:00:4c:11:09'/>
                  <model type='virtio'/>
                </interface>
            """ : string.Concat(new[] { Mac0, Mac1 }.Select((mac, i) => $"""
                <interface type='bridge'>
                  <mac address='{mac}'/>
                  <source bridge='{bridge}'/>
                  <target dev='vnet{4 + i}'/>
                  <model type='virtio'/>
                  <alias name='net{i}'/>
                  <address type='pci' domain='0x0000' bus='0x0{1 + 7 * i}' slot='0x00' function='0x0'/>
                </interface>

            """));
        return $"""
            <domain type='kvm' id='7'>
              <name>{name}</name>
              <uuid>0b7ad6a2-8c1e-4f4e-9d4e-2f3f0c1a5b{name.Length:x2}</uuid>
              <metadata>
                <libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0">
                  <libosinfo:os id="http://debian.org/debian/12"/>
                </libosinfo:libosinfo>
              </metadata>
              <memory unit='KiB'>786432</memory>
              <currentMemory unit='KiB'>786432</currentMemory>
              <vcpu placement='static'>2</vcpu>
              <resource>
                <partition>/machine</partition>
              </resource>
            {os}
              <features>
                <acpi/>
                <apic/>
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
              <devices>
                <emulator>/usr/bin/qemu-system-x86_64</emulator>
                <disk type='file' device='disk'>
                  <driver name='qemu' type='qcow2' discard='unmap'/>
                  <source file='{root}' index='2'/>
                  <backingStore/>
                  <target dev='vda' bus='virtio'/>
                  <alias name='virtio-disk0'/>
                  <address type='pci' domain='0x0000' bus='0x04' slot='0x00' function='0x0'/>
                </disk>
            {dataDisk}
                <controller type='usb' index='0' model='qemu-xhci' ports='15'>
                  <alias name='usb'/>
                  <address type='pci' domain='0x0000' bus='0x02' slot='0x00' function='0x0'/>
                </controller>
                <controller type='pci' index='0' model='pcie-root'>
                  <alias name='pcie.0'/>
                </controller>
                <controller type='virtio-serial' index='0'>
                  <alias name='virtio-serial0'/>
                  <address type='pci' domain='0x0000' bus='0x03' slot='0x00' function='0x0'/>
                </controller>
            {nics}
                <serial type='pty'>
                  <source path='/dev/pts/3'/>
                  <target type='isa-serial' port='0'>
                    <model name='isa-serial'/>
                  </target>
                  <alias name='serial0'/>
                </serial>
                <console type='pty' tty='/dev/pts/3'>
                  <source path='/dev/pts/3'/>
                  <target type='serial' port='0'/>
                  <alias name='serial0'/>
                </console>
                <channel type='unix'>
                  <source mode='bind' path='/run/libvirt/qemu/channel/7-{name}/org.qemu.guest_agent.0'/>
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
                <graphics type='vnc' port='5901' autoport='yes' listen='127.0.0.1'>
                  <listen type='address' address='127.0.0.1'/>
                </graphics>
                <audio id='1' type='none'/>
                <video>
                  <model type='virtio' heads='1' primary='yes'/>
                  <alias name='video0'/>
                  <address type='pci' domain='0x0000' bus='0x00' slot='0x01' function='0x0'/>
                </video>
                <memballoon model='virtio'>
                  <alias name='balloon0'/>
                  <address type='pci' domain='0x0000' bus='0x05' slot='0x00' function='0x0'/>
                </memballoon>
                <rng model='virtio'>
                  <backend model='random'>/dev/urandom</backend>
                  <alias name='rng0'/>
                  <address type='pci' domain='0x0000' bus='0x06' slot='0x00' function='0x0'/>
                </rng>
            {extra}
              </devices>
              <seclabel type='dynamic' model='apparmor' relabel='yes'>
                <label>libvirt-0b7ad6a2-8c1e-4f4e-9d4e-2f3f0c1a5b00</label>
                <imagelabel>libvirt-0b7ad6a2-8c1e-4f4e-9d4e-2f3f0c1a5b00</imagelabel>
              </seclabel>
            </domain>
            """;
    }

    /// <summary>What a refused import must not change: the VM list, the state database and every file under the data folder's vms/.</summary>
    private static async Task<string> StateAsync(HavenWorld w) =>
        await w.OkAsync("vm", "list", "--json") + "\n" + w.DumpState() + "\n"
        + string.Join('\n', Directory.GetFileSystemEntries(w.Paths.VmsDir, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal));

    private static void AssertRefused(CliResult r, string message, bool exact = true)
    {
        Assert.True(r.ExitCode == 2, $"expected exit 2\n{r}");
        Assert.True(r.Stdout == "", $"stdout must be empty\n{r}");
        var line = Assert.Single(r.StderrLines);
        if (exact) Assert.Equal(message, line);
        else Assert.StartsWith(message, line);
    }
}
