using Haven.Api;
using Haven.Host.Replication;
using Haven.Host.State;
using Haven.TestSupport;
using Xunit;

namespace Haven.Host.Tests;

/// <summary>
/// The replica side of replication on real qcow2 chains: each applied cycle becomes a recovery point equal
/// to the primary's point in time; a cycle that fails anywhere leaves the last point untouched and no trace;
/// retention keeps the latest and the hourly points, each still correct after older ones are merged away.
/// </summary>
public sealed class ReplicaTests
{
    private const long M = 1 << 20;
    private static readonly DateTimeOffset T0 = new(2026, 11, 24, 8, 10, 0, TimeSpan.Zero);

    private static async Task<(TestHost T, ReplicaRecord Replica)> SetUpAsync(int additionalPoints = 0)
    {
        var t = new TestHost();
        var replica = await t.Host.Replicas.CreateAsync(new ReplicaCreateSpec
        {
            VmName = "web",
            PrimaryHost = "primary.test",
            PrimaryVmId = "p-web",
            TrustGroup = "g1",
            DiskSizes = [64 * M],
            MemoryMiB = 64,
            Accelerator = "tcg",
            AdditionalPoints = additionalPoints,
        }, t.Ct);
        return (t, replica);
    }

    private sealed record W(byte Pattern, long Offset, long Length);

    /// <summary>The extents of some pattern writes, the way a primary sends them, applied to the model too.</summary>
    private static async IAsyncEnumerable<ReplicaExtent> ExtentsAsync(DiskModel model, W[] writes, int failAfter = -1)
    {
        var sent = 0;
        foreach (var w in writes)
        {
            await model.WriteAsync(w.Pattern, w.Offset, w.Length);
            for (var at = w.Offset; at < w.Offset + w.Length; at += M)
            {
                if (sent++ == failAfter) throw new IOException("connection lost mid-cycle");
                var length = (int)Math.Min(M, w.Offset + w.Length - at);
                var data = new byte[length];
                Array.Fill(data, w.Pattern);
                yield return w.Pattern == 0 ? new ReplicaExtent(0, at, length, null) : new ReplicaExtent(0, at, length, data);
            }
        }
    }

    private static async IAsyncEnumerable<ReplicaExtent> RawAsync(params ReplicaExtent[] extents)
    {
        foreach (var e in extents) { await Task.Yield(); yield return e; }
    }

    private static ReplicaCycleHeader Header(long cycle, long baseCycle, DateTimeOffset at) =>
        new(cycle, baseCycle, [64 * M], at, Consistency.CrashConsistent);

    private static async Task AssertPointAsync(TestHost t, long cycle, DiskModel model)
        => await t.AssertCheckpointAsync("web", ReplicaService.PointName(cycle), model);

    [Fact]
    public async Task Each_cycle_becomes_a_recovery_point_equal_to_the_primarys_point_in_time()
    {
        var (t, replica) = await SetUpAsync();
        await using var _ = t;
        var now = new DiskModel(t.Dir.File("now.raw"), 64 * M);
        var p1 = await t.Host.Replicas.ApplyCycleAsync(replica.VmId, Header(1, 0, T0), ExtentsAsync(now, [new(0x11, 0, 5 * M), new(0x12, 30 * M, M / 2)]), t.Ct);
        Assert.Equal(1, p1.Cycle);
        await AssertPointAsync(t, 1, now);

        var p2 = await t.Host.Replicas.ApplyCycleAsync(replica.VmId, Header(2, 1, T0.AddSeconds(30)), ExtentsAsync(now, [new(0x21, 2 * M, 2 * M), new(0, 30 * M, M / 2)]), t.Ct);
        await AssertPointAsync(t, 2, now);
        Assert.Equal(2, t.Host.Replicas.Find("web").LastCycle);
        // Only the latest point is kept by default; the older one was merged away.
        Assert.Equal([ReplicaService.PointName(2)], t.Host.Checkpoints.List("web").Select(c => c.Name));
        Assert.Equal([p2.Cycle], t.Host.Store.ListReplicaPoints(replica.VmId).Select(p => p.Cycle));
        await t.AssertConsistentAsync("web");
    }

