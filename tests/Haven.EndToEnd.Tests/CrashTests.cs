using Haven.Api;
using Haven.TestSupport;

namespace Haven.EndToEnd.Tests;

// havend started with HAVEN_CRASH_AT=<point> SIGKILLs itself at that point of an operation. Each test
// builds a checkpoint tree with a normal havend, runs one command under an armed havend, starts a normal
// havend again and checks that the operation was finished (or, where allowed, undone) completely:
// the tree, every checkpoint's data, the current data, the database, the files and QEMU's block graph
// (HavenWorld.AssertRecoveredAsync).

/// <summary>Crashes inside checkpoint creation.</summary>
public sealed class CreateCrashTests
{
    private const long M = HavenWorld.M;

    [Fact(Timeout = 180_000)]
    public async Task Offline_create_killed_after_overlays_is_rolled_forward_or_back_with_exact_data()
    {
        await using var w = new HavenWorld(TestContext.Current.CancellationToken);
        await w.StartDaemonAsync();
        await w.CreateVmAsync("vm");
        var now = w.NewModel("now");
        await w.WriteAsync("vm", now, new W(0x11, 0, M), new W(0x12, 5 * M, 64 * 1024));
        await w.CheckpointAsync("vm", "c1");
        var m1 = await w.Remember(now, "m1");
        await w.WriteAsync("vm", now, new W(0x22, M, M), new W(0x23, 0, 4096));

        await w.CrashAsync("create.after-overlays", "checkpoint", "create", "vm", "--name", "c2");

        // Both outcomes are allowed; either way the data must be exact.
        var rolledForward = (await w.CheckpointsAsync("vm")).Exists(c => c.Name == "c2");
        TestContext.Current.TestOutputHelper?.WriteLine(rolledForward ? "repair rolled the create forward" : "repair rolled the create back");
        if (rolledForward)
            await w.AssertRecoveredAsync("vm", Tree(("c1", null), ("c2", "c1")), "c2",
                new Dictionary<string, DiskModel> { ["c1"] = m1, ["c2"] = now }, now, VmState.Off);
        else
            await w.AssertRecoveredAsync("vm", Tree(("c1", null)), "c1",
                new Dictionary<string, DiskModel> { ["c1"] = m1 }, now, VmState.Off);
    }

    [Fact(Timeout = 180_000)]
    public async Task Live_create_killed_after_snapshot_is_finished_with_memory_and_the_VM_running()
    {
        await using var w = new HavenWorld(TestContext.Current.CancellationToken);
        await w.StartDaemonAsync();
        await w.CreateVmAsync("vm", start: true);
        var now = w.NewModel("now");
        await w.WriteAsync("vm", now, new W(0x11, 0, M));
        await w.CheckpointAsync("vm", "c1");
        var m1 = await w.Remember(now, "m1");
        await w.WriteAsync("vm", now, new W(0x22, M, M), new W(0x23, 0, 4096));
        var m2 = await w.Remember(now, "m2");

        await w.CrashAsync("create.after-snapshot", "checkpoint", "create", "vm", "--name", "c2");

        // The disks had moved to the new overlays: the checkpoint must stand, with its memory state
        // (the VM was still paused at the checkpoint's instant), and the VM must run again.
        await w.AssertRecoveredAsync("vm", Tree(("c1", null), ("c2", "c1")), "c2",
            new Dictionary<string, DiskModel> { ["c1"] = m1, ["c2"] = m2 }, now, VmState.Running);
        var c2 = (await w.CheckpointsAsync("vm")).Single(c => c.Name == "c2");
        Assert.Equal(CheckpointKind.Standard, c2.Kind);
        Assert.True(c2.HasSavedState, "the repaired live checkpoint has no memory state");

        // The memory state the repair saved is usable: applying c2 resumes the VM from it.
        await w.WriteAsync("vm", now, new W(0x33, 2 * M, M));
        var applied = await w.JsonAsync<CheckpointApplyResult>("checkpoint", "apply", "vm", "c2");
        Assert.Equal(VmState.Running, applied.State);
        await w.AssertCleanAsync("vm", m2);
    }

