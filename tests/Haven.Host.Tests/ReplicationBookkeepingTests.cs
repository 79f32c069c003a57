using System.Text.Json;
using Haven.Api;
using Haven.Host.Replication;
using Haven.Host.State;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace Haven.Host.Tests;

/// <summary>
/// Replication statistics, health and the cycle schedule on a fake clock: missed cycles are counted exactly (also
/// while a cycle runs, and across its end), health follows them, due times are exact, a resynchronization waits for
/// its UTC window, and a schema-4 database keeps its statistics when migrated.
/// </summary>
public sealed class ReplicationBookkeepingTests
{
    private const long M = 1 << 20;
    private static readonly DateTimeOffset T0 = new(2026, 3, 2, 10, 0, 0, TimeSpan.Zero);

    private sealed class Fixture : IAsyncDisposable
    {
        public required TestHost Test { get; init; }
        public required FakeTimeProvider Clock { get; init; }
        public required string VmId { get; init; }
        public HavenHost Host => Test.Host;
        public ReplicationStatistics Stats => Host.Store.FindReplication(VmId)!.Statistics;
        public DateTimeOffset? NextDue => Host.Schedule.NextDue(VmId);
        public ValueTask DisposeAsync() => Test.DisposeAsync();
    }

    /// <summary>A host on a fake clock at <see cref="T0"/> whose VM "web" is replicated, with <paramref name="successes"/> before T0.</summary>
    private static async Task<Fixture> ReplicatedAsync(ReplicationSettings settings, params DateTimeOffset[] successes)
    {
        var clock = new FakeTimeProvider(T0);
        var t = new TestHost(options: new HavenHostOptions { Time = clock });
        await t.CreateVmAsync("web");
        var id = t.Host.Vms.Find("web").Id;
        t.Host.Store.Write(w =>
        {
            w.InsertReplication(new ReplicationRecord(id, "https://replica.test:9443", JsonSerializer.Serialize(settings, ApiJson.Options), 0));
            for (var i = 0; i < successes.Length; i++) w.RecordCycleSucceeded(id, i + 1, M, TimeSpan.FromSeconds(2), successes[i], appConsistent: false);
        });
        return new Fixture { Test = t, Clock = clock, VmId = id };
    }

    [Fact]
    public async Task Missed_cycles_are_counted_exactly_and_turn_health_to_Warning_then_Critical()
    {
        await using var f = await ReplicatedAsync(new ReplicationSettings { FrequencySeconds = 30 },
            T0.AddSeconds(-120), T0.AddSeconds(-90), T0.AddSeconds(-60), T0.AddSeconds(-30));
        // A cycle that never ends: the replica does not answer.
        var hung = new TaskCompletionSource();
        var started = 0;
        Task Start(VmRecord _) { started++; return hung.Task; }

        f.Host.Schedule.Tick(Start);                      // T0: due one frequency after the last success
        Assert.Equal((1, T0.AddSeconds(30), 0L), (started, f.NextDue, f.Stats.MissedCycles));
        f.Clock.Advance(TimeSpan.FromSeconds(30));        // T0+30: due while the cycle still runs
        f.Host.Schedule.Tick(Start);
        Assert.Equal((1, T0.AddSeconds(60), 1L), (started, f.NextDue, f.Stats.MissedCycles));
        f.Clock.Advance(TimeSpan.FromSeconds(95));        // T0+125: T0+60, +90 and +120 passed
        f.Host.Schedule.Tick(Start);
        Assert.Equal((1, T0.AddSeconds(150), 4L), (started, f.NextDue, f.Stats.MissedCycles));
        var status = await f.Host.Replications.StatusAsync("web", f.Test.Ct);
        Assert.Equal(("Warning", "no cycle succeeded for 155 s (frequency 30 s)"), (status.Health, status.HealthReason));

        // The long cycle ends well (as RunCycleAsync records it): the missed count stays, and now shows in the health.
        f.Host.Store.Write(w => w.RecordCycleSucceeded(f.VmId, 5, M, TimeSpan.FromSeconds(125), f.Clock.GetUtcNow(), appConsistent: false));
        hung.SetResult();
        status = await f.Host.Replications.StatusAsync("web", f.Test.Ct);
        Assert.Equal((5L, 4L, 0L), (status.SuccessfulCycles, status.MissedCycles, status.FailedCycles));
        Assert.Equal(("Warning", "4 of 9 cycles were missed"), (status.Health, status.HealthReason));

        // The next cycle starts on the grid and hangs for an hour: every due time of that hour is missed.
        var hung2 = new TaskCompletionSource();
        f.Clock.Advance(TimeSpan.FromSeconds(25));        // T0+150
        f.Host.Schedule.Tick(_ => { started++; return hung2.Task; });
        Assert.Equal((2, T0.AddSeconds(180)), (started, f.NextDue));
        f.Clock.Advance(TimeSpan.FromSeconds(3600));      // T0+3750: T0+180 .. T0+3750 is 120 due times
        f.Host.Schedule.Tick(Start);
        Assert.Equal((2, T0.AddSeconds(3780), 124L), (started, f.NextDue, f.Stats.MissedCycles));
        status = await f.Host.Replications.StatusAsync("web", f.Test.Ct);
        Assert.Equal(("Critical", "no cycle succeeded for 60 min"), (status.Health, status.HealthReason));
        hung2.SetResult();
    }

