using System.Text.Json;
using Haven.Api;
using Haven.Qemu.Images;
using Haven.Qemu.Runtime;
using Xunit;

namespace Haven.EndToEnd.Tests;

/// <summary>
/// VM hardware through havend and the CLI: bridge NICs in a network namespace the test makes (havend runs in it,
/// so its bridges and taps are the namespace's), the hardware document versioned with checkpoints, and bad input.
/// </summary>
public sealed class VmHardwareTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Bridge_nics_get_taps_on_the_bridge_with_their_macs_and_no_tap_outlives_its_qemu()
    {
        await using var ns = await TestNetNamespace.CreateAsync();
        await using var w = new HavenWorld(Ct) { NetNamespace = ns.Name };
        await w.StartDaemonAsync();
        var vm = await w.JsonAsync<VmInfo>("vm", "create", "web", "--disk-size", "32M", "--accel", "tcg", "--memory", "64", "--no-guest-agent",
            "--nic", "bridge=br0", "--nic", "bridge=br0,model=e1000,mac=52:54:00:AA:BB:01", "--nic", "user");
        await w.LearnVmAsync("web");
        var nics = vm.Hardware!.Nics;
        Assert.Equal(["nic0", "nic1", "nic2"], nics.Select(n => n.Name));
        Assert.Matches("^52:54:00:[0-9a-f]{2}:[0-9a-f]{2}:[0-9a-f]{2}$", nics[0].Mac);
        Assert.Equal("52:54:00:aa:bb:01", nics[1].Mac);
        Assert.Equal(("bridge", "br0", "e1000"), (nics[1].Mode, nics[1].Bridge, nics[1].Model));
        Assert.Equal("bridge,user", vm.Network);
        var taps = new[] { "hv" + vm.Id[..10] + "n0", "hv" + vm.Id[..10] + "n1" };
        Assert.Empty(await ns.TapsAsync());

        await w.OkAsync("vm", "start", "web");
        Assert.Equal(taps, await ns.OnBridgeAsync());
        await w.OkAsync("vm", "nic", "web", "nic1", "--link", "down");
        Assert.False((await w.ShowAsync("web")).Hardware!.Nics[1].LinkUp);
        // QEMU pairs each NIC (its MAC) with its tap.
        await w.WithQmpAsync("web", async qmp =>
        {
            var network = (await qmp.ExecuteAsync("human-monitor-command", new System.Text.Json.Nodes.JsonObject { ["command-line"] = "info network" }, Ct)).GetString()!;
            Assert.Contains($"nic0: index=0,type=nic,model=virtio-net-pci,macaddr={nics[0].Mac}\r\n \\ net-nic0: index=0,type=tap,ifname={taps[0]},", network);
            Assert.Contains($"nic1: index=0,type=nic,model=e1000,macaddr=52:54:00:aa:bb:01\r\n \\ net-nic1: index=0,type=tap,ifname={taps[1]},", network);
            Assert.Contains($"nic2: index=0,type=nic,model=virtio-net-pci,macaddr={nics[2].Mac}\r\n \\ net-nic2: index=0,type=user,", network);
            // The link state havend set answers again (set_link fails for an unknown NIC).
            await qmp.ExecuteAsync("set_link", new System.Text.Json.Nodes.JsonObject { ["name"] = "nic1", ["up"] = false }, Ct);
        });
        await w.OkAsync("vm", "nic", "web", "nic1", "--link", "up");
        Assert.True((await w.ShowAsync("web")).Hardware!.Nics[1].LinkUp);

        await w.OkAsync("vm", "stop", "web", "--force");
        Assert.Empty(await ns.TapsAsync());

        // QEMU and havend killed: the taps stay behind until havend starts again and finds the VM off.
        await w.OkAsync("vm", "start", "web");
        Assert.Equal(taps, await ns.OnBridgeAsync());
        var qemuPid = QemuProcess.ReadPid(w.Paths.PidFile(vm.Id))!.Value;
        await ProcessRunner.RunAsync("kill", ["-KILL", qemuPid.ToString()], Ct);
        await w.KillDaemonAsync();
        for (var i = 0; i < 100 && QemuProcess.IsProcessAlive(qemuPid, w.Paths.PidFile(vm.Id)); i++) await Task.Delay(50, Ct);
        Assert.Equal(taps, await ns.TapsAsync());
        var d = await w.StartDaemonAsync();
        Assert.Contains("2 orphan tap(s)", d.StartupReport);
        Assert.Empty(await ns.TapsAsync());
        Assert.Equal(VmState.Off, (await w.ShowAsync("web")).State);
        // The MACs stay across restarts.
        Assert.Equal(nics.Select(n => n.Mac), (await w.ShowAsync("web")).Hardware!.Nics.Select(n => n.Mac));
    }

    [Fact]
    public async Task Checkpoint_apply_brings_back_the_hardware_of_its_time_and_bad_input_changes_nothing()
    {
        await using var ns = await TestNetNamespace.CreateAsync();
        await using var w = new HavenWorld(Ct) { NetNamespace = ns.Name };
        await w.StartDaemonAsync();
        await w.CreateVmAsync("v");
        await w.OkAsync("vm", "set", "v", "--nic", "add:bridge=br0");
        var before = await w.ShowAsync("v");
        await w.CheckpointAsync("v", "c1");
        await w.OkAsync("vm", "set", "v", "--vcpus", "2", "--memory", "128", "--nic", "nic0:user,model=e1000", "--resize", "disk0=64M", "--disk-bus", "virtio-scsi");
        var changed = await w.ShowAsync("v");
        Assert.Equal((2, 128, "user", "e1000", 64L << 20), (changed.Vcpus, changed.MemoryMiB, changed.Hardware!.Nics[0].Mode, changed.Hardware.Nics[0].Model, changed.Disks[0].SizeBytes));
        Assert.Equal(before.Hardware!.Nics[0].Mac, changed.Hardware.Nics[0].Mac); // replaced, same card
        // It starts with the new hardware (virtio-scsi disk, bigger disk).
        await w.OkAsync("vm", "start", "v");
        await w.OkAsync("vm", "stop", "v", "--force");

        await w.OkAsync("checkpoint", "apply", "v", "c1");
        var applied = await w.ShowAsync("v");
        Assert.Equal(Json(before.Hardware), Json(applied.Hardware));
        Assert.Equal(32L << 20, applied.Disks[0].SizeBytes);

        // Bad input: one line on stderr, exit 2, state as it was.
        var iso = w.Dir.File("missing.iso");
        var other = before.Hardware.Nics[0].Mac!;
        var state = await w.OkAsync("vm", "show", "v", "--json");
        var list = await w.OkAsync("vm", "list", "--json");
        foreach (var (args, message) in new (string[], string)[]
        {
            (["vm", "create", "x", "--disk-size", "32M", "--nic", "bridge=nosuchbr"], "bridge 'nosuchbr' does not exist on this host"),
            (["vm", "create", "x", "--disk-size", "32M", "--nic", "user,mac=" + other], $"MAC address {other} is already in use on this host"),
            (["vm", "create", "x", "--disk-size", "32M", "--cdrom", iso], "ISO image not found: " + iso),
            (["vm", "set", "v", "--cdrom", iso], "ISO image not found: " + iso),
            (["vm", "set", "v", "--nic", "add:bridge=nosuchbr"], "bridge 'nosuchbr' does not exist on this host"),
            (["vm", "set", "v", "--resize", "disk0=16M"], $"disk0 is {32 << 20} bytes; a disk can only grow (shrinking would cut off the guest's data)"),
            (["vm", "set", "v", "--nic", "add:bridge=br0,model=rtl8139"], "model=rtl8139"),
        })
        {
            var r = await w.Cli(args);
            Assert.True(r.ExitCode == 2, r.ToString());
            // One error line (a parse error adds the CLI's usual pointer to --help).
            Assert.Contains(message, r.StderrLines[0]);
            Assert.All(r.StderrLines.Skip(1), l => Assert.StartsWith("see 'haven ", l));
            Assert.Equal(state, await w.OkAsync("vm", "show", "v", "--json"));
            Assert.Equal(list, await w.OkAsync("vm", "list", "--json"));
        }
    }

    private static string Json<T>(T value) => JsonSerializer.Serialize(value, ApiJson.Options);
}