    internal static Dictionary<string, string?> Tree(params (string Name, string? Parent)[] cps) => cps.ToDictionary(c => c.Name, c => c.Parent);
}

/// <summary>Crashes inside single checkpoint removals, offline (qemu-img) and live (QEMU block jobs).</summary>
public sealed class RemoveCrashTests
{
    private const long M = HavenWorld.M;

    /// <summary>
    /// c1 → c2 → now, then c1 removed (its layer has one child: commit), or c1 → {c2, now} after
    /// applying c1 (two children: stream into both). Killed after the merge, before the database update.
    /// </summary>
    [Theory(Timeout = 180_000)]
    [InlineData(false, false)]
    [InlineData(false, true)]
    [InlineData(true, false)]
    [InlineData(true, true)]
    public async Task Remove_killed_after_merge_is_completed(bool live, bool twoChildren)
    {
        await using var w = new HavenWorld(TestContext.Current.CancellationToken);
        await w.StartDaemonAsync();
        await w.CreateVmAsync("vm", start: live);
        var now = w.NewModel("now");
        await w.WriteAsync("vm", now, new W(0x11, 0, 2 * M), new W(0x12, 8 * M, M));
        await w.CheckpointAsync("vm", "c1");
        var m1 = await w.Remember(now, "m1");
        await w.WriteAsync("vm", now, new W(0x22, M, 2 * M));
        await w.CheckpointAsync("vm", "c2");
        var m2 = await w.Remember(now, "m2");
        if (twoChildren)
        {
            var applied = await w.JsonAsync<CheckpointApplyResult>("checkpoint", "apply", "vm", "c1");
            Assert.Equal(live ? VmState.Running : VmState.Off, applied.State);
            now = await w.Remember(m1, "now2");
            await w.WriteAsync("vm", now, new W(0x44, 4 * M, M), new W(0x45, 0, 4096));
        }
        else
        {
            await w.WriteAsync("vm", now, new W(0x33, 2 * M, M), new W(0x34, 8 * M, 4096));
        }

        await w.CrashAsync("remove.after-merge", "checkpoint", "remove", "vm", "c1");

        await w.AssertRecoveredAsync("vm", CreateCrashTests.Tree(("c2", null)), twoChildren ? null : "c2",
            new Dictionary<string, DiskModel> { ["c2"] = m2 }, now, live ? VmState.Running : VmState.Off);
    }

    /// <summary>
    /// c0 → c1 → { c2, c3 → now } with the VM running on c3's branch: removing c1 streams its data into
    /// c2's layer (offline, qemu-img) and into c3's layer, a backing layer of the running disk (reopened
    /// read-write for the stream job, then read-only on c0's layer). Killed after the merge.
    /// </summary>
    [Fact(Timeout = 180_000)]
    public async Task Live_stream_into_a_backing_layer_killed_after_merge_is_completed()
    {
        await using var w = new HavenWorld(TestContext.Current.CancellationToken);
        await w.StartDaemonAsync();
        await w.CreateVmAsync("vm", start: true);
        var now = w.NewModel("now");
        await w.WriteAsync("vm", now, new W(0x10, 0, 4 * M));
        await w.CheckpointAsync("vm", "c0");
        var m0 = await w.Remember(now, "m0");
        await w.WriteAsync("vm", now, new W(0x11, M, 2 * M));
        await w.CheckpointAsync("vm", "c1");
        var m1 = await w.Remember(now, "m1");
        await w.WriteAsync("vm", now, new W(0x22, 2 * M, 2 * M));
        await w.CheckpointAsync("vm", "c2");
        var m2 = await w.Remember(now, "m2");
        Assert.Equal(VmState.Running, (await w.JsonAsync<CheckpointApplyResult>("checkpoint", "apply", "vm", "c1")).State);
        now = await w.Remember(m1, "now2");
        await w.WriteAsync("vm", now, new W(0x33, 5 * M, M), new W(0x34, 0, 4096));
        await w.CheckpointAsync("vm", "c3");
        var m3 = await w.Remember(now, "m3");
        await w.WriteAsync("vm", now, new W(0x44, 6 * M, M), new W(0x45, M, 4096));

        await w.CrashAsync("remove.after-merge", "checkpoint", "remove", "vm", "c1");

        await w.AssertRecoveredAsync("vm", CreateCrashTests.Tree(("c0", null), ("c2", "c0"), ("c3", "c0")), "c3",
            new Dictionary<string, DiskModel> { ["c0"] = m0, ["c2"] = m2, ["c3"] = m3 }, now, VmState.Running);
    }

