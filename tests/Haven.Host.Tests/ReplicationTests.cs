using Haven.Api;
using Haven.Host.Replication;
using Haven.Host.State;
using Haven.TestSupport;
using Xunit;

namespace Haven.Host.Tests;

/// <summary>
/// Cycles from a primary host to a replica host (two hosts in one process, no network): under continuous
/// guest writes, each committed recovery point equals the primary's disk at that cycle's point in time; a
/// cycle the replica refuses loses nothing for the next one.
/// </summary>
public sealed class ReplicationTests
{
    private const long M = 1 << 20;

    /// <summary>Writes at pseudo-random places until stopped; a point in time is taken only between two writes.</summary>
    private sealed class Writer(TestHost t, DiskModel model) : IAsyncDisposable
    {
        private readonly SemaphoreSlim _gate = new(1, 1);
        private readonly CancellationTokenSource _stop = new();
        private Task? _loop;
        public int Writes;
        /// <summary>Every write (offset, length) in order; <see cref="Points"/> holds how many had run at each point in time.</summary>
        public readonly List<(long Offset, long Length)> Log = [];
        public readonly List<int> Points = [];

        public void Start() => _loop = Task.Run(async () =>
        {
            var random = new Random(7);
            while (!_stop.IsCancellationRequested)
            {
                await _gate.WaitAsync();
                try
                {
                    var offset = random.Next(0, 63 * 16) * (64L << 10);
                    var length = (random.Next(1, 8) * 16) << 10;
                    await t.WriteAsync("web", model, (byte)random.Next(1, 255), offset, length);
                    Log.Add((offset, length));
                    Writes++;
                }
                finally { _gate.Release(); }
                await Task.Delay(20);
            }
        });

        /// <summary>Holds writes from just before the point in time until just after it, and snapshots the model then.</summary>
        public Func<string, Task> Hook(Func<string, Task<DiskModel>> snapshot, List<DiskModel> frozen) => async step =>
        {
            if (step == "replication.before-point-in-time")
            {
                await _gate.WaitAsync();
                Points.Add(Log.Count);
            }
            if (step == "replication.after-point-in-time")
            {
                frozen.Add(await snapshot($"frozen{frozen.Count}.raw"));
                _gate.Release();
            }
        };

        public async ValueTask DisposeAsync()
        {
            _stop.Cancel();
            if (_loop is not null) await _loop;
        }

        /// <summary>Bytes of the distinct 64 KiB blocks (replication's block and bitmap granularity) that writes [from, to) touched, plus <paramref name="also"/>'s.</summary>
        public long BlockBytes(int from, int to, params (long Offset, long Length)[] also)
        {
            const long block = ReplicationService.BlockSize;
            var blocks = new HashSet<long>();
            foreach (var (offset, length) in Log.Take(to).Skip(from).Concat(also))
                for (var b = offset / block; b * block < offset + length; b++) blocks.Add(b);
            return blocks.Count * block;
        }
    }

