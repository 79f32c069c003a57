using Haven.Api;
using Haven.TestSupport;

namespace Haven.EndToEnd.Tests;

/// <summary>
/// Two paired hosts and a replicated VM (running on the primary: cycles read a fleecing view; the replica writes through qemu-nbd), shared by the
/// replication crash tests, which run one after another; each leaves both hosts clean and a cycle committed.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class ReplicationPair : IAsyncLifetime
{
    public HavenWorld Primary { get; } = new();
    public HavenWorld Replica { get; } = new();
    /// <summary>The primary's disk now.</summary>
    public DiskModel Now { get; private set; } = null!;
    /// <summary>The primary's disk at the replica's last committed cycle.</summary>
    public DiskModel Committed { get; set; } = null!;
    public long LastCycle { get; set; }
    private byte _pattern = 0x40;

    public async ValueTask InitializeAsync()
    {
        var url = await ReplicationSetup.PairAsync(Primary, Replica);
        await Primary.CreateVmAsync("web", start: true);
        Now = Primary.NewModel("now");
        await Primary.WriteAsync("web", Now, new W(0x11, 0, 2 * HavenWorld.M), new W(0x12, 20 * HavenWorld.M, HavenWorld.M / 2));
        // Scheduled a day ahead, so only the tests start cycles.
        await Primary.OkAsync("replication", "enable", "web", "--replica", url, "--replica-name", "replica.test", "--frequency", "15m",
            "--start-at", DateTimeOffset.UtcNow.AddDays(1).ToString("O"));
        await CycleAsync();
        await Replica.LearnVmAsync("web");
    }

    /// <summary>A guest write on the primary (not yet replicated).</summary>
    public Task WriteAsync()
    {
        _pattern++;
        return Primary.WriteAsync("web", Now, new W(_pattern, (_pattern % 24) * HavenWorld.M, 256 << 10));
    }

    /// <summary>Runs a cycle (or a resync) that must commit; the replica's new point must equal the primary's disk.</summary>
    public async Task<ReplicationCycleResult> CycleAsync(bool resync = false)
    {
        var r = await Primary.JsonAsync<ReplicationCycleResult>("replication", resync ? "resync" : "run", "web");
        Assert.True(r.Cycle > LastCycle, $"cycle {r.Cycle} after {LastCycle}");
        LastCycle = r.Cycle;
        Committed = await Primary.Remember(Now, $"at{r.Cycle}");
        await Replica.AssertCheckpointDataAsync("web", ReplicaPoint(r.Cycle), Committed);
        return r;
    }

    public static string ReplicaPoint(long cycle) => $"rp-{cycle:D8}";

    public async ValueTask DisposeAsync()
    {
        await Primary.DisposeAsync();
        await Replica.DisposeAsync();
    }
}