    /// <summary>
    /// Live removal killed after the target layer was reopened read-write, before the commit job:
    /// of the current checkpoint (active commit) or of an older one (intermediate commit).
    /// </summary>
    [Theory(Timeout = 180_000)]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Live_remove_killed_before_commit_is_completed(bool removeCurrent)
    {
        await using var w = new HavenWorld(TestContext.Current.CancellationToken);
        await w.StartDaemonAsync();
        await w.CreateVmAsync("vm", start: true);
        var now = w.NewModel("now");
        await w.WriteAsync("vm", now, new W(0x11, 0, 2 * M));
        await w.CheckpointAsync("vm", "c1");
        var m1 = await w.Remember(now, "m1");
        await w.WriteAsync("vm", now, new W(0x22, M, 2 * M));
        await w.CheckpointAsync("vm", "c2");
        var m2 = await w.Remember(now, "m2");
        await w.WriteAsync("vm", now, new W(0x33, 2 * M, M));

        await w.CrashAsync("remove.before-live-commit", "checkpoint", "remove", "vm", removeCurrent ? "c2" : "c1");

        if (removeCurrent)
            await w.AssertRecoveredAsync("vm", CreateCrashTests.Tree(("c1", null)), "c1",
                new Dictionary<string, DiskModel> { ["c1"] = m1 }, now, VmState.Running);
        else
            await w.AssertRecoveredAsync("vm", CreateCrashTests.Tree(("c2", null)), "c2",
                new Dictionary<string, DiskModel> { ["c2"] = m2 }, now, VmState.Running);
    }
}

/// <summary>Crashes inside apply and inside a subtree removal.</summary>
public sealed class ApplyAndSubtreeCrashTests
{
    private const long M = HavenWorld.M;

    [Theory(Timeout = 180_000)]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Apply_killed_after_overlays_is_completed(bool live)
    {
        await using var w = new HavenWorld(TestContext.Current.CancellationToken);
        await w.StartDaemonAsync();
        await w.CreateVmAsync("vm", start: live);
        var now = w.NewModel("now");
        await w.WriteAsync("vm", now, new W(0x11, 0, 2 * M));
        await w.CheckpointAsync("vm", "c1");
        var m1 = await w.Remember(now, "m1");
        await w.WriteAsync("vm", now, new W(0x22, M, 2 * M));
        await w.CheckpointAsync("vm", "c2");
        var m2 = await w.Remember(now, "m2");
        await w.WriteAsync("vm", now, new W(0x33, 3 * M, M)); // discarded by the apply

        await w.CrashAsync("apply.after-overlays", "checkpoint", "apply", "vm", "c1");

        // The disks are switched to c1; the writes after c2 are gone. A live apply had already ended QEMU
        // when it was killed: the repair may leave the VM off, or resume it from c1's memory state.
        var state = (await w.ShowAsync("vm")).State;
        TestContext.Current.TestOutputHelper?.WriteLine($"VM state after the repair: {state}");
        if (live) Assert.Contains(state, new[] { VmState.Off, VmState.Running });
        else Assert.Equal(VmState.Off, state);
        await w.AssertRecoveredAsync("vm", CreateCrashTests.Tree(("c1", null), ("c2", "c1")), "c1",
            new Dictionary<string, DiskModel> { ["c1"] = m1, ["c2"] = m2 }, m1, state);
        if (live && state == VmState.Off)
        {
            // The applied disks boot: the VM starts on them and its data is still c1's.
            Assert.Equal(VmState.Running, (await w.JsonAsync<VmInfo>("vm", "start", "vm")).State);
            await w.AssertCleanAsync("vm", m1);
        }
    }

