using System.Diagnostics;
using Haven.Api;
using Haven.TestSupport;

namespace Haven.EndToEnd.Tests;

/// <summary>
/// Real guests on a real bridge: two Debian guests with bridge NICs (havend runs in a network namespace the test
/// makes, with bridge br0 at 10.77.0.1/24) reach each other and the host, a TCP service in one answers the host, and
/// a backup restored as a new VM comes up with its own MAC and answers on it.
/// </summary>
public sealed class DebianNetworkTests
{
    private const string HostIp = "10.77.0.1";

    [Fact(Timeout = 1_200_000)]
    public async Task Two_debian_guests_on_one_bridge_reach_each_other_and_the_host_and_a_restored_copy_answers_on_its_own_mac()
    {
        var ct = TestContext.Current.CancellationToken;
        var log = TestContext.Current.TestOutputHelper;
        await DebianGuest.EnsureBuiltAsync();
        await using var ns = await TestNetNamespace.CreateAsync();
        await ns.IpAsync("addr", "add", HostIp + "/24", "dev", "br0");
        await using var w = new HavenWorld(ct) { NetNamespace = ns.Name };
        await w.StartDaemonAsync();

        var vms = new Dictionary<string, VmInfo>();
        foreach (var name in new[] { "a", "b" })
        {
            var disk = w.Dir.File(name + ".qcow2");
            await DebianGuest.CopyDiskAsync(disk);
            vms[name] = await w.JsonAsync<VmInfo>("vm", "create", name, "--disk", disk, "--accel", "tcg", "--memory", "768",
                "--kernel", DebianGuest.Kernel, "--initrd", DebianGuest.Initrd, "--append", DebianGuest.Append, "--nic", "bridge=br0");
            await w.LearnVmAsync(name);
        }
        Assert.NotEqual(vms["a"].Hardware!.Nics[0].Mac, vms["b"].Hardware!.Nics[0].Mac);
        var boot = Stopwatch.StartNew();
        await w.OkAsync("vm", "start", "a");
        await w.OkAsync("vm", "start", "b");
        var a = w.Paths.GuestAgentSocket(vms["a"].Id);
        var b = w.Paths.GuestAgentSocket(vms["b"].Id);
        await DebianGuest.WaitForAgentAsync(a, TimeSpan.FromSeconds(240), ct);
        await DebianGuest.WaitForAgentAsync(b, TimeSpan.FromSeconds(240), ct);
        log?.WriteLine($"two Debian guests up (qemu-ga) after {boot.Elapsed.TotalSeconds:0.0} s");

        // Each guest's eth0 is its VM's NIC (the MAC Haven gave it); addresses are static (no DHCP server on br0).
        await ConfigureAsync(a, vms["a"], "10.77.0.11", ct);
        await ConfigureAsync(b, vms["b"], "10.77.0.12", ct);

        // Guest to guest and guest to host, both ways.
        await PingFromGuestAsync(a, "10.77.0.12", ct);
        await PingFromGuestAsync(b, HostIp, ct);
        await PingFromHostAsync(ns, "10.77.0.11");
        await PingFromHostAsync(ns, "10.77.0.12");
        // The host learned each guest's address at the MAC Haven gave its NIC.
        Assert.Contains(vms["a"].Hardware!.Nics[0].Mac!, await ns.IpAsync("neigh", "show", "10.77.0.11"));

        // A TCP service in guest b answers a client on the host.
        await DebianGuest.ShOkAsync(b, "setsid socat TCP-LISTEN:7000,reuseaddr,fork SYSTEM:'echo hello from b' </dev/null >/dev/null 2>&1 &", ct);
        Assert.Equal("hello from b", await TcpReadFromHostAsync(ns, "10.77.0.12", 7000, ct));

        // A backup of a, restored as a new VM: a new MAC (it shares the L2 network with a), and it answers on it.
        var repo = w.Dir.File("repo");
        var pass = w.Dir.File("pass");
        await File.WriteAllTextAsync(pass, "a passphrase\n", ct);
        string[] r = ["--repo", repo, "--passphrase-file", pass];
        await w.OkAsync(["repo", "init", .. r]);
        var backup = await w.JsonAsync<BackupResult>(["backup", "a", .. r]);
        await w.JsonAsync<RestoreResult>(["restore", backup.BackupId, .. r, "--name", "c"]);
        await w.LearnVmAsync("c");
        var c = await w.ShowAsync("c");
        var cMac = c.Hardware!.Nics[0].Mac!;
        Assert.Equal(("bridge", "br0"), (c.Hardware.Nics[0].Mode, c.Hardware.Nics[0].Bridge));
        Assert.NotEqual(vms["a"].Hardware!.Nics[0].Mac, cMac);
        Assert.NotEqual(vms["b"].Hardware!.Nics[0].Mac, cMac);
        await w.OkAsync("vm", "start", "c");
        var cAgent = w.Paths.GuestAgentSocket(c.Id);
        await DebianGuest.WaitForAgentAsync(cAgent, TimeSpan.FromSeconds(240), ct);
        // The copy kept a's configuration on disk but not its runtime address; it gets its own.
        await ConfigureAsync(cAgent, c, "10.77.0.13", ct);
        await PingFromHostAsync(ns, "10.77.0.13");
        Assert.Contains(cMac, await ns.IpAsync("neigh", "show", "10.77.0.13"));
        await PingFromGuestAsync(cAgent, "10.77.0.11", ct); // the original still answers beside its copy
    }

    /// <summary>Checks eth0 carries the VM's MAC, then gives it a static address.</summary>
    private static async Task ConfigureAsync(string agent, VmInfo vm, string ip, CancellationToken ct)
    {
        var mac = (await DebianGuest.ShOkAsync(agent, "cat /sys/class/net/eth0/address", ct)).Trim();
        Assert.Equal(vm.Hardware!.Nics[0].Mac, mac);
        await DebianGuest.ShOkAsync(agent, $"ip link set eth0 up && ip addr add {ip}/24 dev eth0", ct);
    }

    private static async Task PingFromGuestAsync(string agent, string ip, CancellationToken ct) =>
        await DebianGuest.ShOkAsync(agent, $"ping -c 2 -W 10 {ip}", ct);

    private static async Task PingFromHostAsync(TestNetNamespace ns, string ip)
    {
        var r = await ns.ExecAsync("ping", "-c", "2", "-W", "10", ip);
        Assert.True(r.ExitCode == 0, $"the host cannot ping {ip}:\n{r.StandardOutput}{r.StandardError}");
    }

    /// <summary>What the service at ip:port sends, read from inside the namespace (retried while it starts listening).</summary>
    private static async Task<string> TcpReadFromHostAsync(TestNetNamespace ns, string ip, int port, CancellationToken ct)
    {
        for (var attempt = 1; ; attempt++)
        {
            var r = await ns.ExecAsync("timeout", "10", "bash", "-c", $"exec 3<>/dev/tcp/{ip}/{port} && cat <&3");
            if (r.ExitCode == 0) return r.StandardOutput.Trim();
            if (attempt == 10) throw new InvalidOperationException($"no answer from {ip}:{port}: {r.StandardError}");
            await Task.Delay(1000, ct);
        }
    }
}
