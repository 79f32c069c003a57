using System.Text;
using Haven.Api;
using Haven.Host.Replication;
using Haven.Qemu.GuestAgent;
using Haven.TestSupport;
using Xunit;

namespace Haven.Host.Tests;

/// <summary>
/// Failover with the booted test guest (Linux + qemu-ga under TCG) between two hosts: the test failover VM boots,
/// the replica boots in an unplanned failover (then cancelled), and a planned failover brings a file the guest
/// wrote just before it to the replica, which boots with it.
/// </summary>
public sealed class GuestReplicationTests
{
    private static async Task<GuestAgentClient> AgentAsync(TestHost t, string vm)
    {
        var socket = t.Host.Paths.GuestAgentSocket(t.Host.Vms.Find(vm).Id);
        var deadline = DateTime.UtcNow.AddSeconds(120);
        while (true)
        {
            try
            {
                var agent = await GuestAgentClient.ConnectAsync(socket, TimeSpan.FromSeconds(3), t.Ct);
                await agent.PingAsync(t.Ct);
                return agent;
            }
            catch (GuestAgentUnavailableException) when (DateTime.UtcNow < deadline) { await Task.Delay(500, t.Ct); }
        }
    }

    private static async Task WriteFileAsync(GuestAgentClient agent, string path, string content, CancellationToken ct)
    {
        var handle = (await agent.ExecuteAsync("guest-file-open", new { path, mode = "w" }, TimeSpan.FromSeconds(10), ct)).GetInt64();
        await agent.ExecuteAsync("guest-file-write", new Dictionary<string, object> { ["handle"] = handle, ["buf-b64"] = Convert.ToBase64String(Encoding.UTF8.GetBytes(content)) }, TimeSpan.FromSeconds(10), ct);
        await agent.ExecuteAsync("guest-file-flush", new { handle }, TimeSpan.FromSeconds(10), ct);
        await agent.ExecuteAsync("guest-file-close", new { handle }, TimeSpan.FromSeconds(10), ct);
    }

    private static async Task<string> ReadFileAsync(GuestAgentClient agent, string path, CancellationToken ct)
    {
        var handle = (await agent.ExecuteAsync("guest-file-open", new { path, mode = "r" }, TimeSpan.FromSeconds(10), ct)).GetInt64();
        var r = await agent.ExecuteAsync("guest-file-read", new { handle, count = 4096 }, TimeSpan.FromSeconds(10), ct);
        await agent.ExecuteAsync("guest-file-close", new { handle }, TimeSpan.FromSeconds(10), ct);
        return Encoding.UTF8.GetString(Convert.FromBase64String(r.GetProperty("buf-b64").GetString()!));
    }

    [Fact]
    public async Task Test_failover_boots_and_planned_failover_brings_the_last_write_to_the_replica()
    {
        await TestGuest.EnsureBuiltAsync();
        await using var a = new TestHost();
        await using var b = new TestHost();
        await a.Host.Vms.CreateAsync(new VmCreateRequest
        {
            Name = "guest", Kernel = TestGuest.Kernel, Initrd = TestGuest.Initrd, Append = TestGuest.Append,
            Disks = [new DiskSpec { ImportPath = TestGuest.DataDisk }], MemoryMiB = 256, Accelerator = "tcg",
        }, a.Ct);
        await a.Host.Vms.StartAsync("guest", a.Ct);
        await using (var agent = await AgentAsync(a, "guest")) await WriteFileAsync(agent, "/mnt/first.txt", "before the first cycle", a.Ct);

        var toB = new LocalReplicaTarget(b.Host, "a.test", "g1");
        await a.Host.Replications.EnableAsync("guest", "b.test", new ReplicationSettings { PrimaryHostName = "a.test", AppConsistentHours = 1 }, toB, a.Ct);
        var first = await a.Host.Replications.RunCycleAsync("guest", toB, a.Ct);
        Assert.Equal(Consistency.ApplicationConsistent, first.Consistency); // the guest was frozen for the point in time
        var second = await a.Host.Replications.RunCycleAsync("guest", toB, a.Ct);
        Assert.Equal(Consistency.CrashConsistent, second.Consistency); // within the hour: not frozen again

        // Test failover: "guest - Test" boots from the point and sees the file; the replica is untouched.
        var test = await b.Host.Replicas.TestFailoverAsync("guest", null, start: true, b.Ct);
        Assert.Equal("none", test.Network);
        await using (var agent = await AgentAsync(b, "guest - Test"))
            Assert.Equal("before the first cycle", await ReadFileAsync(agent, "/mnt/first.txt", b.Ct));
        await b.Host.Replicas.StopTestFailoverAsync("guest", b.Ct);

        // Unplanned failover: the replica itself boots from the latest point; cancelled, it goes back to replicating.
        await b.Host.Replicas.FailoverAsync("guest", null, start: true, b.Ct);
        await using (var agent = await AgentAsync(b, "guest"))
            Assert.Equal("before the first cycle", await ReadFileAsync(agent, "/mnt/first.txt", b.Ct));
        await b.Host.Replicas.CancelFailoverAsync("guest", b.Ct);
        Assert.False(b.IsRunning("guest"));

        // A write the guest makes just before a planned failover reaches the replica.
        await using (var agent = await AgentAsync(a, "guest"))
        {
            await WriteFileAsync(agent, "/mnt/last.txt", "written just before the planned failover", a.Ct);
            await agent.FreezeFileSystemsAsync(TimeSpan.FromSeconds(30), a.Ct); // the guest's sync: on disk before the power goes
            await agent.ThawFileSystemsAsync(TimeSpan.FromSeconds(30), a.Ct);
        }
        await a.Host.Replications.PlannedFailoverAsync("guest", toB, "b.test", reverse: false, a.Ct, shutdownTimeoutSeconds: 5);
        Assert.False(a.IsRunning("guest"));
        Assert.True(b.IsRunning("guest"));
        await using (var agent = await AgentAsync(b, "guest"))
        {
            Assert.Equal("written just before the planned failover", await ReadFileAsync(agent, "/mnt/last.txt", b.Ct));
            Assert.Equal("before the first cycle", await ReadFileAsync(agent, "/mnt/first.txt", b.Ct));
        }
    }
}