    [Fact]
    public async Task Under_continuous_writes_each_recovery_point_equals_the_primarys_point_in_time()
    {
        await using var primary = new TestHost();
        await using var replicaHost = new TestHost();
        await using var thirdHost = new TestHost();
        await primary.CreateVmAsync("web", size: 64 * M);
        await primary.Host.Vms.StartAsync("web", primary.Ct);
        var now = new DiskModel(primary.Dir.File("now.raw"), 64 * M);
        await primary.WriteAsync("web", now, 0x11, 0, 8 * M);
        var target = new LocalReplicaTarget(replicaHost.Host, "primary.test", "g1");
        await primary.Host.Replications.EnableAsync("web", "local", new ReplicationSettings { FrequencySeconds = 30, AdditionalPoints = 2 }, target, primary.Ct);
        var third = new LocalReplicaTarget(thirdHost.Host, "replica.test", "g1");

        var frozen = new List<DiskModel>();
        await using var writer = new Writer(primary, now);
        primary.Host.Backups.AtStep = writer.Hook(name => now.SnapshotAsync(primary.Dir.File(name)), frozen);
        writer.Start();
        var results = new List<CycleResult>();
        for (var i = 0; i < 3; i++)
        {
            results.Add(await primary.Host.Replications.RunCycleAsync("web", target, primary.Ct));
            await replicaHost.AssertCheckpointAsync("web", ReplicaService.PointName(i + 1), frozen[i]);
            // The third host (extended replication) gets the replica's latest point: the same frozen point.
            if (i == 0) await replicaHost.Host.Extended.EnableAsync("web", "third.test", new ReplicationSettings { FrequencySeconds = 300, PrimaryHostName = "replica.test" }, third, primary.Ct);
            var extended = await replicaHost.Host.Extended.RunCycleAsync("web", third, primary.Ct);
            await thirdHost.AssertCheckpointAsync("web", ReplicaService.PointName(extended.Cycle), frozen[i]);
            await Task.Delay(300, primary.Ct);
        }
        await writer.DisposeAsync();
        primary.Host.Backups.AtStep = null;

        Assert.True(writer.Writes > 5, $"only {writer.Writes} writes ran during the cycles");
        Assert.True(results[0].Full);
        // The full cycle sends exactly the blocks written before its point in time (8 MiB, then the writer's).
        Assert.Equal(writer.BlockBytes(0, writer.Points[0], (0, 8 * M)), results[0].DataBytes);
        Assert.All(results.Skip(1), r => Assert.False(r.Full));
        // Incrementals send the changed blocks, not the disk.
        Assert.All(results.Skip(1), r => Assert.True(r.DataBytes < 16 * M, $"cycle {r.Cycle} sent {r.DataBytes} bytes"));
        for (var i = 1; i < 3; i++) Assert.Equal(writer.BlockBytes(writer.Points[i - 1], writer.Points[i]), results[i].DataBytes);
        Assert.Equal(3, primary.Host.Replications.StatisticsOf("web").SuccessfulCycles);
        var status = await primary.Host.Replications.StatusAsync("web", primary.Ct);
        Assert.Equal(("primary", "Normal", 3L), (status.Role, status.Health, status.LastCycle));
        // Pending: the blocks written since the last cycle's point in time (the writer has stopped).
        Assert.True(writer.Log.Count > writer.Points[2], "nothing was written after the last point in time");
        Assert.Equal(writer.BlockBytes(writer.Points[2], writer.Log.Count), status.PendingBytes);
        var replicaStatus = await replicaHost.Host.Replications.StatusAsync("web", primary.Ct);
        Assert.Equal(("replica", "Normal", "primary.test"), (replicaStatus.Role, replicaStatus.Health, replicaStatus.Partner));
        Assert.Equal([3L], replicaStatus.RecoveryPoints.Select(p => p.Cycle));
        await primary.AssertNoBackupLeftoversAsync("web");
        await replicaHost.AssertConsistentAsync("web");
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task A_cycle_the_replica_refuses_loses_no_change_for_the_next_one(bool live)
    {
        await using var primary = new TestHost();
        await using var replicaHost = new TestHost();
        await primary.CreateVmAsync("web", size: 64 * M);
        if (live) await primary.Host.Vms.StartAsync("web", primary.Ct);
        var now = new DiskModel(primary.Dir.File("now.raw"), 64 * M);
        await primary.WriteAsync("web", now, 0x21, 0, 4 * M);
        var target = new LocalReplicaTarget(replicaHost.Host, "primary.test", "g1");
        await primary.Host.Replications.EnableAsync("web", "local", new ReplicationSettings(), target, primary.Ct);
        await primary.Host.Replications.RunCycleAsync("web", target, primary.Ct);
        if (!live) await primary.Host.Vms.StartAsync("web", primary.Ct);
        await primary.WriteAsync("web", now, 0x22, 10 * M, M);
        if (!live) await primary.Host.Vms.StopAsync("web", new VmStopRequest { Force = true }, primary.Ct);

        replicaHost.Host.Replicas.AtStep = s => s == "replica.after-data" ? throw new IOException("replica disk failed") : Task.CompletedTask;
        await Assert.ThrowsAsync<IOException>(() => primary.Host.Replications.RunCycleAsync("web", target, primary.Ct));
        replicaHost.Host.Replicas.AtStep = null;
        await primary.AssertNoBackupLeftoversAsync("web");
        Assert.Equal(1, primary.Host.Replications.StatisticsOf("web").FailedCycles);

        if (!live) await primary.Host.Vms.StartAsync("web", primary.Ct);
        await primary.WriteAsync("web", now, 0x23, 20 * M, M);
        if (!live) await primary.Host.Vms.StopAsync("web", new VmStopRequest { Force = true }, primary.Ct);
        var next = await primary.Host.Replications.RunCycleAsync("web", target, primary.Ct);
        Assert.Equal(2, next.Cycle);
        Assert.False(next.Full);
        Assert.Equal(2 * M, next.DataBytes); // the change of the refused cycle and the one after
        await replicaHost.AssertCheckpointAsync("web", ReplicaService.PointName(2), now);
    }
}

/// <summary>Planned failover between two hosts, with reverse replication that sends only what changed after it.</summary>
public sealed class PlannedFailoverTests
{
    private const long M = 1 << 20;