    /// <summary>
    /// Extents are written several at a time while the next one arrives: the data of each must be its own (the producer
    /// here reuses one buffer for every extent, as the network service does for decompressed data), and extents that
    /// overlap one still being written land in the order sent.
    /// </summary>
    [Fact]
    public async Task Pipelined_writes_keep_each_extents_bytes_and_the_order_of_overlapping_extents()
    {
        var (t, replica) = await SetUpAsync();
        await using var _ = t;
        var now = new DiskModel(t.Dir.File("now.raw"), 64 * M);
        W[] writes = [new(0x51, 0, 4 * M), new(0x52, M / 2, M), new(0, 3 * M, M / 2), new(0x53, 3 * M + M / 4, M / 8), new(0x54, 10 * M, 3 * M), new(0x55, 10 * M, M)];
        foreach (var w in writes) await now.WriteAsync(w.Pattern, w.Offset, w.Length);
        await t.Host.Replicas.ApplyCycleAsync(replica.VmId, Header(1, 0, T0), ReusedBufferAsync(writes), t.Ct);
        await AssertPointAsync(t, 1, now);
        await t.AssertConsistentAsync("web");

        static async IAsyncEnumerable<ReplicaExtent> ReusedBufferAsync(W[] writes)
        {
            var buffer = new byte[M];
            foreach (var w in writes)
                for (var at = w.Offset; at < w.Offset + w.Length; at += M)
                {
                    await Task.Yield();
                    var length = (int)Math.Min(M, w.Offset + w.Length - at);
                    Array.Fill(buffer, w.Pattern, 0, length);
                    yield return w.Pattern == 0 ? new ReplicaExtent(0, at, length, null) : new ReplicaExtent(0, at, length, buffer.AsMemory(0, length));
                    Array.Fill(buffer, (byte)0xEE); // what the producer does with its buffer once the next extent is asked for
                }
        }
    }

    [Theory]
    [InlineData(null)]
    [InlineData("replica.after-data")]
    [InlineData("replica.after-checkpoint")]
    public async Task A_cycle_that_fails_anywhere_leaves_the_last_point_as_it_was(string? failAt)
    {
        var (t, replica) = await SetUpAsync();
        await using var _ = t;
        var now = new DiskModel(t.Dir.File("now.raw"), 64 * M);
        await t.Host.Replicas.ApplyCycleAsync(replica.VmId, Header(1, 0, T0), ExtentsAsync(now, [new(0x31, 0, 8 * M)]), t.Ct);
        var before = await now.SnapshotAsync(t.Dir.File("before.raw"));

        var scratch = new DiskModel(t.Dir.File("scratch.raw"), 64 * M);
        var extents = ExtentsAsync(scratch, [new(0x32, 4 * M, 8 * M)], failAfter: failAt is null ? 3 : -1);
        if (failAt is not null) t.Host.Replicas.AtStep = s => s == failAt ? throw new IOException("injected at " + s) : Task.CompletedTask;
        await Assert.ThrowsAsync<IOException>(() => t.Host.Replicas.ApplyCycleAsync(replica.VmId, Header(2, 1, T0.AddMinutes(5)), extents, t.Ct));
        t.Host.Replicas.AtStep = null;

        Assert.Equal(1, t.Host.Replicas.Find("web").LastCycle);
        Assert.Equal([ReplicaService.PointName(1)], t.Host.Checkpoints.List("web").Select(c => c.Name));
        await AssertPointAsync(t, 1, before);
        await t.AssertCurrentAsync("web", before); // the active layer is empty again
        await t.AssertConsistentAsync("web");
        Assert.Empty(Directory.GetFiles(t.Host.Paths.RunDir));

        // The primary sends the cycle again, whole: it applies.
        var again = new DiskModel(t.Dir.File("again.raw"), 64 * M);
        await again.WriteAsync(0x31, 0, 8 * M);
        await t.Host.Replicas.ApplyCycleAsync(replica.VmId, Header(2, 1, T0.AddMinutes(5)), ExtentsAsync(again, [new(0x32, 4 * M, 8 * M)]), t.Ct);
        await AssertPointAsync(t, 2, again);
    }

