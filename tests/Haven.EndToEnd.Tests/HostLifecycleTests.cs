using System.Diagnostics;
using Haven.Api;

namespace Haven.EndToEnd.Tests;

/// <summary>
/// Autostart (havend starts flagged VMs after reconciliation) and the orderly host shutdown of haven-guests.service
/// (`haven host shutdown-vms`): real havend, CLI, QEMU; the test guest obeys ACPI, a BIOS-only VM ignores it.
/// </summary>
public sealed class HostLifecycleTests
{
    [Fact(Timeout = 300_000)]
    public async Task Autostart_VMs_start_when_havend_starts_the_others_stay_off_and_one_that_fails_does_not_stop_them()
    {
        await using var w = new HavenWorld(TestContext.Current.CancellationToken);
        await w.StartDaemonAsync();
        string[] plain = ["--disk-size", "32M", "--accel", "tcg", "--memory", "64", "--no-guest-agent"];
        Assert.True((await w.JsonAsync<VmInfo>(["vm", "create", "auto", .. plain, "--autostart"])).Autostart);
        Assert.False((await w.JsonAsync<VmInfo>(["vm", "create", "manual", .. plain])).Autostart);
        await w.OkAsync(["vm", "create", "later", .. plain]);
        Assert.True((await w.JsonAsync<VmInfo>("vm", "set", "later", "--autostart", "on")).Autostart);
        Assert.Contains("Autostart           on", await w.OkAsync("vm", "show", "later"));
        // An autostart VM that cannot start: its kernel is gone.
        var kernel = w.Dir.File("kernel");
        File.WriteAllText(kernel, "not a kernel");
        await w.OkAsync(["vm", "create", "broken", .. plain, "--kernel", kernel, "--autostart"]);
        File.Delete(kernel);

        var bad = await w.Cli("vm", "set", "manual", "--autostart", "maybe");
        Assert.Equal(2, bad.ExitCode);
        Assert.Equal("haven: --autostart takes on or off, not 'maybe'", bad.StderrLines[0]);
        Assert.False((await w.ShowAsync("manual")).Autostart);

        await w.StopDaemonAsync();
        var d = await w.StartDaemonAsync();
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (!d.Stdout.Contains("havend: autostart started") && DateTime.UtcNow < deadline) await Task.Delay(200, w.Ct);
        Assert.Contains("havend: autostart started auto, later\n", d.Stdout);
        Assert.Contains("autostart on VM broken", d.Stdout); // the failed operation is logged
        var states = (await w.JsonAsync<List<VmInfo>>("vm", "list")).ToDictionary(v => v.Name, v => v.State);
        Assert.Equal(VmState.Running, states["auto"]);
        Assert.Equal(VmState.Running, states["later"]);
        Assert.Equal(VmState.Off, states["manual"]);
        Assert.Equal(VmState.Off, states["broken"]);

        // Restarting havend (an upgrade) leaves running VMs alone: reattached, not started again.
        var pid = (await w.ShowAsync("auto")).Pid;
        await w.StopDaemonAsync();
        d = await w.StartDaemonAsync();
        Assert.Contains("reattached 2 VM(s)", d.StartupReport);
        Assert.Equal(pid, (await w.ShowAsync("auto")).Pid);
        await w.OkAsync("vm", "set", "later", "--autostart", "off");
        Assert.False((await w.ShowAsync("later")).Autostart);
    }

    [Fact(Timeout = 300_000)]
    public async Task Shutdown_vms_shuts_down_a_guest_that_obeys_ACPI_and_forces_off_one_that_ignores_it_after_the_timeout()
    {
        await using var w = new HavenWorld(TestContext.Current.CancellationToken);
        await w.StartDaemonAsync();
        var log = await w.StartTestGuestAsync("obeys");
        await w.CreateVmAsync("ignores", start: true); // SeaBIOS and no OS: nothing handles the power button
        await w.CreateVmAsync("off");
        Assert.Contains("watching the power button", File.ReadAllText(log));

        const int timeout = 20;
        var clock = Stopwatch.StartNew();
        var r = await w.Cli("host", "shutdown-vms", "--timeout", timeout.ToString());
        clock.Stop();
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Equal("VM 'ignores' did not shut down in time: forced off.\nVM 'obeys' shut down.\n", r.Stdout);
        Assert.True(clock.Elapsed >= TimeSpan.FromSeconds(timeout), $"took {clock.Elapsed}");
        Assert.Contains("power button pressed: powering off", File.ReadAllText(log));
        Assert.All(await w.JsonAsync<List<VmInfo>>("vm", "list"), vm => Assert.Equal(VmState.Off, vm.State));
        Assert.Contains("operation", w.Daemon!.Stdout);
        Assert.Contains("VM ignores did not shut down within 20 s: forced off", w.Daemon.Stdout);

        // Nothing running: nothing to do, exit 0.
        var none = await w.JsonAsync<HostShutdownResult>("host", "shutdown-vms", "--timeout", "0");
        Assert.Empty(none.Vms);
        var bad = await w.Cli("host", "shutdown-vms", "--timeout", "-5");
        Assert.Equal(2, bad.ExitCode);
    }
}