    [Fact]
    public async Task The_first_cycle_is_due_at_its_start_time_and_later_ones_on_the_frequency_grid()
    {
        await using var f = await ReplicatedAsync(new ReplicationSettings { FrequencySeconds = 60, StartAt = T0.AddMinutes(10) });
        var started = 0;
        Task Start(VmRecord _) { started++; return Task.CompletedTask; }
        f.Host.Schedule.Tick(Start);
        Assert.Equal((0, T0.AddMinutes(10)), (started, f.NextDue));
        f.Clock.Advance(TimeSpan.FromMinutes(10) - TimeSpan.FromMilliseconds(1));
        f.Host.Schedule.Tick(Start);
        Assert.Equal(0, started);
        f.Clock.Advance(TimeSpan.FromMilliseconds(1));
        f.Host.Schedule.Tick(Start);
        Assert.Equal((1, T0.AddMinutes(11), 0L), (started, f.NextDue, f.Stats.MissedCycles));
        // Ticks are late by 1.5 s: the grid does not drift.
        f.Clock.Advance(TimeSpan.FromSeconds(61.5));
        f.Host.Schedule.Tick(Start);
        Assert.Equal((2, T0.AddMinutes(12), 0L), (started, f.NextDue, f.Stats.MissedCycles));
    }

    [Fact]
    public async Task After_havend_was_down_the_due_times_it_slept_through_are_missed_and_the_grid_continues()
    {
        // Last success ten minutes ago at a one-minute frequency: T0-9 min .. T0 are ten due times, nine of them missed.
        await using var f = await ReplicatedAsync(new ReplicationSettings { FrequencySeconds = 60 }, T0.AddMinutes(-10));
        var started = 0;
        f.Host.Schedule.Tick(_ => { started++; return Task.CompletedTask; });
        Assert.Equal((1, T0.AddMinutes(1), 9L), (started, f.NextDue, f.Stats.MissedCycles));
    }

    [Theory]
    [InlineData(22, 4, "2026-03-02T10:00:00Z", "2026-03-02T22:00:00Z")]
    [InlineData(22, 4, "2026-03-02T23:30:00Z", "2026-03-02T23:30:00Z")]
    [InlineData(22, 4, "2026-03-03T03:59:59Z", "2026-03-03T03:59:59Z")]
    [InlineData(22, 4, "2026-03-03T04:00:00Z", "2026-03-03T22:00:00Z")]
    [InlineData(1, 5, "2026-03-02T06:00:00Z", "2026-03-03T01:00:00Z")]
    [InlineData(1, 5, "2026-03-02T00:59:00Z", "2026-03-02T01:00:00Z")]
    public void The_resync_window_opens_at_its_start_hour_in_UTC(int start, int end, string now, string opens)
    {
        var settings = new ReplicationSettings { ResyncWindowStartHour = start, ResyncWindowEndHour = end };
        Assert.Equal(DateTimeOffset.Parse(opens), settings.ResyncWindowOpensAt(DateTimeOffset.Parse(now)));
        Assert.Equal(DateTimeOffset.Parse(now), new ReplicationSettings().ResyncWindowOpensAt(DateTimeOffset.Parse(now)));
    }

    [Fact]
    public async Task A_resynchronization_waiting_for_its_window_is_retried_when_the_window_opens_and_counts_no_missed_cycles()
    {
        await using var f = await ReplicatedAsync(new ReplicationSettings { FrequencySeconds = 30, ResyncWindowStartHour = 22, ResyncWindowEndHour = 4 }, T0.AddSeconds(-30));
        f.Host.Store.Write(w => w.RecordResyncWaiting(f.VmId, "VM 'web' needs resynchronization"));
        var started = 0;
        Task Start(VmRecord _) { started++; return Task.CompletedTask; }
        f.Host.Schedule.Tick(Start);
        Assert.Equal((0, T0.Date.AddHours(22)), (started, f.NextDue?.UtcDateTime));
        var status = await f.Host.Replications.StatusAsync("web", f.Test.Ct);
        Assert.Equal(("Warning", "VM 'web' needs resynchronization"), (status.Health, status.HealthReason));
        f.Clock.Advance(TimeSpan.FromHours(12) - TimeSpan.FromSeconds(1));   // 21:59:59
        f.Host.Schedule.Tick(Start);
        Assert.Equal(0, started);
        f.Clock.Advance(TimeSpan.FromSeconds(1));                             // 22:00:00
        f.Host.Schedule.Tick(Start);
        Assert.Equal((1, new DateTimeOffset(T0.Date.AddHours(22).AddSeconds(30), TimeSpan.Zero), 0L), (started, f.NextDue, f.Stats.MissedCycles));
    }