    [Fact]
    public async Task Planned_failover_loses_no_write_and_reverse_replication_moves_only_deltas()
    {
        await using var a = new TestHost();
        await using var b = new TestHost();
        await a.CreateVmAsync("web", size: 64 * M);
        await a.Host.Vms.StartAsync("web", a.Ct);
        var now = new DiskModel(a.Dir.File("now.raw"), 64 * M);
        await a.WriteAsync("web", now, 0x81, 0, 6 * M);
        var toB = new LocalReplicaTarget(b.Host, "a.test", "g1");
        await a.Host.Replications.EnableAsync("web", "b.test", new ReplicationSettings { PrimaryHostName = "a.test" }, toB, a.Ct);
        await a.Host.Replications.RunCycleAsync("web", toB, a.Ct);
        await a.WriteAsync("web", now, 0x82, 20 * M, 2 * M); // written after the last cycle: the planned failover must carry it

        var last = await a.Host.Replications.PlannedFailoverAsync("web", toB, "b.test", reverse: true, a.Ct, shutdownTimeoutSeconds: 2); // no guest OS to answer ACPI
        Assert.False(last.Full);
        Assert.Equal(2 * M, last.DataBytes);
        Assert.False(a.IsRunning("web"));
        Assert.True(b.IsRunning("web"));
        await b.AssertCurrentAsync("web", now); // no write lost
        Assert.Equal(ReplicaState.Replicating, a.Host.Replicas.Find("web").State);

        // Reverse: b is the primary now; only its new writes go back to a.
        await b.WriteAsync("web", now, 0x83, 40 * M, M);
        var toA = new LocalReplicaTarget(a.Host, "b.test", "g1");
        var back = await b.Host.Replications.RunCycleAsync("web", toA, b.Ct);
        Assert.False(back.Full);
        Assert.Equal(M, back.DataBytes);
        await a.AssertCheckpointAsync("web", ReplicaService.PointName(back.Cycle), now);
    }
}

public sealed class ReplicationHealthTests
{
    private static readonly DateTimeOffset Now = new(2026, 11, 24, 12, 0, 0, TimeSpan.Zero);

    [Fact]
    public void Health_follows_the_age_of_the_last_success_and_the_last_outcome()
    {
        var ok = new ReplicationStatistics { SuccessfulCycles = 10, LastSuccess = Now.AddSeconds(-40) };
        Assert.Equal("Normal", ReplicationHealth.OfPrimary(ok, 30, 10, Now).Health);
        Assert.Equal("Warning", ReplicationHealth.OfPrimary(ok with { LastSuccess = Now.AddMinutes(-2) }, 30, 10, Now).Health);
        Assert.Equal("Critical", ReplicationHealth.OfPrimary(ok with { LastSuccess = Now.AddHours(-2) }, 30, 10, Now).Health);
        var failed = ok.Failed("connection refused", Now.AddSeconds(-5));
        var (health, why) = ReplicationHealth.OfPrimary(failed, 30, 10, Now);
        Assert.Equal("Warning", health);
        Assert.Contains("connection refused", why);
        Assert.Equal("Warning", ReplicationHealth.OfPrimary(ok with { MissedCycles = 4 }, 30, 10, Now).Health);
        Assert.Equal("Warning", ReplicationHealth.OfPrimary(new ReplicationStatistics(), 300, 0, Now).Health);
        Assert.Equal("Critical", ReplicationHealth.OfPrimary(new ReplicationStatistics().Failed("x", Now), 300, 0, Now).Health);
    }
}

/// <summary>Extended replication: primary → replica → third host, the third's points equal the replica's.</summary>
public sealed class ExtendedReplicationTests
{
    private const long M = 1 << 20;

