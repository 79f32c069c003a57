using System.Diagnostics;
using Haven.Api;
using Haven.TestSupport;

namespace Haven.EndToEnd.Tests;

/// <summary>
/// The Debian 12 guest (scripts/build-debian-guest.sh) as a user would run it under havend: imported disk,
/// direct kernel boot, TCG, qemu-ga, PostgreSQL; a production checkpoint runs the guest's fsfreeze hooks.
/// </summary>
public sealed class DebianGuestTests
{
    [Fact(Timeout = 900_000)] // the first run builds the image (about 2 minutes)
    public async Task Production_checkpoint_of_a_debian_guest_runs_the_postgresql_freeze_hook()
    {
        var ct = TestContext.Current.CancellationToken;
        var build = Stopwatch.StartNew();
        await DebianGuest.EnsureBuiltAsync();
        TestContext.Current.TestOutputHelper?.WriteLine($"debian guest cache ready in {build.Elapsed.TotalSeconds:0.0} s: {DebianGuest.CacheDir}");

        await using var w = new HavenWorld(ct);
        var disk = w.Dir.File("debian.qcow2");
        await DebianGuest.CopyDiskAsync(disk);
        await w.StartDaemonAsync();
        var vm = await w.JsonAsync<VmInfo>("vm", "create", "deb", "--disk", disk, "--accel", "tcg", "--memory", "1024",
            "--kernel", DebianGuest.Kernel, "--initrd", DebianGuest.Initrd, "--append", DebianGuest.Append, "--network", "user");
        Assert.True(vm.GuestAgent);
        await w.LearnVmAsync("deb");
        var socket = w.Paths.GuestAgentSocket(vm.Id);

        var boot = Stopwatch.StartNew();
        Assert.Equal(VmState.Running, (await w.JsonAsync<VmInfo>("vm", "start", "deb")).State);
        var agentUp = await DebianGuest.WaitForAgentAsync(socket, TimeSpan.FromSeconds(120), ct);
        var agentAt = boot.Elapsed;
        await DebianGuest.WaitForPostgresAsync(socket, TimeSpan.FromSeconds(90), ct);
        var pgAt = boot.Elapsed;
        TestContext.Current.TestOutputHelper?.WriteLine(
            $"boot (direct kernel, TCG, via havend): qemu-ga answers after {agentAt.TotalSeconds:0.0} s, PostgreSQL accepts connections after {pgAt.TotalSeconds:0.0} s");
        Assert.True(agentUp < TimeSpan.FromSeconds(120));

        // The test user over TCP with its password (pg_hba scram-sha-256), and the amcheck extension.
        Assert.Equal("1", (await DebianGuest.ShOkAsync(socket, DebianGuest.PsqlAsTestUser + " -c 'select 1'", ct)).Trim());
        Assert.Equal("amcheck", (await DebianGuest.ShOkAsync(socket,
            DebianGuest.PsqlAsTestUser + " -c \"select extname from pg_extension where extname = 'amcheck'\"", ct)).Trim());

        // A production checkpoint: qemu-ga runs /etc/qemu/fsfreeze-hook, whose postgresql hook asks for a CHECKPOINT.
        const string checkpointsDone = "runuser -u postgres -- psql -X -At -d postgres -c 'select checkpoints_req from pg_stat_bgwriter'";
        var before = long.Parse(await DebianGuest.ShOkAsync(socket, checkpointsDone, ct));
        var r = await w.JsonAsync<CheckpointCreateResult>("checkpoint", "create", "deb", "--name", "c1");
        Assert.Equal(Consistency.ApplicationConsistent, r.Checkpoint.Consistency);
        Assert.NotNull(r.FrozenMilliseconds);
        TestContext.Current.TestOutputHelper?.WriteLine($"production checkpoint: file systems frozen {r.FrozenMilliseconds:0} ms");

        var hookLog = await DebianGuest.ShOkAsync(socket, "cat /var/log/qga-fsfreeze-hook.log", ct);
        TestContext.Current.TestOutputHelper?.WriteLine("guest /var/log/qga-fsfreeze-hook.log:\n" + hookLog);
        var lines = hookLog.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var freeze = Array.FindIndex(lines, l => l == "postgresql: freeze: CHECKPOINT done");
        var thaw = Array.FindIndex(lines, l => l == "postgresql: thaw: nothing to do");
        Assert.True(freeze >= 0 && thaw > freeze, "the hook log should show the freeze CHECKPOINT, then the thaw:\n" + hookLog);
        var after = long.Parse(await DebianGuest.ShOkAsync(socket, checkpointsDone, ct));
        Assert.True(after > before, $"PostgreSQL counted no requested checkpoint (checkpoints_req {before} -> {after})");
        Assert.Equal("thawed", (await DebianGuest.ShOkAsync(socket, "echo thawed > /root/after-thaw && cat /root/after-thaw", ct)).Trim());

        // A clean ACPI shutdown through havend.
        var stop = Stopwatch.StartNew();
        await w.OkAsync("vm", "stop", "deb", "--timeout", "120");
        TestContext.Current.TestOutputHelper?.WriteLine($"vm stop (ACPI shutdown): {stop.Elapsed.TotalSeconds:0.0} s");
        Assert.Equal(VmState.Off, (await w.ShowAsync("deb")).State);
        Assert.False(w.IsRunning("deb"));
        var console = File.ReadAllText(w.Paths.SerialLog(vm.Id));
        Assert.True(console.Contains("reboot: Power down", StringComparison.Ordinal), "the guest did not power itself off (ACPI shutdown):\n" + console[^Math.Min(console.Length, 3000)..]);
    }
}
