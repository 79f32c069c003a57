using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using Haven.Api;
using Haven.TestSupport;

namespace Haven.EndToEnd.Tests;

/// <summary>
/// Application consistency proven on a real database: while haven-commit-loop commits numbered transactions in the
/// Debian guest's PostgreSQL, a production checkpoint, a production backup and a replication cycle are taken, and a
/// crash-consistent backup (checkpoint type Standard: no freeze). Every copy (the checkpoint applied, each backup
/// restored as a new VM, a test failover on the replica) boots, PostgreSQL starts, pg_amcheck passes and every id
/// logged before the copy's point in time is in its table. The difference the freeze makes: a frozen copy's ext4 root
/// needs no journal recovery and PostgreSQL replays WAL only from the hook's CHECKPOINT; the crash-consistent copy's
/// root needs journal recovery (checked on the image from the host before it boots) and replays from an older checkpoint.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class PostgresConsistencyTests
{
    private const string HookDone = "postgresql: freeze: CHECKPOINT done";
    private const string Psql = "runuser -u postgres -- psql -X -At -d haven -c ";

    private static void Log(string line) => TestContext.Current.TestOutputHelper?.WriteLine(line);

    [Fact(Timeout = 1_800_000)]
    public async Task Checkpoint_backup_and_replica_of_a_committing_database_keep_every_commit_and_only_the_crash_copy_needs_recovery()
    {
        var ct = TestContext.Current.CancellationToken;
        var total = Stopwatch.StartNew();
        await DebianGuest.EnsureBuiltAsync();
        var primary = new HavenWorld(ct);
        var replica = new HavenWorld(ct);
        await using var _ = primary;
        await using var __ = replica;
        var url = await ReplicationSetup.PairAsync(primary, replica);

        var disk = primary.Dir.File("db.qcow2");
        await DebianGuest.CopyDiskAsync(disk);
        var vm = await primary.JsonAsync<VmInfo>("vm", "create", "db", "--disk", disk, "--accel", "tcg", "--memory", "768",
            "--kernel", DebianGuest.Kernel, "--initrd", DebianGuest.Initrd, "--append", DebianGuest.Append, "--checkpoint-type", "Production");
        await primary.LearnVmAsync("db");
        var agent = primary.Paths.GuestAgentSocket(vm.Id);
        await BootAsync(primary, "db", agent, ct);

        // The workload: one transaction per id, each id logged (fsynced) after its commit.
        await DebianGuest.ShOkAsync(agent, "systemctl start haven-commit-loop", ct);
        var first = await WaitForIdAsync(agent, 20, ct);
        Log($"commit loop running: id {first} logged");

        // 1. Production checkpoint.
        var (cpId, cpRedo) = await FrozenOperationAsync(agent, "production checkpoint", async () =>
        {
            var r = await primary.JsonAsync<CheckpointCreateResult>("checkpoint", "create", "db", "--name", "app");
            Assert.Equal((CheckpointKind.Production, Consistency.ApplicationConsistent), (r.Checkpoint.Kind, r.Checkpoint.Consistency));
            Assert.Null(r.FallbackReason);
            return r.FrozenMilliseconds;
        }, ct);

        // 2. Production backup.
        var pass = primary.Dir.File("pass");
        await File.WriteAllTextAsync(pass, "a passphrase\n", ct);
        string[] repo = ["--repo", primary.Dir.File("repo"), "--passphrase-file", pass];
        await primary.OkAsync(["repo", "init", .. repo]);
        BackupResult? appBackup = null;
        var (bkId, bkRedo) = await FrozenOperationAsync(agent, "production backup", async () =>
        {
            appBackup = await primary.JsonAsync<BackupResult>(["backup", "db", .. repo]);
            Assert.Equal(Consistency.ApplicationConsistent, appBackup.Consistency);
            Log($"  backup {appBackup.Mode}: {appBackup.BytesRead / HavenWorld.M} MiB read in {appBackup.WallMilliseconds / 1000:0.0} s");
            return appBackup.FrozenMilliseconds;
        }, ct);

        // 3. Replication cycle (the first: the whole disk) to the second host; a Production VM's cycle freezes too.
        await primary.OkAsync("replication", "enable", "db", "--replica", url, "--replica-name", "replica.test", "--frequency", "15m",
            "--start-at", DateTimeOffset.UtcNow.AddDays(1).ToString("O"));
        var (repId, repRedo) = await FrozenOperationAsync(agent, "replication cycle", async () =>
        {
            var r = await primary.JsonAsync<ReplicationCycleResult>("replication", "run", "db");
            Assert.Equal((1L, Consistency.ApplicationConsistent), (r.Cycle, r.Consistency));
            Log($"  cycle {r.Cycle}: {r.DataBytes / HavenWorld.M} MiB sent in {r.WallMilliseconds / 1000:0.0} s");
            return 0; // the cycle result has no frozen duration; the hook log and the consistency show the freeze
        }, ct);

        // 4. Crash-consistent: a Standard VM's backup does not freeze the guest (its disks' state at one instant, as
        // after a power loss). Some commits first, so that the copy's point is well past the last CHECKPOINT.
        await primary.OkAsync("vm", "set", "db", "--checkpoint-type", "Standard");
        await WaitForIdAsync(agent, await LastLoggedIdAsync(agent, ct) + 200, ct);
        var hooksBefore = await HookCheckpointsAsync(agent, ct);
        var crashId = await LastLoggedIdAsync(agent, ct);
        var crashRedo = await RedoLsnAsync(agent, ct);
        var crashBackup = await primary.JsonAsync<BackupResult>(["backup", "db", .. repo]);
        Assert.Equal(Consistency.CrashConsistent, crashBackup.Consistency);
        Assert.Null(crashBackup.FrozenMilliseconds);
        Assert.Equal(hooksBefore, await HookCheckpointsAsync(agent, ct)); // no freeze, no hook
        var crashLive = await WaitForIdAsync(agent, crashId + 1, ct);
        Log($"crash-consistent backup ({crashBackup.Mode}): id {crashId} logged before it, the loop went on ({crashLive}); last checkpoint before it: redo {crashRedo}" +
            (crashRedo == repRedo ? " (the replication cycle's hook)" : ""));

        // The original stops (workload first); the copies come up one at a time (2 cores, TCG).
        await DebianGuest.ShOkAsync(agent, "systemctl stop haven-commit-loop", ct);
        var last = await LastLoggedIdAsync(agent, ct);
        Log($"workload stopped at id {last}; the loop committed {last - first} transactions during the test's operations");
        await primary.OkAsync("vm", "stop", "db", "--timeout", "120");
        await primary.OkAsync("checkpoint", "apply", "db", "app");
        var restored = await primary.JsonAsync<RestoreResult>(["restore", appBackup!.BackupId, .. repo, "--name", "db-backup"]);
        Log($"production backup restored as db-backup in {restored.WallMilliseconds / 1000:0.0} s");
        restored = await primary.JsonAsync<RestoreResult>(["restore", crashBackup.BackupId, .. repo, "--name", "db-crash"]);
        Log($"crash-consistent backup restored as db-crash in {restored.WallMilliseconds / 1000:0.0} s");
        var test = await replica.JsonAsync<VmInfo>("replication", "test-failover", "db", "--no-start");
        Assert.Equal("db - Test", test.Name);

        var copies = new[]
        {
            new Copy("checkpoint 'app' applied", primary, "db", cpId, cpRedo, Frozen: true),
            new Copy("production backup restored", primary, "db-backup", bkId, bkRedo, Frozen: true),
            new Copy("replica test failover", replica, "db - Test", repId, repRedo, Frozen: true),
            // Its PostgreSQL replays from the last checkpoint before its point: the replication cycle's hook, 200+ commits earlier.
            new Copy("crash-consistent backup restored", primary, "db-crash", crashId, crashRedo, Frozen: false),
        };
        var results = new List<(Copy Copy, CopyResult Result)>();
        foreach (var copy in copies) results.Add((copy, await CheckCopyAsync(copy, ct)));

        Log("\nsummary (copy: ext4 needs_recovery before boot / PostgreSQL redo / ids):");
        foreach (var (c, r) in results)
            Log($"  {c.What}: needs_recovery={r.NeedsRecovery}, redo {r.Redo}, ids 1..{r.MaxId} (recorded {c.RecordedId}, copy's log {r.LastLogged}), boot {r.Boot}");
        Log($"total {total.Elapsed.TotalMinutes:0.0} min");
    }

    /// <param name="RedoLsn">Where the copy's WAL replay must start: the redo point of the last checkpoint before its point in time.</param>
    private sealed record Copy(string What, HavenWorld World, string Vm, long RecordedId, string RedoLsn, bool Frozen);

    private sealed record CopyResult(bool NeedsRecovery, string Redo, long MaxId, long LastLogged, string Boot);

    /// <summary>
    /// Runs a freezing operation while the loop commits: records the highest id logged just before the request, checks
    /// the guest's hook ran one CHECKPOINT for it and that the loop went on after the thaw. Returns the recorded id and
    /// the redo LSN of that CHECKPOINT (the latest checkpoint right after the operation).
    /// </summary>
    private static async Task<(long Id, string RedoLsn)> FrozenOperationAsync(string agent, string what, Func<Task<double?>> operation, CancellationToken ct)
    {
        var hooks = await HookCheckpointsAsync(agent, ct);
        var id = await LastLoggedIdAsync(agent, ct);
        var clock = Stopwatch.StartNew();
        var frozen = await operation();
        var took = clock.Elapsed;
        Assert.NotNull(frozen);
        Assert.Equal(hooks + 1, await HookCheckpointsAsync(agent, ct));
        var redo = await RedoLsnAsync(agent, ct);
        var after = await WaitForIdAsync(agent, id + 1, ct);
        Log($"{what}: id {id} logged before the request; frozen {(frozen > 0 ? $"{frozen:0} ms" : "(not reported)")}, the hook's CHECKPOINT (redo {redo}) in the hook log; " +
            $"took {took.TotalSeconds:0.0} s; the loop went on (id {after})");
        return (id, redo);
    }

    /// <summary>The redo point of PostgreSQL's latest checkpoint (where a recovery from now would start).</summary>
    private static async Task<string> RedoLsnAsync(string agent, CancellationToken ct) =>
        (await DebianGuest.ShOkAsync(agent, Psql + "'select redo_lsn from pg_control_checkpoint()'", ct)).Trim();

    private static async Task<int> HookCheckpointsAsync(string agent, CancellationToken ct) =>
        (await DebianGuest.ShOkAsync(agent, "cat /var/log/qga-fsfreeze-hook.log 2>/dev/null || true", ct))
            .Split('\n').Count(l => l.Trim() == HookDone);

    private static async Task<long> LastLoggedIdAsync(string agent, CancellationToken ct)
    {
        var text = (await DebianGuest.ShOkAsync(agent, "tail -n 1 /var/log/haven-commits.log 2>/dev/null || true", ct)).Trim();
        return text == "" ? 0 : long.Parse(text, CultureInfo.InvariantCulture);
    }

    /// <summary>Waits until the commit log reaches <paramref name="id"/> (the loop commits ~17/s under TCG); returns the last id.</summary>
    private static async Task<long> WaitForIdAsync(string agent, long id, CancellationToken ct)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            var last = await LastLoggedIdAsync(agent, ct);
            if (last >= id) return last;
            if (clock.Elapsed > TimeSpan.FromSeconds(120))
            {
                var status = await DebianGuest.ShAsync(agent, "systemctl status haven-commit-loop --no-pager; journalctl -u haven-commit-loop --no-pager | tail -20", ct);
                throw new TimeoutException($"the commit log did not reach id {id} within 120 s (at {last})\n{status.StdoutText}{status.StderrText}");
            }
            await Task.Delay(500, ct);
        }
    }

    private static async Task<string> BootAsync(HavenWorld world, string vm, string agent, CancellationToken ct)
    {
        var clock = Stopwatch.StartNew();
        Assert.Equal(VmState.Running, (await world.JsonAsync<VmInfo>("vm", "start", vm)).State);
        var agentUp = await DebianGuest.WaitForAgentAsync(agent, TimeSpan.FromSeconds(240), ct);
        await DebianGuest.WaitForPostgresAsync(agent, TimeSpan.FromSeconds(180), ct);
        var boot = $"qemu-ga {agentUp.TotalSeconds:0.0} s, PostgreSQL {clock.Elapsed.TotalSeconds:0.0} s";
        Log($"{vm} booted: {boot}");
        return boot;
    }

    /// <summary>Checks one copy: its root file system before it boots, then PostgreSQL in it.</summary>
    private static async Task<CopyResult> CheckCopyAsync(Copy copy, CancellationToken ct)
    {
        Log($"\n== {copy.What} (VM '{copy.Vm}') ==");
        var info = await copy.World.ShowAsync(copy.Vm);
        Assert.Equal(VmState.Off, info.State);
        // From the host, before the copy boots: was the root file system frozen clean (journal flushed) or not?
        var sb = await DebianGuest.ReadRootSuperblockAsync(info.Disks[0].Chain[0].Path);
        Log($"root ext4 superblock before boot: incompat features 0x{sb.IncompatFeatures:x}, needs_recovery {sb.NeedsRecovery}");
        Assert.Equal(!copy.Frozen, sb.NeedsRecovery);

        var agent = copy.World.Paths.GuestAgentSocket(info.Id);
        var boot = await BootAsync(copy.World, copy.Vm, agent, ct);
        var ext4 = await DebianGuest.ShOkAsync(agent, "dmesg | grep 'EXT4-fs' || true", ct);
        Log("kernel log, EXT4-fs:\n" + ext4.TrimEnd());
        var journalReplayed = ext4.Contains("recovery complete", StringComparison.Ordinal);
        Assert.Equal(!copy.Frozen, journalReplayed);

        // PostgreSQL recovered: what it logged since its last start in this copy.
        var serverLog = await DebianGuest.ShOkAsync(agent, "cat /var/log/postgresql/postgresql-15-main.log", ct);
        var start = serverLog.LastIndexOf("starting PostgreSQL", StringComparison.Ordinal);
        Assert.True(start >= 0, "no PostgreSQL start in the server log:\n" + serverLog);
        var recovery = serverLog[serverLog.LastIndexOf('\n', start)..].Trim();
        Log("PostgreSQL log since its start in the copy:\n" + recovery);
        Assert.Contains("automatic recovery in progress", recovery); // it was running at the copy's point in time
        var from = Lsn(recovery, @"redo starts at ([0-9A-F]+/[0-9A-F]+)");
        var to = Lsn(recovery, @"redo done at ([0-9A-F]+/[0-9A-F]+)");
        var redo = $"{to - from} bytes ({FormatLsn(from)} .. {FormatLsn(to)})";
        Log($"WAL replayed: {redo}; the last CHECKPOINT before the copy's point (the {(copy.Frozen ? "freeze hook's, just before the freeze" : "latest when the copy was taken")}) had redo {copy.RedoLsn}");
        // A frozen copy replays from the CHECKPOINT its freeze hook made just before the freeze; the crash copy from an older one.
        Assert.Equal(copy.RedoLsn, FormatLsn(from));

        // --verbose names every relation it checks: too much for one guest-exec answer, so count them in the guest.
        var amcheck = await DebianGuest.ShAsync(agent, "runuser -u postgres -- pg_amcheck --all --install-missing --heapallindexed --rootdescend --verbose " +
            ">/tmp/amcheck.log 2>&1; rc=$?; echo \"$(grep -c ': checking ' /tmp/amcheck.log) relations checked\"; grep -v ': checking \\|: including ' /tmp/amcheck.log | tail -n 20; exit $rc", ct, TimeSpan.FromSeconds(600));
        Log($"pg_amcheck --all --heapallindexed --rootdescend: exit {amcheck.ExitCode}, " + amcheck.StdoutText.TrimEnd());
        Assert.True(int.Parse(amcheck.StdoutText.Split(' ')[0], CultureInfo.InvariantCulture) > 0, "pg_amcheck checked nothing:\n" + amcheck.StdoutText);
        Assert.True(amcheck.ExitCode == 0, $"pg_amcheck failed (exit {amcheck.ExitCode}):\n{amcheck.StdoutText}{amcheck.StderrText}");

        // Every id logged before the copy's point is committed in it; ids are contiguous from 1.
        var row = (await DebianGuest.ShOkAsync(agent, Psql + "'select count(*), min(id), max(id) from commits'", ct)).Trim().Split('|');
        var (count, min, max) = (long.Parse(row[0], CultureInfo.InvariantCulture), long.Parse(row[1], CultureInfo.InvariantCulture), long.Parse(row[2], CultureInfo.InvariantCulture));
        var logged = await LastLoggedIdAsync(agent, ct);
        Log($"commits: count {count}, ids {min}..{max}; last id in the copy's own log {logged}; recorded before the point {copy.RecordedId}");
        Assert.Equal((1L, max), (min, count));
        Assert.True(logged >= copy.RecordedId, $"the copy's log ends at {logged}, before {copy.RecordedId} (logged before the point in time)");
        Assert.True(max >= logged, $"id {logged} is in the copy's log but the table ends at {max}");
        Assert.True(max <= logged + 1, $"the table holds {max}, more than one past the copy's log ({logged})"); // the loop logs each id right after its commit

        await copy.World.OkAsync("vm", "stop", copy.Vm, "--force");
        return new CopyResult(sb.NeedsRecovery, redo, max, logged, boot);
    }

    private static long Lsn(string log, string pattern)
    {
        var m = Regex.Match(log, pattern);
        Assert.True(m.Success, $"no '{pattern}' in the PostgreSQL log:\n{log}");
        var parts = m.Groups[1].Value.Split('/');
        return (long.Parse(parts[0], NumberStyles.HexNumber) << 32) | long.Parse(parts[1], NumberStyles.HexNumber);
    }

    private static string FormatLsn(long lsn) => $"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}";
}