    [Fact]
    public async Task A_cycle_ending_after_missed_cycles_were_counted_keeps_them()
    {
        var clock = new FakeTimeProvider(T0);
        await using var primary = new TestHost(options: new HavenHostOptions { Time = clock });
        await using var replicaHost = new TestHost();
        await primary.CreateVmAsync("web", size: 16 * M);
        var model = new Haven.TestSupport.DiskModel(primary.Dir.File("now.raw"), 16 * M);
        await primary.WriteAsync("web", model, 0x31, 0, M);
        var target = new LocalReplicaTarget(replicaHost.Host, "primary.test", "g1");
        await primary.Host.Replications.EnableAsync("web", "local", new ReplicationSettings { FrequencySeconds = 30 }, target, primary.Ct);
        await primary.Host.Replications.RunCycleAsync("web", target, primary.Ct);
        var vmId = primary.Host.Vms.Find("web").Id;

        // The next cycle stops after the replica acknowledged it, before this side records it.
        var acknowledged = new TaskCompletionSource();
        var release = new TaskCompletionSource();
        primary.Host.Replications.AtStep = async step =>
        {
            if (step != "replication.after-ack") return;
            acknowledged.SetResult();
            await release.Task;
        };
        Task? cycle = null;
        Task Start(VmRecord vm) => cycle = Task.Run(() => primary.Host.Replications.RunCycleAsync(vm.Name, target, primary.Ct));
        primary.Host.Schedule.Tick(Start);               // T0: due at T0+30
        clock.Advance(TimeSpan.FromSeconds(30));
        primary.Host.Schedule.Tick(Start);               // starts cycle 2
        Assert.NotNull(cycle);
        await acknowledged.Task.WaitAsync(TimeSpan.FromMinutes(2), primary.Ct);
        clock.Advance(TimeSpan.FromSeconds(65));         // T0+95: T0+60 and T0+90 passed while it ran
        primary.Host.Schedule.Tick(Start);
        Assert.Equal(2, primary.Host.Store.FindReplication(vmId)!.Statistics.MissedCycles);
        release.SetResult();
        await cycle!;
        primary.Host.Replications.AtStep = null;

        var after = primary.Host.Store.FindReplication(vmId)!;
        Assert.Equal((2L, 2L, 2L, 0L), (after.LastCycle, after.Statistics.SuccessfulCycles, after.Statistics.MissedCycles, after.Statistics.FailedCycles));
        Assert.Equal(CycleOutcome.Succeeded, after.Statistics.LastOutcome);
        Assert.Equal(T0.AddSeconds(95), after.Statistics.LastSuccess);
    }

    [Fact]
    public async Task A_schema_4_database_keeps_its_replication_statistics_as_columns()
    {
        using var dir = new Haven.TestSupport.TempDir();
        var db = dir.File("haven.db");
        var lastSuccess = new DateTimeOffset(2026, 2, 1, 8, 0, 0, TimeSpan.Zero);
        var stats = JsonSerializer.Serialize(new ReplicationStatistics
        {
            SuccessfulCycles = 7, FailedCycles = 2, MissedCycles = 3, TotalBytes = 70, MaxBytes = 30, TotalSeconds = 14, MaxSeconds = 5,
            LastSuccess = lastSuccess, LastFailure = lastSuccess.AddHours(-1), LastError = "timeout",
        }, ApiJson.Options);
        OldDatabase.Create(db, 4, OldDatabase.VmRow("a", "a") + OldDatabase.VmRow("b", "b") + """
                INSERT INTO replications VALUES ('a', 'https://r:9443', '{}', 7, $stats), ('b', 'https://r:9443', '{}', 0, 'not json');
            """, ("$stats", stats));
        using (var store = new HostStore(db))
        {
            var a = store.FindReplication("a")!;
            Assert.Equal(7, a.LastCycle);
            Assert.Equal(new ReplicationStatistics
            {
                SuccessfulCycles = 7, FailedCycles = 2, MissedCycles = 3, TotalBytes = 70, MaxBytes = 30, TotalSeconds = 14, MaxSeconds = 5,
                LastSuccess = lastSuccess, LastFailure = lastSuccess.AddHours(-1), LastError = "timeout", LastOutcome = CycleOutcome.Succeeded,
            }, a.Statistics);
            Assert.Equal(new ReplicationStatistics(), store.FindReplication("b")!.Statistics); // unreadable JSON: counters from zero
            store.Write(w => w.AddMissedCycles("a", 1));
            Assert.Equal(4, store.FindReplication("a")!.Statistics.MissedCycles);
        }
        using (var c = new SqliteConnection($"Data Source={db};Pooling=False"))
        {
            c.Open();
            using var cmd = c.CreateCommand();
            cmd.CommandText = "SELECT (SELECT user_version FROM pragma_user_version), (SELECT COUNT(*) FROM pragma_table_info('replications') WHERE name = 'statistics')";
            using var r = cmd.ExecuteReader();
            r.Read();
            Assert.Equal((8L, 0L), (r.GetInt64(0), r.GetInt64(1))); // migrated on to the latest schema
        }
    }
}