    [Fact]
    public async Task A_cycle_on_the_wrong_base_or_with_a_bad_extent_is_refused_and_changes_nothing()
    {
        var (t, replica) = await SetUpAsync();
        await using var _ = t;
        var now = new DiskModel(t.Dir.File("now.raw"), 64 * M);
        await t.Host.Replicas.ApplyCycleAsync(replica.VmId, Header(1, 0, T0), ExtentsAsync(now, [new(0x41, 0, M)]), t.Ct);

        var scratch = new DiskModel(t.Dir.File("scratch.raw"), 64 * M);
        await Assert.ThrowsAsync<ReplicaOutOfSyncException>(() =>
            t.Host.Replicas.ApplyCycleAsync(replica.VmId, Header(3, 2, T0.AddMinutes(1)), ExtentsAsync(scratch, [new(0x42, 0, M)]), t.Ct));
        var bad = await Assert.ThrowsAsync<HavenException>(() =>
            t.Host.Replicas.ApplyCycleAsync(replica.VmId, Header(2, 1, T0.AddMinutes(1)), RawAsync(new ReplicaExtent(0, M, (int)M, new byte[M]), new ReplicaExtent(0, 63 * M + 4096, (int)M, new byte[M])), t.Ct));
        Assert.Contains("does not fit", bad.Message);
        Assert.Equal(ErrorCode.InvalidArgument, bad.Code);
        var wrongSize = await Assert.ThrowsAsync<HavenException>(() =>
            t.Host.Replicas.ApplyCycleAsync(replica.VmId, new ReplicaCycleHeader(2, 1, [32 * M], T0, Consistency.CrashConsistent), ExtentsAsync(scratch, []), t.Ct));
        Assert.Contains("bytes on the primary", wrongSize.Message);

        Assert.Equal(1, t.Host.Replicas.Find("web").LastCycle);
        await AssertPointAsync(t, 1, now);
        await t.AssertCurrentAsync("web", now);
        await t.AssertConsistentAsync("web");
    }

    [Fact]
    public async Task Hourly_points_are_kept_and_every_kept_point_stays_correct_as_older_ones_merge_away()
    {
        var (t, replica) = await SetUpAsync(additionalPoints: 2);
        await using var _ = t;
        var now = new DiskModel(t.Dir.File("now.raw"), 64 * M);
        var models = new Dictionary<long, DiskModel>();
        // Two cycles an hour over four hours (8:10, 8:40, 9:10, 9:40, ...): hours 8, 9, 10, 11.
        for (var cycle = 1; cycle <= 8; cycle++)
        {
            var at = T0.AddMinutes(30 * (cycle - 1));
            await t.Host.Replicas.ApplyCycleAsync(replica.VmId, Header(cycle, cycle - 1, at),
                ExtentsAsync(now, [new((byte)(0x50 + cycle), (cycle % 5) * 3 * M, 2 * M + cycle * 4096)]), t.Ct);
            models[cycle] = await now.SnapshotAsync(t.Dir.File($"m{cycle}.raw"));
        }
        // Latest (cycle 8, 11:40) plus the newest of each of the two hours before it: 10:40 (6) and 9:40 (4).
        var kept = t.Host.Store.ListReplicaPoints(replica.VmId).Select(p => p.Cycle).ToList();
        Assert.Equal([4L, 6L, 8L], kept);
        foreach (var c in kept) await AssertPointAsync(t, c, models[c]);
        await t.AssertConsistentAsync("web");
    }

    [Fact]
    public void Retention_keeps_the_latest_and_the_newest_point_of_each_earlier_hour()
    {
        var points = Enumerable.Range(1, 6).Select(i => new ReplicaPointRecord("v", i, "c" + i, T0.AddMinutes(25 * i), Consistency.CrashConsistent)).ToList();
        // 8:35 8:60=9:00 9:25 9:50 10:15 10:40 → hours 8, 9, 9, 9, 10, 10
        Assert.Equal([6L], RecoveryPointRetention.Keep(points, 0).Order());
        Assert.Equal([4L, 6L], RecoveryPointRetention.Keep(points, 1).Order());
        Assert.Equal([1L, 4L, 6L], RecoveryPointRetention.Keep(points, 2).Order());
        Assert.Equal([1L, 4L, 6L], RecoveryPointRetention.Keep(points, 24).Order());
    }
}

/// <summary>Failover on the replica host: test failover, failover to an older point with cancel, and complete.</summary>
public sealed class ReplicaFailoverTests
{
    private const long M = 1 << 20;
    private static readonly DateTimeOffset T0 = new(2026, 11, 24, 8, 10, 0, TimeSpan.Zero);

    private static async IAsyncEnumerable<ReplicaExtent> Fill(DiskModel model, byte pattern, long offset, long length)
    {
        await model.WriteAsync(pattern, offset, length);
        for (var at = offset; at < offset + length; at += M)
        {
            var data = new byte[Math.Min(M, offset + length - at)];
            Array.Fill(data, pattern);
            yield return new ReplicaExtent(0, at, data.Length, data);
        }
    }

