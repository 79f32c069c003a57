using System.Text.RegularExpressions;
using Haven.Api;

namespace Haven.EndToEnd.Tests;

/// <summary>
/// Failover networking with Hyper-V semantics (docs/replication.md, "Networks at failover"): two havend hosts in one
/// network namespace with bridges br0 and br-dr. The replication's failover network maps nic0 to br-dr; nic1 keeps br0.
/// A test-failover VM has the replica's NICs and MACs with every link down; planned and unplanned failover put nic0's
/// tap on br-dr with the primary's MAC; a mapping to a bridge the replica host lacks refuses each failover with one line
/// and changes nothing; bad mappings are refused at 'replication set'.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed partial class FailoverNetworkTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact(Timeout = 600_000)]
    public async Task Failover_vms_come_up_on_the_mapped_bridge_with_the_primarys_macs_and_a_test_failover_with_links_down()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var ns = await NamespaceAsync();
        await using var primary = new HavenWorld(ct) { NetNamespace = ns.Name };
        await using var replica = new HavenWorld(ct) { NetNamespace = ns.Name };
        var url = await ReplicationSetup.PairAsync(primary, replica);
        await ReplicationSetup.ServeAsync(primary, "replica.test"); // for the reverse replication at the end

        var vm = await primary.JsonAsync<VmInfo>("vm", "create", "web", "--disk-size", "32M", "--accel", "tcg", "--memory", "64", "--no-guest-agent",
            "--nic", "bridge=br0", "--nic", "bridge=br0", "--nic", "user");
        await primary.LearnVmAsync("web");
        var macs = vm.Hardware!.Nics.ConvertAll(n => n.Mac!);
        await primary.OkAsync("vm", "start", "web");
        await primary.OkAsync("replication", "enable", "web", "--replica", url, "--frequency", "15m",
            "--start-at", DateTimeOffset.UtcNow.AddDays(1).ToString("O"), "--failover-network", "nic0=br-dr");
        Assert.Equal(new Dictionary<string, string> { ["nic0"] = "br-dr" }, (await StatusAsync(primary)).FailoverNetwork);

        // Bad mappings: one line each, the setting unchanged.
        foreach (var (args, message) in new (string[], string)[]
        {
            (["--failover-network", "nic5=br-dr"], "VM 'web' has no NIC 'nic5' (it has nic0, nic1, nic2)"),
            (["--failover-network", "nic2=br-dr"], "nic2 of VM 'web' is a user-mode NIC; only bridge NICs are mapped"),
            (["--failover-network", "nic0=no/such"], "'no/such' is not a bridge name"),
            (["--failover-network", "nic0=abcdefghijklmnop"], "'abcdefghijklmnop' is not a bridge name"),
            (["--failover-network", "nic0"], "'nic0' is not NIC=BRIDGE"),
            (["--failover-network", "nic0=br-dr", "--failover-network", "nic0=br0"], "nic0 is mapped twice"),
        })
        {
            var bad = await primary.Cli(["replication", "set", "web", .. args]);
            Assert.NotEqual(0, bad.ExitCode);
            Assert.Contains(message, bad.StderrLines[0]);
            Assert.All(bad.StderrLines.Skip(1), l => Assert.StartsWith("see 'haven replication set --help'", l)); // parse errors add the help hint
            Assert.Equal(new Dictionary<string, string> { ["nic0"] = "br-dr" }, (await StatusAsync(primary)).FailoverNetwork);
        }

        await RunAsync(primary);
        Assert.Equal(new Dictionary<string, string> { ["nic0"] = "br-dr" }, (await StatusAsync(replica)).FailoverNetwork);
        await replica.LearnVmAsync("web");
        var replicaVm = await replica.ShowAsync("web");
        Assert.Equal(macs, replicaVm.Hardware!.Nics.ConvertAll(n => n.Mac!));
        Assert.Equal(["br0", "br0", null], replicaVm.Hardware.Nics.ConvertAll(n => n.Bridge)); // the primary's bridges until a failover

        // Test failover: the replica's NICs on the failover network, the same MACs, every link down until the user connects one.
        var test = await replica.JsonAsync<VmInfo>("replication", "test-failover", "web");
        await replica.LearnVmAsync("web - Test");
        Assert.Equal(VmState.Running, test.State);
        Assert.Equal(macs, test.Hardware!.Nics.ConvertAll(n => n.Mac!));
        Assert.Equal(["br-dr", "br0", null], test.Hardware.Nics.ConvertAll(n => n.Bridge));
        Assert.All(test.Hardware.Nics, n => Assert.False(n.LinkUp));
        Assert.Equal(["br-dr", "br0"], [await MasterAsync(ns, test.Id, "nic0"), await MasterAsync(ns, test.Id, "nic1")]);
        await AssertQemuMacsAsync(replica, "web - Test", macs);
        await replica.OkAsync("vm", "nic", "web - Test", "nic0", "--link", "up");
        Assert.Equal([true, false, false], (await replica.ShowAsync("web - Test")).Hardware!.Nics.ConvertAll(n => n.LinkUp));
        await replica.OkAsync("replication", "stop-test-failover", "web");

        // A mapping to a bridge the replica host does not have: test, unplanned and planned failover refuse, nothing changes.
        await primary.OkAsync("replication", "set", "web", "--failover-network", "nic0=br-gone");
        await RunAsync(primary);
        var checkpoints = (await replica.CheckpointsAsync("web")).ConvertAll(c => c.Name);
        foreach (var (world, args) in new (HavenWorld, string[])[]
        {
            (replica, ["replication", "test-failover", "web"]),
            (replica, ["replication", "failover", "web"]),
            (primary, ["replication", "planned-failover", "web", "--shutdown-timeout", "2"]),
        })
        {
            var refused = await world.Cli(args);
            Assert.NotEqual(0, refused.ExitCode);
            Assert.Contains("nic0's bridge 'br-gone' does not exist on this host", Assert.Single(refused.StderrLines));
            Assert.Contains("nothing was changed", refused.StderrLines[0]);
            Assert.Equal(("Replicating", VmState.Off), ((await StatusAsync(replica)).State, (await replica.ShowAsync("web")).State));
            Assert.Equal(["br0", "br0", null], (await replica.ShowAsync("web")).Hardware!.Nics.ConvertAll(n => n.Bridge));
            Assert.Equal(checkpoints, (await replica.CheckpointsAsync("web")).ConvertAll(c => c.Name));
            Assert.DoesNotContain(await replica.JsonAsync<List<VmInfo>>("vm", "list"), v => v.Name == "web - Test");
            Assert.Equal(VmState.Running, (await primary.ShowAsync("web")).State); // the planned failover did not shut it down
        }

        // Unplanned failover (the primary host gone): nic0 on br-dr, nic1 on br0, the primary's MACs.
        await primary.OkAsync("replication", "set", "web", "--failover-network", "nic0=br-dr");
        await RunAsync(primary);
        await primary.StopDaemonAsync();
        var failedOver = await replica.JsonAsync<VmInfo>("replication", "failover", "web");
        Assert.Equal(VmState.Running, failedOver.State);
        Assert.Equal(macs, failedOver.Hardware!.Nics.ConvertAll(n => n.Mac!));
        Assert.All(failedOver.Hardware.Nics, n => Assert.True(n.LinkUp));
        Assert.Equal(["br-dr", "br0"], [await MasterAsync(ns, failedOver.Id, "nic0"), await MasterAsync(ns, failedOver.Id, "nic1")]);
        await AssertQemuMacsAsync(replica, "web", macs);
        // Cancelled: the recovery point's hardware (the primary's bridges) comes back with its disks.
        await replica.OkAsync("replication", "cancel-failover", "web");
        Assert.Equal(["br0", "br0", null], (await replica.ShowAsync("web")).Hardware!.Nics.ConvertAll(n => n.Bridge));

        // Planned failover with reverse replication: the same on the replica; the reverse replication has no mapping.
        await primary.StartDaemonAsync();
        await primary.JsonAsync<ReplicationCycleResult>("replication", "planned-failover", "web", "--reverse", "--shutdown-timeout", "2");
        Assert.Equal(VmState.Off, (await primary.ShowAsync("web")).State);
        var planned = await replica.ShowAsync("web");
        Assert.Equal(VmState.Running, planned.State);
        Assert.Equal(macs, planned.Hardware!.Nics.ConvertAll(n => n.Mac!));
        Assert.Equal(["br-dr", "br0"], [await MasterAsync(ns, planned.Id, "nic0"), await MasterAsync(ns, planned.Id, "nic1")]);
        var reversed = await StatusAsync(replica);
        Assert.Equal(("primary", null), (reversed.Role, reversed.FailoverNetwork));
        Assert.Matches(@"Failover network\s+none", await replica.OkAsync("replication", "status", "web"));
    }

    /// <summary>
    /// The test guest has no NIC driver: the link state a test-failover VM's guest sees is proven with the Debian guest.
    /// Only the test VM boots (the primary's VM stays off: its cycle reads the disk with qemu-nbd).
    /// </summary>
    [Fact(Timeout = 1_200_000)]
    public async Task A_debian_test_failover_vm_sees_no_carrier_on_its_nic_until_the_link_is_brought_up()
    {
        var ct = TestContext.Current.CancellationToken;
        var log = TestContext.Current.TestOutputHelper;
        await Haven.TestSupport.DebianGuest.EnsureBuiltAsync();
        await using var ns = await NamespaceAsync();
        await using var primary = new HavenWorld(ct) { NetNamespace = ns.Name };
        await using var replica = new HavenWorld(ct) { NetNamespace = ns.Name };
        var url = await ReplicationSetup.PairAsync(primary, replica);
        var disk = primary.Dir.File("debian.qcow2");
        await Haven.TestSupport.DebianGuest.CopyDiskAsync(disk);
        var vm = await primary.JsonAsync<VmInfo>("vm", "create", "db", "--disk", disk, "--accel", "tcg", "--memory", "768",
            "--kernel", Haven.TestSupport.DebianGuest.Kernel, "--initrd", Haven.TestSupport.DebianGuest.Initrd,
            "--append", Haven.TestSupport.DebianGuest.Append, "--nic", "bridge=br0");
        var mac = vm.Hardware!.Nics[0].Mac!;
        await primary.OkAsync("replication", "enable", "db", "--replica", url, "--frequency", "15m",
            "--start-at", DateTimeOffset.UtcNow.AddDays(1).ToString("O"), "--failover-network", "nic0=br-dr");
        var clock = System.Diagnostics.Stopwatch.StartNew();
        await primary.JsonAsync<ReplicationCycleResult>("replication", "run", "db");
        log?.WriteLine($"initial cycle of the Debian disk: {clock.Elapsed.TotalSeconds:0.0} s");

        var test = await replica.JsonAsync<VmInfo>("replication", "test-failover", "db");
        Assert.Equal(["br-dr"], [await MasterAsync(ns, test.Id, "nic0")]);
        var agent = replica.Paths.GuestAgentSocket(test.Id);
        log?.WriteLine($"test VM's qemu-ga answered after {(await Haven.TestSupport.DebianGuest.WaitForAgentAsync(agent, TimeSpan.FromSeconds(300), ct)).TotalSeconds:0.0} s");
        // The guest's eth0 is the primary's NIC (its MAC); up on the guest's side, with no carrier: QEMU holds the link down.
        Assert.Equal(mac, (await Haven.TestSupport.DebianGuest.ShOkAsync(agent, "cat /sys/class/net/eth0/address", ct)).Trim());
        Assert.Equal("0", await CarrierAsync(agent, ct));
        await replica.OkAsync("vm", "nic", "db - Test", "nic0", "--link", "up");
        Assert.Equal("1", await CarrierAsync(agent, ct));
        await replica.OkAsync("replication", "stop-test-failover", "db");
    }

    /// <summary>eth0's carrier as the guest's kernel reports it (the interface set up first: a down one has none to read).</summary>
    private static async Task<string> CarrierAsync(string agent, CancellationToken ct) =>
        (await Haven.TestSupport.DebianGuest.ShOkAsync(agent, "ip link set eth0 up && sleep 2 && cat /sys/class/net/eth0/carrier", ct)).Trim();

    /// <summary>A network namespace with br0 and br-dr, loopback up (the replica server listens on 127.0.0.1 inside it).</summary>
    private static async Task<TestNetNamespace> NamespaceAsync()
    {
        var ns = await TestNetNamespace.CreateAsync();
        await ns.IpAsync("link", "set", "lo", "up");
        await ns.IpAsync("link", "add", "br-dr", "type", "bridge");
        await ns.IpAsync("link", "set", "br-dr", "up");
        return ns;
    }

    private static Task<ReplicationCycleResult> RunAsync(HavenWorld primary) => primary.JsonAsync<ReplicationCycleResult>("replication", "run", "web");

    private static Task<ReplicationStatusInfo> StatusAsync(HavenWorld w) => w.JsonAsync<ReplicationStatusInfo>("replication", "status", "web");

    /// <summary>The bridge a VM's NIC's tap is attached to, as the kernel of the namespace has it.</summary>
    private static async Task<string> MasterAsync(TestNetNamespace ns, string vmId, string nic)
    {
        var tap = "hv" + vmId[..10] + "n" + nic["nic".Length..];
        var line = await ns.IpAsync("-o", "link", "show", "dev", tap);
        return MasterPattern().Match(line) is { Success: true } m ? m.Groups[1].Value : throw new Xunit.Sdk.XunitException($"tap {tap} has no master: {line}");
    }

    /// <summary>QEMU's NICs carry these MACs, in order.</summary>
    private static async Task AssertQemuMacsAsync(HavenWorld w, string vm, List<string> macs)
    {
        await w.WithQmpAsync(vm, async qmp =>
        {
            var network = (await qmp.ExecuteAsync("human-monitor-command", new System.Text.Json.Nodes.JsonObject { ["command-line"] = "info network" }, Ct)).GetString()!;
            for (var i = 0; i < macs.Count; i++) Assert.Contains($"nic{i}: index=0,type=nic,model=virtio-net-pci,macaddr={macs[i]}", network);
        });
    }

    [GeneratedRegex(@"\bmaster (\S+)")]
    private static partial Regex MasterPattern();
}
