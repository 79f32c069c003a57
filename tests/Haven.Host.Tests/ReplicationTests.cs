using System.Security.Cryptography.X509Certificates;
using Haven.Api;
using Haven.Host.Replication;
using Haven.Host.State;
using Haven.Host.Tracking;
using Haven.Qemu.Runtime;
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
        // Additional recovery points are one per hour: the three cycles must fall in one hour for only the
        // latest point to stay, so the hosts' clocks start just after an hour begins.
        var clock = new HavenHostOptions { Time = new ShiftedClock(new DateTimeOffset(2026, 6, 1, 10, 0, 5, TimeSpan.Zero)) };
        await using var primary = new TestHost(options: clock);
        await using var replicaHost = new TestHost(options: clock);
        await using var thirdHost = new TestHost(options: clock);
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
        var aId = a.Host.Vms.Find("web").Id;
        Assert.Single(a.Host.Tracking.PointsOf(aId, TrackingConsumer.ForReplication(aId)));
        await a.WriteAsync("web", now, 0x82, 20 * M, 2 * M); // written after the last cycle: the planned failover must carry it

        var last = await a.Host.Replications.PlannedFailoverAsync("web", toB, "b.test", reverse: true, a.Ct, shutdownTimeoutSeconds: 2); // no guest OS to answer ACPI
        Assert.False(last.Full);
        Assert.Equal(2 * M, last.DataBytes);
        Assert.False(a.IsRunning("web"));
        Assert.True(b.IsRunning("web"));
        await b.AssertCurrentAsync("web", now); // no write lost
        Assert.Equal(ReplicaState.Replicating, a.Host.Replicas.Find("web").State);
        // a no longer replicates: no tracking point of its replication is left, nor a bitmap in any of its layer files
        // (one would be frozen into the next recovery point and cost write overhead for nothing).
        Assert.Empty(a.Host.Tracking.PointsOf(aId));
        foreach (var layer in a.Host.Store.ListLayers(aId))
            Assert.Empty(await DirtyBitmaps.ListOfflineAsync(a.Host.Paths.LayerFile(aId, layer.Id), a.Ct));

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
        var ok = new ReplicationStatistics { SuccessfulCycles = 10, LastSuccess = Now.AddSeconds(-40), LastOutcome = CycleOutcome.Succeeded };
        Assert.Equal(HealthState.Normal, ReplicationHealth.OfPrimary(ok, 30, 10, Now).Health);
        Assert.Equal(HealthState.Warning, ReplicationHealth.OfPrimary(ok with { LastSuccess = Now.AddMinutes(-2) }, 30, 10, Now).Health);
        Assert.Equal(HealthState.Critical, ReplicationHealth.OfPrimary(ok with { LastSuccess = Now.AddHours(-2) }, 30, 10, Now).Health);
        var failed = ok with { FailedCycles = 1, LastFailure = Now.AddSeconds(-5), LastError = "connection refused", LastOutcome = CycleOutcome.Failed };
        var (health, why) = ReplicationHealth.OfPrimary(failed, 30, 10, Now);
        Assert.Equal(HealthState.Warning, health);
        Assert.Contains("connection refused", why);
        // More than a fifth missed: 2 of 12 is not (2 × 5 = 10 ≤ 12), 4 of 14 is (20 > 14).
        Assert.Equal(HealthState.Normal, ReplicationHealth.OfPrimary(ok with { MissedCycles = 2 }, 30, 10, Now).Health);
        Assert.Equal((HealthState.Warning, "4 of 14 cycles were missed"), ReplicationHealth.OfPrimary(ok with { MissedCycles = 4 }, 30, 10, Now));
        Assert.Equal(HealthState.Warning, ReplicationHealth.OfPrimary(new ReplicationStatistics(), 300, 0, Now).Health);
        Assert.Equal(HealthState.Critical, ReplicationHealth.OfPrimary(new ReplicationStatistics { FailedCycles = 1, LastOutcome = CycleOutcome.Failed }, 300, 0, Now).Health);
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
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class InitialReplicationTests
{
    private const long M = 1 << 20;

    [Fact]
    public async Task An_exported_initial_copy_is_imported_on_the_replica_and_network_cycles_continue_from_it()
    {
        await using var a = new TestHost();
        await using var b = new TestHost();
        var (folder, signer, now, exported) = await ExportAsync(a, 64 * M, 0xE1, 6 * M);
        using var _ = signer;
        Assert.Equal((1L, 6 * M), (exported.Cycle, exported.DataBytes));
        // Owner-only media: the folder 0700, every file 0600.
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(folder));
        Assert.All(Directory.GetFiles(folder), f => Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(f)));
        Assert.Equal(["cycle.bin", "replica.json", "replica.sig"], Directory.GetFiles(folder).Select(Path.GetFileName).Order());

        // An unauthorized primary's folder is refused, and nothing is created.
        var refused = await Assert.ThrowsAsync<HavenException>(() => b.Host.Replicas.ImportAsync(folder,
            cert => new ImportDecision(false, $"primary server '{cert.GetNameInfo(X509NameType.SimpleName, false)}' is not authorized"), b.Ct));
        Assert.Contains("a.test", refused.Message);
        Assert.Empty(await b.Host.Vms.ListAsync(b.Ct));

        var storage = b.Dir.File("storage");
        Directory.CreateDirectory(storage);
        var imported = await b.Host.Replicas.ImportAsync(folder, cert => cert.Thumbprint == signer.Thumbprint
            ? new ImportDecision(true, "", "a.test", "cert:x", "g1", storage) : new ImportDecision(false, "another signer"), b.Ct);
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

    /// <summary>Writes <paramref name="written"/> bytes into a new running VM "web" on <paramref name="a"/>, exports its initial copy to a folder signed as a.test.</summary>
    private static async Task<(string Folder, X509Certificate2 Signer, DiskModel Model, CycleResult Result)> ExportAsync(TestHost a, long size, byte fill, long written)
    {
        await a.CreateVmAsync("web", size: size);
        await a.Host.Vms.StartAsync("web", a.Ct);
        var now = new DiskModel(a.Dir.File("now.raw"), size);
        await a.WriteAsync("web", now, fill, 0, written);
        var folder = a.Dir.File("media");
        Directory.CreateDirectory(folder);
        var signer = ExportSigner("a.test");
        var media = new FolderReplicaTarget(folder, signer);
        await a.Host.Replications.EnableAsync("web", "b.test", new ReplicationSettings { PrimaryHostName = "a.test" }, media, a.Ct);
        return (folder, signer, now, await a.Host.Replications.RunCycleAsync("web", media, a.Ct));
    }

    /// <summary>A primary's host certificate with its key, as havend's identity is (self-signed ECDSA P-256).</summary>
    internal static X509Certificate2 ExportSigner(string name)
    {
        using var key = System.Security.Cryptography.ECDsa.Create(System.Security.Cryptography.ECCurve.NamedCurves.nistP256);
        var request = new System.Security.Cryptography.X509Certificates.CertificateRequest("CN=" + name, key, System.Security.Cryptography.HashAlgorithmName.SHA256);
        return request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddYears(1));
    }

    [Theory]
    [InlineData("cycle.bin")]
    [InlineData("replica.json")]
    [InlineData("re-signed")]
    public async Task A_tampered_export_folder_is_refused_on_import_with_nothing_created(string tamper)
    {
        await using var a = new TestHost();
        await using var b = new TestHost();
        var (folder, signer, _, _) = await ExportAsync(a, 16 * M, 0xE5, 2 * M);
        using var __ = signer;

        switch (tamper)
        {
            case "re-signed":
            {
                // Someone else's key signs a definition naming a.test: the signature checks out, but the signer is not
                // the trusted primary, which the authorization (here: by thumbprint) refuses.
                using var mallory = ExportSigner("a.test");
                var json = System.Text.Json.Nodes.JsonNode.Parse(await File.ReadAllTextAsync(Path.Combine(folder, "replica.json"), a.Ct))!;
                json["certificate"] = mallory.ExportCertificatePem();
                var bytes = System.Text.Encoding.UTF8.GetBytes(json.ToJsonString());
                await File.WriteAllBytesAsync(Path.Combine(folder, "replica.json"), bytes, a.Ct);
                await File.WriteAllBytesAsync(Path.Combine(folder, "replica.sig"), mallory.GetECDsaPrivateKey()!.SignData(bytes, System.Security.Cryptography.HashAlgorithmName.SHA256), a.Ct);
                break;
            }
            default:
            {
                var path = Path.Combine(folder, tamper);
                var bytes = await File.ReadAllBytesAsync(path, a.Ct);
                bytes[tamper == "replica.json" ? bytes.Length / 2 : 100] ^= 0x01;
                await File.WriteAllBytesAsync(path, bytes, a.Ct);
                break;
            }
        }
        var storage = b.Dir.File("storage");
        Directory.CreateDirectory(storage);
        var e = await Assert.ThrowsAnyAsync<Exception>(() => b.Host.Replicas.ImportAsync(folder, cert => cert.Thumbprint == signer.Thumbprint
            ? new ImportDecision(true, "", "a.test", "cert:x", "g1", storage) : new ImportDecision(false, "the folder's signer is not trusted"), b.Ct));
        Assert.Matches(tamper switch
        {
            "cycle.bin" => "is not the file the primary signed",
            "replica.json" => "signature .* does not match|is not an exported replica",
            _ => "not trusted",
        }, e.Message);
        Assert.Empty(await b.Host.Vms.ListAsync(b.Ct));
        Assert.Empty(b.Host.Store.ListReplicas());
        Assert.Empty(Directory.GetFileSystemEntries(storage));
        Assert.Empty(Directory.GetFileSystemEntries(b.Host.Paths.VmsDir));
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