    [Theory(Timeout = 180_000)]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Subtree_removal_killed_after_one_checkpoint_is_completed(bool live)
    {
        await using var w = new HavenWorld(TestContext.Current.CancellationToken);
        await w.StartDaemonAsync();
        await w.CreateVmAsync("vm", start: live);
        var now = w.NewModel("now");
        await w.WriteAsync("vm", now, new W(0x11, 0, 2 * M));
        await w.CheckpointAsync("vm", "c1");
        var m1 = await w.Remember(now, "m1");
        await w.WriteAsync("vm", now, new W(0x22, M, 2 * M));
        await w.CheckpointAsync("vm", "c2");
        await w.WriteAsync("vm", now, new W(0x33, 2 * M, 2 * M));
        await w.CheckpointAsync("vm", "c3");
        await w.WriteAsync("vm", now, new W(0x44, 3 * M, M), new W(0x45, 0, 4096));

        // Post-order: c3 goes first, then the armed havend dies before c2.
        await w.CrashAsync("subtree.after-one", "checkpoint", "remove", "vm", "c2", "--subtree");

        await w.AssertRecoveredAsync("vm", CreateCrashTests.Tree(("c1", null)), "c1",
            new Dictionary<string, DiskModel> { ["c1"] = m1 }, now, live ? VmState.Running : VmState.Off);
    }
}

/// <summary>The repair is itself killed at the same point; the next start must still finish the operation.</summary>
public sealed class RepeatedCrashTests
{
    private const long M = HavenWorld.M;

    [Theory(Timeout = 180_000)]
    [InlineData("remove.after-merge", true)]
    [InlineData("subtree.after-one", true)]
    [InlineData("apply.after-overlays", false)]
    public async Task Repair_killed_at_the_same_point_is_finished_by_the_next_start(string point, bool live)
    {
        await using var w = new HavenWorld(TestContext.Current.CancellationToken);
        await w.StartDaemonAsync();
        await w.CreateVmAsync("vm", start: live);
        var now = w.NewModel("now");
        await w.WriteAsync("vm", now, new W(0x11, 0, 2 * M));
        await w.CheckpointAsync("vm", "c1");
        var m1 = await w.Remember(now, "m1");
        await w.WriteAsync("vm", now, new W(0x22, M, 2 * M));
        await w.CheckpointAsync("vm", "c2");
        var m2 = await w.Remember(now, "m2");
        await w.WriteAsync("vm", now, new W(0x33, 2 * M, 2 * M));
        await w.CheckpointAsync("vm", "c3");
        var m3 = await w.Remember(now, "m3");
        await w.WriteAsync("vm", now, new W(0x44, 3 * M, M), new W(0x45, 0, 4096));
        var state = live ? VmState.Running : VmState.Off;

        switch (point)
        {
            case "remove.after-merge": // c2's layer has one child (c3's): commit, live under the running VM
                await w.CrashAsync(point, 1, null, "checkpoint", "remove", "vm", "c2");
                await w.AssertRecoveredAsync("vm", CreateCrashTests.Tree(("c1", null), ("c3", "c1")), "c3",
                    new Dictionary<string, DiskModel> { ["c1"] = m1, ["c3"] = m3 }, now, state);
                break;
            case "subtree.after-one":
                await w.CrashAsync(point, 1, null, "checkpoint", "remove", "vm", "c2", "--subtree");
                await w.AssertRecoveredAsync("vm", CreateCrashTests.Tree(("c1", null)), "c1",
                    new Dictionary<string, DiskModel> { ["c1"] = m1 }, now, state);
                break;
            case "apply.after-overlays":
                await w.CrashAsync(point, 1, null, "checkpoint", "apply", "vm", "c1");
                await w.AssertRecoveredAsync("vm", CreateCrashTests.Tree(("c1", null), ("c2", "c1"), ("c3", "c2")), "c1",
                    new Dictionary<string, DiskModel> { ["c1"] = m1, ["c2"] = m2, ["c3"] = m3 }, m1, state);
                break;
            default:
                throw new ArgumentException(point);
        }
    }
}