/// <summary>
/// kill -9 of havend at every named step of a replication cycle (primary and replica side), of resync, of
/// failover and of test failover. After the restart (the Reconciler runs): nothing lost (the primary's disk, the
/// replica's last recovery point), nothing orphaned on either host (journal rows, layer files, images and NBD
/// sockets in run/, qemu-nbd processes, change-tracking bitmaps), and the next cycle commits and equals the
/// primary's disk.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class ReplicationCrashTests(ReplicationPair p) : IClassFixture<ReplicationPair>
{
    [Theory]
    [InlineData("replication.before-point-in-time")]
    [InlineData("replication.after-point-in-time")]
    [InlineData("replication.after-ack")]
    [InlineData("resync.after-hashes")]
    public async Task Primary_killed_at_a_cycle_step_hands_tracking_back_and_the_next_cycle_misses_nothing(string point)
    {
        var resync = point.StartsWith("resync.", StringComparison.Ordinal);
        await p.WriteAsync();
        var report = await p.Primary.CrashDuringAsync(point, async () =>
        {
            var r = await p.Primary.Cli("replication", resync ? "resync" : "run", "web");
            Assert.True(r.ExitCode != 0 && r.Stdout == "", r.ToString());
        });
        // Only the steps inside the point in time have a journal row to repair.
        if (point != "resync.after-hashes") Assert.Contains("repaired 1 operation(s)", report);
        if (point == "replication.after-ack")
        {
            // The replica committed the cycle; this side had not recorded it.
            p.LastCycle++;
            p.Committed = await p.Primary.Remember(p.Now, $"at{p.LastCycle}");
        }
        await p.Replica.AssertCheckpointDataAsync("web", ReplicationPair.ReplicaPoint(p.LastCycle), p.Committed);
        await AssertHostsCleanAsync();

        await p.WriteAsync();
        var next = await p.CycleAsync();
        Assert.False(next.Full, "tracking was handed back: the next cycle needs no full copy");
        await AssertHostsCleanAsync();
    }

    [Theory]
    [InlineData("replica.after-data")]
    [InlineData("replica.after-checkpoint")]
    [InlineData("replica.after-commit")]
    [InlineData("replica.while-hashing")]
    public async Task Replica_killed_at_a_cycle_step_keeps_its_last_point_and_the_next_cycle_commits(string point)
    {
        var resync = point == "replica.while-hashing";
        await p.WriteAsync();
        var report = await p.Replica.CrashDuringAsync(point, async () =>
        {
            var r = await p.Primary.Cli("replication", resync ? "resync" : "run", "web");
            Assert.NotEqual(0, r.ExitCode);
        });
        TestContext.Current.TestOutputHelper?.WriteLine(report);
        if (point == "replica.after-commit")
        {
            // Committed before the kill: the point stands (the primary learns it on the next cycle).
            p.LastCycle++;
            p.Committed = await p.Primary.Remember(p.Now, $"at{p.LastCycle}");
        }
        await p.Replica.AssertCheckpointDataAsync("web", ReplicationPair.ReplicaPoint(p.LastCycle), p.Committed);
        await AssertHostsCleanAsync();

        await p.WriteAsync();
        await p.CycleAsync();
        await AssertHostsCleanAsync();
    }

    [Theory]
    [InlineData("failover.after-apply")]
    [InlineData("failover.after-tracking")]
    [InlineData("failover.after-state")]
    [InlineData("test-failover.after-export")]
    [InlineData("test-failover.after-create")]
    public async Task Failover_killed_at_a_step_leaves_the_replica_whole_and_replication_goes_on(string point)
    {
        var test = point.StartsWith("test-", StringComparison.Ordinal);
        await p.WriteAsync();
        await p.CycleAsync();
        await p.Replica.CrashDuringAsync(point, async () =>
        {
            var r = await p.Replica.Cli("replication", test ? "test-failover" : "failover", "web", "--no-start");
            Assert.True(r.ExitCode != 0 && r.Stdout == "", r.ToString());
        });

        var status = await p.Replica.JsonAsync<ReplicationStatusInfo>("replication", "status", "web");
        Assert.Equal(point == "failover.after-state" ? "FailedOver" : "Replicating", status.State);
        if (point == "failover.after-state")
        {
            // The failover was complete but for the start: cancelling it returns to replicating.
            await p.Replica.OkAsync("replication", "cancel-failover", "web");
        }
        var vms = await p.Replica.JsonAsync<List<VmInfo>>("vm", "list");
        if (point == "test-failover.after-create")
        {
            // The test VM was made from the point (its images were copied in) and can be stopped as usual.
            var testVm = Assert.Single(vms, v => v.Name == "web - Test");
            Assert.True(await p.Committed.EqualsImageAsync(testVm.Disks[0].Chain[0].Path));
            await p.Replica.OkAsync("replication", "stop-test-failover", "web");
        }
        else Assert.DoesNotContain(vms, v => v.Name == "web - Test");
        await p.Replica.AssertCheckpointDataAsync("web", ReplicationPair.ReplicaPoint(p.LastCycle), p.Committed);
        await AssertHostsCleanAsync();

        await p.WriteAsync();
        await p.CycleAsync();
        await AssertHostsCleanAsync();
    }

    /// <summary>
    /// Both hosts: no journal row, exactly the files the rows name and sound chains (AssertCleanAsync), no image or
    /// NBD socket in run/, no qemu-nbd; on the replica the active layer is empty over the last point (its data is
    /// that point's) and carries no change-tracking bitmap.
    /// </summary>
    private async Task AssertHostsCleanAsync()
    {
        await p.Primary.AssertCleanAsync("web", p.Now);
        await p.Replica.AssertCleanAsync("web", p.Committed);
        foreach (var w in new[] { p.Primary, p.Replica })
        {
            Assert.DoesNotContain(Directory.GetFiles(w.Paths.RunDir), f => f.EndsWith(".qcow2", StringComparison.Ordinal) || f.EndsWith(".nbd", StringComparison.Ordinal));
            Assert.Empty(HavenWorld.QemuNbdProcesses(w.Data));
        }
        var top = (await p.Replica.ShowAsync("web")).Disks[0].Chain[0].Path;
        Assert.Empty(await Haven.Qemu.Runtime.DirtyBitmaps.ListOfflineAsync(top, TestContext.Current.CancellationToken));
    }
}