    [Fact]
    public async Task The_third_host_receives_the_replicas_latest_point_including_every_cycle_since_the_last_extended_one()
    {
        await using var a = new TestHost();
        await using var b = new TestHost();
        await using var c = new TestHost();
        await a.CreateVmAsync("web", size: 64 * M);
        await a.Host.Vms.StartAsync("web", a.Ct);
        var now = new DiskModel(a.Dir.File("now.raw"), 64 * M);
        await a.WriteAsync("web", now, 0x91, 0, 4 * M);
        var toB = new LocalReplicaTarget(b.Host, "a.test", "g1");
        var toC = new LocalReplicaTarget(c.Host, "b.test", "g1");
        await a.Host.Replications.EnableAsync("web", "b.test", new ReplicationSettings(), toB, a.Ct);
        await a.Host.Replications.RunCycleAsync("web", toB, a.Ct);

        var refused = await Assert.ThrowsAsync<HavenException>(() => b.Host.Extended.EnableAsync("web", "c.test", new ReplicationSettings { FrequencySeconds = 30 }, toC, b.Ct));
        Assert.Contains("5 or 15 minutes", refused.Message);
        await b.Host.Extended.EnableAsync("web", "c.test", new ReplicationSettings { FrequencySeconds = 300, PrimaryHostName = "b.test" }, toC, b.Ct);
        var first = await b.Host.Extended.RunCycleAsync("web", toC, b.Ct);
        Assert.True(first.Full);
        await c.AssertCheckpointAsync("web", ReplicaService.PointName(first.Cycle), now);

        // Two primary cycles (the replica merges the older point away) before the next extended cycle.
        await a.WriteAsync("web", now, 0x92, 10 * M, M);
        await a.Host.Replications.RunCycleAsync("web", toB, a.Ct);
        await a.WriteAsync("web", now, 0x93, 30 * M, 2 * M);
        await a.WriteAsync("web", now, 0, 1 * M, M); // zero bytes over data (written, so sent as data)
        await a.Host.Replications.RunCycleAsync("web", toB, a.Ct);
        var second = await b.Host.Extended.RunCycleAsync("web", toC, b.Ct);
        Assert.False(second.Full);
        Assert.Equal(4 * M, second.DataBytes); // the blocks of both cycles, and nothing else
        await c.AssertCheckpointAsync("web", ReplicaService.PointName(second.Cycle), now);
        await b.AssertCheckpointAsync("web", ReplicaService.PointName(3), now);

        // Nothing new: an extended cycle with nothing to send still commits an (identical) point.
        var third = await b.Host.Extended.RunCycleAsync("web", toC, b.Ct);
        Assert.Equal(0, third.DataBytes + third.ZeroBytes);
        var status = await b.Host.Replications.StatusAsync("web", b.Ct);
        Assert.Equal(("replica", "c.test", third.Cycle), (status.Role, status.ExtendedTo, status.ExtendedLastCycle));
    }
}

/// <summary>The replica host's disk fills up mid-cycle: the cycle is discarded, the last point stays valid, and replication resumes once there is room.</summary>
public sealed class ReplicaDiskFullTests
{
    private const long M = 1 << 20;

    [Fact]
    public async Task A_full_replica_disk_discards_the_cycle_and_replication_resumes_with_every_change()
    {
        using var fs = SmallTmpfs.TryMount("24m", out var reason);
        if (fs is null) { Assert.Skip(reason); return; }
        await using var a = new TestHost();
        await using var b = new TestHost(Path.Combine(fs.Path, "data"));
        await a.CreateVmAsync("web", size: 128 * M);
        await a.Host.Vms.StartAsync("web", a.Ct);
        var now = new DiskModel(a.Dir.File("now.raw"), 128 * M);
        await a.WriteAsync("web", now, 0xA1, 0, 4 * M);
        var toB = new LocalReplicaTarget(b.Host, "a.test", "g1");
        await a.Host.Replications.EnableAsync("web", "b.test", new ReplicationSettings(), toB, a.Ct);
        await a.Host.Replications.RunCycleAsync("web", toB, a.Ct);
        var atFirst = await now.SnapshotAsync(a.Dir.File("first.raw"));

        for (var i = 0; i < 8; i++) await a.WriteAsync("web", now, (byte)(0xB0 + i), 8 * M + i * 4 * M, 4 * M); // 32 MiB: more than the replica has room for
        var e = await Assert.ThrowsAnyAsync<Exception>(() => a.Host.Replications.RunCycleAsync("web", toB, a.Ct));
        Assert.DoesNotContain('\n', e.Message.Trim());
        Assert.Equal(1, b.Host.Replicas.Find("web").LastCycle);
        await b.AssertCheckpointAsync("web", ReplicaService.PointName(1), atFirst); // the committed point is intact
        await b.AssertConsistentAsync("web"); // no partial files, a valid chain
        await a.AssertNoBackupLeftoversAsync("web");

        fs.Resize("256m");
        var next = await a.Host.Replications.RunCycleAsync("web", toB, a.Ct);
        Assert.Equal(2, next.Cycle);
        Assert.Equal(32 * M, next.DataBytes); // everything the failed cycle carried
        await b.AssertCheckpointAsync("web", ReplicaService.PointName(2), now);
    }
}

/// <summary>Resynchronization: tracking lost (here a checkpoint on the primary), both sides hash blocks, only differing ones move.</summary>
public sealed class ResyncTests
{
    private const long M = 1 << 20;

