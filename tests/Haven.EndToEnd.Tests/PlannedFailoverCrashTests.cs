using Haven.Api;

namespace Haven.EndToEnd.Tests;

/// <summary>
/// kill -9 of the primary's havend at every step of a planned failover with reverse replication, with the replica down
/// when the primary comes back: while the failover is unfinished the old primary refuses to start the VM, run a cycle
/// or apply a checkpoint (two running copies would be split brain; the disks must stay as the last cycle sent them); once the replica answers, havend finishes the failover by itself,
/// and both hosts agree on the swapped roles: the reverse cycle moves nothing and the old primary's point equals the
/// disk it had when it stopped.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class PlannedFailoverCrashTests
{
    private const long M = 1 << 20;

    [Theory]
    [InlineData("planned-failover.after-journal")]
    [InlineData("planned-failover.after-replica-failover")]
    [InlineData("planned-failover.after-reverse")]
    public async Task Primary_killed_mid_planned_failover_refuses_to_start_the_vm_and_finishes_once_the_replica_answers(string point)
    {
        var ct = TestContext.Current.CancellationToken;
        await using var primary = new HavenWorld(ct);
        await using var replica = new HavenWorld(ct);
        var url = await ReplicationSetup.PairAsync(primary, replica);
        // Reverse replication needs the old primary to be a replica server the new primary may use.
        var primaryUrl = await ReplicationSetup.ServeAsync(primary, "replica.test");
        await primary.CreateVmAsync("web", start: true);
        var now = primary.NewModel("now");
        await primary.WriteAsync("web", now, new W(0x71, 0, 2 * M));
        await primary.OkAsync("replication", "enable", "web", "--replica", url, "--replica-name", "replica.test", "--frequency", "15m",
            "--start-at", DateTimeOffset.UtcNow.AddDays(1).ToString("O"));
        await primary.OkAsync("replication", "run", "web");
        await primary.WriteAsync("web", now, new W(0x72, 6 * M, M)); // only the last cycle carries this

        await primary.CrashDuringAsync(point, async () =>
        {
            var r = await primary.Cli("replication", "planned-failover", "web", "--reverse", "--shutdown-timeout", "2");
            Assert.True(r.ExitCode != 0 && r.Stdout == "", r.ToString());
        }, whileDown: () => replica.StopDaemonAsync().GetAwaiter().GetResult());

        // The replica is unreachable: the failover cannot finish, and nothing may run the VM here meanwhile.
        var start = await primary.Cli("vm", "start", "web");
        Assert.True(start.ExitCode != 0 && start.StderrLines.Length == 1 && start.Stderr.Contains("planned failover was interrupted"), start.ToString());
        var cycle = await primary.Cli("replication", "run", "web");
        Assert.True(cycle.ExitCode != 0 && cycle.Stderr.Contains("planned failover was interrupted"), cycle.ToString());
        // Nor may a checkpoint apply change the disks the last cycle sent (refused before the name is even looked up).
        var apply = await primary.Cli("checkpoint", "apply", "web", "any");
        Assert.True(apply.ExitCode != 0 && apply.StderrLines.Length == 1 && apply.Stderr.Contains("planned failover was interrupted"), apply.ToString());
        Assert.Equal(VmState.Off, (await primary.ShowAsync("web")).State);

        // The replica comes back: havend retries every 30 s and finishes.
        await replica.StartDaemonAsync();
        var deadline = DateTime.UtcNow.AddSeconds(90);
        ReplicationStatusInfo mine;
        while ((mine = await primary.JsonAsync<ReplicationStatusInfo>("replication", "status", "web")).Role != "replica")
        {
            Assert.True(DateTime.UtcNow < deadline, $"the planned failover was not finished 90 s after the replica came back (role: {mine.Role})");
            await Task.Delay(1000, ct);
        }
        Assert.Equal("replica.test", mine.Partner);
        var theirs = await replica.JsonAsync<ReplicationStatusInfo>("replication", "status", "web");
        Assert.Equal(("primary", primaryUrl), (theirs.Role, theirs.Partner));
        Assert.Equal(VmState.Running, (await replica.ShowAsync("web")).State);

        // The roles agree: the reverse cycle is accepted, moves nothing, and the old primary's point is its disk.
        var back = await replica.JsonAsync<ReplicationCycleResult>("replication", "run", "web");
        Assert.Equal((false, 0L), (back.Full, back.DataBytes));
        await primary.AssertCheckpointDataAsync("web", $"rp-{back.Cycle:D8}", now);
        Assert.Equal(VmState.Off, (await primary.ShowAsync("web")).State);
        // Nothing journaled is left on the old primary (AssertCleanAsync checks the journal, layers and files).
        await primary.AssertCleanAsync("web", now);
    }
}