/// <summary>
/// Live operations where QEMU dies with havend (as in a power cut): the repair finds no VM to ask and
/// must finish from the files alone. Every write was flushed before the crash, so no data may be lost.
/// </summary>
public sealed class QemuDiesTooCrashTests
{
    private const long M = HavenWorld.M;

    [Theory(Timeout = 180_000)]
    [InlineData("create.after-snapshot")]
    [InlineData("remove.before-live-commit")]
    [InlineData("remove.after-merge")]
    public async Task Live_operation_killed_with_its_QEMU_is_finished_offline(string point)
    {
        await using var w = new HavenWorld(TestContext.Current.CancellationToken);
        await w.StartDaemonAsync();
        await w.CreateVmAsync("vm", start: true);
        var now = w.NewModel("now");
        await w.WriteAsync("vm", now, new W(0x11, 0, 2 * M));
        await w.CheckpointAsync("vm", "c1");
        var m1 = await w.Remember(now, "m1");
        await w.WriteAsync("vm", now, new W(0x22, M, 2 * M));
        await w.CheckpointAsync("vm", "c2");
        var m2 = await w.Remember(now, "m2");
        await w.WriteAsync("vm", now, new W(0x33, 2 * M, M), new W(0x34, 0, 4096));
        void KillQemu() => HavenWorld.KillQemus(w.Data);

        switch (point)
        {
            case "create.after-snapshot": // the overlays are sound: the checkpoint stands, without memory
                await w.CrashAsync(point, 0, KillQemu, "checkpoint", "create", "vm", "--name", "c3");
                await w.AssertRecoveredAsync("vm", CreateCrashTests.Tree(("c1", null), ("c2", "c1"), ("c3", "c2")), "c3",
                    new Dictionary<string, DiskModel> { ["c1"] = m1, ["c2"] = m2, ["c3"] = now }, now, VmState.Off);
                Assert.False((await w.CheckpointsAsync("vm")).Single(c => c.Name == "c3").HasSavedState);
                break;
            case "remove.before-live-commit": // removal of the current checkpoint: its layer takes the writable layer's data
                await w.CrashAsync(point, 0, KillQemu, "checkpoint", "remove", "vm", "c2");
                await w.AssertRecoveredAsync("vm", CreateCrashTests.Tree(("c1", null)), "c1",
                    new Dictionary<string, DiskModel> { ["c1"] = m1 }, now, VmState.Off);
                break;
            case "remove.after-merge": // c1's layer had one child (c2's), committed live before the crash
                await w.CrashAsync(point, 0, KillQemu, "checkpoint", "remove", "vm", "c1");
                await w.AssertRecoveredAsync("vm", CreateCrashTests.Tree(("c2", null)), "c2",
                    new Dictionary<string, DiskModel> { ["c2"] = m2 }, now, VmState.Off);
                break;
            default:
                throw new ArgumentException(point);
        }
        // The VM starts again on the repaired chain.
        Assert.Equal(VmState.Running, (await w.JsonAsync<VmInfo>("vm", "start", "vm")).State);
        await w.AssertCleanAsync("vm", now);
    }
}