    [Fact]
    public async Task After_tracking_is_lost_only_the_blocks_that_differ_are_sent()
    {
        await using var a = new TestHost();
        await using var b = new TestHost();
        await a.CreateVmAsync("web", size: 64 * M);
        await a.Host.Vms.StartAsync("web", a.Ct);
        var now = new DiskModel(a.Dir.File("now.raw"), 64 * M);
        await a.WriteAsync("web", now, 0xC1, 0, 16 * M);
        var toB = new LocalReplicaTarget(b.Host, "a.test", "g1");
        await a.Host.Replications.EnableAsync("web", "b.test", new ReplicationSettings(), toB, a.Ct);
        await a.Host.Replications.RunCycleAsync("web", toB, a.Ct);

        await a.Host.Checkpoints.CreateAsync("web", "cp", a.Ct); // a new active layer: the cycle's bitmap is gone with the old one
        await a.WriteAsync("web", now, 0xC2, 4 * M, M);
        await a.WriteAsync("web", now, 0xC3, 40 * M, 64 << 10);
        var resync = await a.Host.Replications.RunCycleAsync("web", toB, a.Ct);
        Assert.True(resync.Resync);
        Assert.Equal(M + (64 << 10), resync.DataBytes); // 16 MiB were read and hashed; 1 MiB + 64 KiB differed
        await b.AssertCheckpointAsync("web", ReplicaService.PointName(2), now);

        // Tracking is back: the next cycle is incremental again.
        await a.WriteAsync("web", now, 0xC4, 8 * M, M);
        var next = await a.Host.Replications.RunCycleAsync("web", toB, a.Ct);
        Assert.Equal((false, false, M), (next.Full, next.Resync, next.DataBytes));
        await b.AssertCheckpointAsync("web", ReplicaService.PointName(3), now);
    }

    [Fact]
    public async Task Outside_the_resync_window_a_needed_resync_waits_unless_asked_for()
    {
        await using var a = new TestHost();
        await using var b = new TestHost();
        await a.CreateVmAsync("web", size: 64 * M);
        var now = new DiskModel(a.Dir.File("now.raw"), 64 * M);
        await a.WriteAsync("web", now, 0xD1, 0, 2 * M);
        var toB = new LocalReplicaTarget(b.Host, "a.test", "g1");
        var hour = DateTimeOffset.UtcNow.Hour;
        var window = new ReplicationSettings { ResyncWindowStartHour = (hour + 2) % 24, ResyncWindowEndHour = (hour + 3) % 24 };
        await a.Host.Replications.EnableAsync("web", "b.test", window, toB, a.Ct);
        await a.Host.Replications.RunCycleAsync("web", toB, a.Ct);
        await a.Host.Checkpoints.CreateAsync("web", "cp", a.Ct);
        await a.WriteAsync("web", now, 0xD2, 8 * M, M);
        var waiting = await Assert.ThrowsAsync<HavenException>(() => a.Host.Replications.RunCycleAsync("web", toB, a.Ct));
        Assert.Equal(ErrorCode.Conflict, waiting.Code);
        Assert.Contains("needs resynchronization", waiting.Message);
        Assert.Equal(1, b.Host.Replicas.Find("web").LastCycle);
        var forced = await a.Host.Replications.RunCycleAsync("web", toB, a.Ct, forceResync: true);
        Assert.Equal((true, M), (forced.Resync, forced.DataBytes));
        await b.AssertCheckpointAsync("web", ReplicaService.PointName(2), now);
    }
}

/// <summary>Initial replication by external media (export folder + import) and from an existing copy on the replica.</summary>
public sealed class InitialReplicationTests
{
    private const long M = 1 << 20;

