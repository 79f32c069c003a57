using Haven.Api;
using Haven.Host;
using Haven.Host.State;
using Haven.Qemu.Images;
using Haven.TestSupport;

namespace Haven.EndToEnd.Tests;

/// <summary>
/// The start-up sweep (Reconciler): files in a VM's disks and states folders that no database row names
/// are deleted when havend starts, and counted in its start-up report. Such files are what a crash between
/// a removal's commit and its file deletions leaves ("remove.after-commit").
/// </summary>
public sealed class StartupSweepTests
{
    private const long M = HavenWorld.M;

    [Fact(Timeout = 180_000)]
    public async Task Unknown_layer_and_state_files_are_deleted_at_start_and_counted_and_nothing_else_changes()
    {
        await using var w = new HavenWorld(TestContext.Current.CancellationToken);
        await w.StartDaemonAsync();
        await w.CreateVmAsync("vm", start: true);
        var now = w.NewModel("now");
        await w.WriteAsync("vm", now, new W(0x11, 0, 2 * M));
        var c1 = await w.CheckpointAsync("vm", "c1");
        Assert.True(c1.HasSavedState, "a live checkpoint of a running VM has a memory state");
        var m1 = await w.Remember(now, "m1");
        await w.WriteAsync("vm", now, new W(0x22, M, M));
        var top = (await w.ShowAsync("vm")).Disks[0].Chain[0].Path;
        await w.StopDaemonAsync();

        // Named like real ones (a fresh id), and real content: an overlay on the VM's current layer, and a copy of c1's memory state.
        var vmId = w.VmId("vm");
        var before = w.DumpState();
        var layer = w.Paths.LayerFile(vmId, HostPaths.NewId());
        var state = w.Paths.StateFile(vmId, HostPaths.NewId());
        await ProcessRunner.RunAsync("qemu-img", ["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", top, "-u", layer, "32M"], w.Ct);
        File.Copy(w.Paths.StateFile(vmId, c1.Id), state);
        Assert.NotEqual(before, w.DumpState());

        var report = (await w.StartDaemonAsync()).StartupReport;
        Assert.Contains("reattached 1 VM(s); repaired 0 operation(s); removed 2 orphan file(s) (1 layer(s), 1 memory state(s)), 0 orphan node(s)", report);
        Assert.False(File.Exists(layer), "the unknown layer file is still there");
        Assert.False(File.Exists(state), "the unknown memory-state file is still there");
        Assert.Equal(before, w.DumpState());
        await w.AssertRecoveredAsync("vm", CreateCrashTests.Tree(("c1", null)), "c1",
            new Dictionary<string, DiskModel> { ["c1"] = m1 }, now, VmState.Running);
    }

    /// <summary>
    /// c1 → c2 → now; removing c1 commits c2's layer down into c1's. havend dies right after the database
    /// transaction that records the removal, before it deletes c2's old layer file and c1's memory state.
    /// The next start has no operation to repair; its sweep deletes exactly those files and changes nothing else.
    /// </summary>
    [Theory(Timeout = 180_000)]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Remove_killed_after_its_commit_leaves_only_the_removed_checkpoints_files_which_the_start_deletes(bool live)
    {
        await using var w = new HavenWorld(TestContext.Current.CancellationToken);
        await w.StartDaemonAsync();
        await w.CreateVmAsync("vm", start: live);
        var now = w.NewModel("now");
        await w.WriteAsync("vm", now, new W(0x11, 0, 2 * M), new W(0x12, 8 * M, M));
        var c1 = await w.CheckpointAsync("vm", "c1");
        Assert.Equal(live, c1.HasSavedState);
        await w.WriteAsync("vm", now, new W(0x22, M, 2 * M));
        var c2 = await w.CheckpointAsync("vm", "c2");
        var m2 = await w.Remember(now, "m2");
        await w.WriteAsync("vm", now, new W(0x33, 2 * M, M), new W(0x34, 8 * M, 4096));

        var vmId = w.VmId("vm");
        var c2Layer = Path.GetFileNameWithoutExtension((await w.ShowAsync("vm")).Disks[0].Chain.Single(l => l.CheckpointName == "c2").Path);
        var removedFiles = new List<string> { Path.Combine("disks", c2Layer + ".qcow2") };
        if (live) removedFiles.Add(Path.Combine("states", c1.Id + ".state"));
        var filesBefore = VmFiles(w, vmId);
        Assert.Subset(filesBefore.ToHashSet(), removedFiles.ToHashSet());

        string atCrash = "";
        var report = await w.CrashDuringAsync("remove.after-commit", async () =>
        {
            var r = await w.Cli("checkpoint", "remove", "vm", "c1");
            Assert.True(r.ExitCode == 1, r.ToString()); // the connection broke mid-request
        }, whileDown: () =>
        {
            // The removal is committed (no journal row, c1 gone) and no file was deleted yet.
            atCrash = w.DumpState();
            Assert.Equal(filesBefore, VmFiles(w, vmId));
            using var store = new HostStore(w.Paths.Database);
            Assert.Empty(store.ListOperations());
            Assert.Equal([c2.Id], store.ListCheckpoints(vmId).Select(c => c.Id));
            Assert.DoesNotContain(store.ListLayers(vmId), l => l.Id == c2Layer);
        });

        Assert.Contains($"repaired 0 operation(s); removed {removedFiles.Count} orphan file(s) (1 layer(s), {(live ? 1 : 0)} memory state(s))", report);
        Assert.Equal(filesBefore.Except(removedFiles), VmFiles(w, vmId));
        // Nothing else changed: the rows and the other files are as the crash left them.
        var removedLines = removedFiles.Select(f => "  " + Path.Combine(vmId, f)).ToHashSet();
        var expected = string.Join('\n', atCrash.Split('\n').Where(l => !removedLines.Contains(l)));
        Assert.Equal(expected, w.DumpState());
        await w.AssertRecoveredAsync("vm", CreateCrashTests.Tree(("c2", null)), "c2",
            new Dictionary<string, DiskModel> { ["c2"] = m2 }, now, live ? VmState.Running : VmState.Off);
    }

    /// <summary>Every file under the VM's folder, relative to it (disks/…, states/…), sorted.</summary>
    private static List<string> VmFiles(HavenWorld w, string vmId)
    {
        var root = Path.Combine(w.Paths.VmsDir, vmId);
        return Directory.GetFiles(root, "*", SearchOption.AllDirectories).Select(f => Path.GetRelativePath(root, f)).Order(StringComparer.Ordinal).ToList();
    }
}