    /// <summary>A replica "web" with three points an hour apart (cycles 1..3), all kept; returns the models of each point.</summary>
    private static async Task<(TestHost T, ReplicaRecord Replica, DiskModel[] Points)> SetUpAsync()
    {
        var t = new TestHost();
        var replica = await t.Host.Replicas.CreateAsync(new ReplicaCreateSpec
        {
            VmName = "web", PrimaryHost = "primary.test", PrimaryVmId = "p-web", TrustGroup = "g1",
            DiskSizes = [64 * M], MemoryMiB = 64, Accelerator = "tcg", AdditionalPoints = 2,
        }, t.Ct);
        var now = new DiskModel(t.Dir.File("now.raw"), 64 * M);
        var points = new DiskModel[4];
        for (var c = 1; c <= 3; c++)
        {
            await t.Host.Replicas.ApplyCycleAsync(replica.VmId, new ReplicaCycleHeader(c, c - 1, [64 * M], T0.AddHours(c), Consistency.CrashConsistent),
                Fill(now, (byte)(0x60 + c), c * 4 * M, 2 * M), t.Ct);
            points[c] = await now.SnapshotAsync(t.Dir.File($"p{c}.raw"));
        }
        return (t, replica, points);
    }

    [Fact]
    public async Task A_test_failover_boots_a_copy_of_the_chosen_point_without_network_while_cycles_go_on()
    {
        var (t, replica, points) = await SetUpAsync();
        await using var _ = t;
        var test = await t.Host.Replicas.TestFailoverAsync("web", 2, start: false, t.Ct);
        Assert.Equal("web - Test", test.Name);
        Assert.Equal("none", test.Network);
        Assert.True(await points[2].EqualsImageAsync(t.TopLayer("web - Test")));
        var again = await Assert.ThrowsAsync<HavenException>(() => t.Host.Replicas.TestFailoverAsync("web", null, start: false, t.Ct));
        Assert.Equal(ErrorCode.Conflict, again.Code);
        Assert.NotNull(t.Host.Replicas.Find("web").LastTestFailover);

        // Replication is not disturbed by the test.
        var now = await points[3].SnapshotAsync(t.Dir.File("now4.raw"));
        await t.Host.Replicas.ApplyCycleAsync(replica.VmId, new ReplicaCycleHeader(4, 3, [64 * M], T0.AddHours(4), Consistency.CrashConsistent), Fill(now, 0x70, 0, M), t.Ct);
        await t.AssertCheckpointAsync("web", ReplicaService.PointName(4), now);

        await t.Host.Replicas.StopTestFailoverAsync("web", t.Ct);
        Assert.DoesNotContain(await t.Host.Vms.ListAsync(t.Ct), v => v.Name == "web - Test");
        await Assert.ThrowsAsync<HavenException>(() => t.Host.Replicas.StopTestFailoverAsync("web", t.Ct));
    }

    [Fact]
    public async Task Failover_to_an_older_point_can_be_cancelled_and_then_completed_on_the_latest()
    {
        var (t, replica, points) = await SetUpAsync();
        await using var _ = t;
        await t.Host.Replicas.FailoverAsync("web", 1, start: false, t.Ct);
        await t.AssertCurrentAsync("web", points[1]);
        var refused = await Assert.ThrowsAsync<HavenException>(() => t.Host.Replicas.ApplyCycleAsync(replica.VmId,
            new ReplicaCycleHeader(4, 3, [64 * M], T0.AddHours(4), Consistency.CrashConsistent), Fill(new DiskModel(t.Dir.File("x.raw"), 64 * M), 1, 0, M), t.Ct));
        Assert.Equal(ErrorCode.Conflict, refused.Code);
        await GuestWrites.WriteOfflineAsync(t.TopLayer("web"), 0x7f, 0, M); // the failed-over VM's own writes

        await t.Host.Replicas.CancelFailoverAsync("web", t.Ct);
        await t.AssertCurrentAsync("web", points[3]);
        Assert.Equal(ReplicaState.Replicating, t.Host.Replicas.Find("web").State);

        await t.Host.Replicas.FailoverAsync("web", null, start: false, t.Ct);
        await t.Host.Replicas.CompleteFailoverAsync("web", t.Ct);
        await Assert.ThrowsAsync<HavenException>(() => Task.FromResult(t.Host.Replicas.Find("web")));
        Assert.Empty(t.Host.Checkpoints.List("web"));
        await t.AssertCurrentAsync("web", points[3]);
        await t.AssertConsistentAsync("web");
    }
}