    [Fact]
    public async Task An_exported_initial_copy_is_imported_on_the_replica_and_network_cycles_continue_from_it()
    {
        await using var a = new TestHost();
        await using var b = new TestHost();
        await a.CreateVmAsync("web", size: 64 * M);
        await a.Host.Vms.StartAsync("web", a.Ct);
        var now = new DiskModel(a.Dir.File("now.raw"), 64 * M);
        await a.WriteAsync("web", now, 0xE1, 0, 6 * M);
        var folder = a.Dir.File("media");
        Directory.CreateDirectory(folder);
        var media = new FolderReplicaTarget(folder, "a.test");
        await a.Host.Replications.EnableAsync("web", "b.test", new ReplicationSettings { PrimaryHostName = "a.test" }, media, a.Ct);
        var exported = await a.Host.Replications.RunCycleAsync("web", media, a.Ct);
        Assert.Equal((1L, 6 * M), (exported.Cycle, exported.DataBytes));

        // An unauthorized primary's folder is refused, and nothing is created.
        var refused = await Assert.ThrowsAsync<HavenException>(() => b.Host.Replicas.ImportAsync(folder, name => (false, null, null, $"primary server '{name}' is not authorized"), b.Ct));
        Assert.Contains("a.test", refused.Message);
        Assert.Empty(await b.Host.Vms.ListAsync(b.Ct));

        var storage = b.Dir.File("storage");
        Directory.CreateDirectory(storage);
        var imported = await b.Host.Replicas.ImportAsync(folder, name => (name == "a.test", "g1", storage, "no"), b.Ct);
        // The replica's files live in the authorization entry's storage location; its folder links there.
        Assert.True(File.Exists(Path.Combine(storage, imported.VmId, "disks", b.Host.Store.ListDisks(imported.VmId)[0].ActiveLayerId + ".qcow2")));
        Assert.Equal((1L, "g1"), (imported.LastCycle, imported.TrustGroup));
        await b.AssertCheckpointAsync("web", ReplicaService.PointName(1), now);

        await a.WriteAsync("web", now, 0xE2, 20 * M, M);
        var toB = new LocalReplicaTarget(b.Host, "a.test", "g1");
        var next = await a.Host.Replications.RunCycleAsync("web", toB, a.Ct);
        Assert.Equal((2L, false, M), (next.Cycle, next.Full, next.DataBytes));
        await b.AssertCheckpointAsync("web", ReplicaService.PointName(2), now);
    }

    [Fact]
    public async Task An_existing_copy_on_the_replica_means_only_differing_blocks_are_sent_initially()
    {
        await using var a = new TestHost();
        await using var b = new TestHost();
        await a.CreateVmAsync("web", size: 64 * M);
        var now = new DiskModel(a.Dir.File("now.raw"), 64 * M);
        await a.WriteAsync("web", now, 0xF1, 0, 12 * M);
        var copy = b.Dir.File("copy.qcow2");
        await Haven.Qemu.Images.QemuImg.ConvertAsync(a.TopLayer("web"), Haven.Qemu.Images.DiskFormat.Qcow2, copy, Haven.Qemu.Images.DiskFormat.Qcow2, b.Ct);
        await b.Host.Vms.CreateAsync(new VmCreateRequest { Name = "web", Disks = [new DiskSpec { ImportPath = copy }], MemoryMiB = 64, Accelerator = "tcg" }, b.Ct);
        await a.WriteAsync("web", now, 0xF2, 4 * M, M); // the copy is a little behind

        var toB = new LocalReplicaTarget(b.Host, "a.test", "g1");
        await a.Host.Replications.EnableAsync("web", "b.test", new ReplicationSettings { InitialFromExisting = true }, toB, a.Ct);
        var first = await a.Host.Replications.RunCycleAsync("web", toB, a.Ct);
        Assert.True(first.Resync);
        Assert.Equal(M, first.DataBytes); // 12 MiB compared, 1 MiB sent
        await b.AssertCheckpointAsync("web", ReplicaService.PointName(1), now);
    }
}
