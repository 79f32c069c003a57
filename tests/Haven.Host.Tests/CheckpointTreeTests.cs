using Haven.Api;
using Haven.TestSupport;
using Xunit;

namespace Haven.Host.Tests;

/// <summary>
/// Checkpoint create / apply / remove / remove-subtree on real QEMU and qemu-img, with the VM off and
/// running. After every step each remaining checkpoint and the current state must read back exactly
/// as the model says; the scenario walks every merge mode (delete, intermediate commit, active commit,
/// stream into several children from the root).
/// </summary>
public sealed class CheckpointTreeTests
{
    private const long M = 1 << 20;

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Checkpoint_tree_keeps_every_point_exact(bool live)
    {
        await using var t = new TestHost();
        await t.CreateVmAsync("vm1");
        if (live) await t.Host.Vms.StartAsync("vm1", t.Ct);
        var now = new DiskModel(t.Dir.File("now.raw"), 32 * M);

        await t.WriteAsync("vm1", now, 0x11, 0, M);
        await Create(t, "c1");
        var m1 = await now.SnapshotAsync(t.Dir.File("m1.raw"));
        await t.WriteAsync("vm1", now, 0x22, M, M);
        await t.WriteAsync("vm1", now, 0x23, 0, 64 * 1024);
        await Create(t, "c2");
        var m2 = await now.SnapshotAsync(t.Dir.File("m2.raw"));
        await t.WriteAsync("vm1", now, 0x33, 2 * M, M);
        await Create(t, "c3");
        var m3 = await now.SnapshotAsync(t.Dir.File("m3.raw"));
        await t.WriteAsync("vm1", now, 0x44, 3 * M, M);

        await t.AssertCheckpointAsync("vm1", "c1", m1);
        await t.AssertCheckpointAsync("vm1", "c2", m2);
        await t.AssertCheckpointAsync("vm1", "c3", m3);
        await t.AssertCurrentAsync("vm1", now);
        await t.AssertConsistentAsync("vm1");

        // c2's layer has one child (c3's layer): intermediate commit.
        await t.Host.Removal.RemoveAsync("vm1", "c2", subtree: false, t.Ct);
        await t.AssertCheckpointAsync("vm1", "c1", m1);
        await t.AssertCheckpointAsync("vm1", "c3", m3);
        await t.AssertCurrentAsync("vm1", now);
        await t.AssertConsistentAsync("vm1");
        Assert.Equal("c1", t.Host.Checkpoints.List("vm1").Single(c => c.Name == "c3").Parent);

        // c3 is the current checkpoint: its only child is the writable layer (active commit when live).
        await t.Host.Removal.RemoveAsync("vm1", "c3", subtree: false, t.Ct);
        await t.AssertCheckpointAsync("vm1", "c1", m1);
        await t.AssertCurrentAsync("vm1", now);
        await t.AssertConsistentAsync("vm1");
        Assert.Equal("c1", (await t.Host.Vms.ShowAsync("vm1", t.Ct)).CurrentCheckpoint);
        Assert.Equal(live ? VmState.Running : VmState.Off, (await t.Host.Vms.ShowAsync("vm1", t.Ct)).State);

        await Create(t, "c5");
        var m5 = await now.SnapshotAsync(t.Dir.File("m5.raw"));

        // Apply c1. Taken off, it is a production checkpoint and the VM stays off. Taken live from a VM
        // with no guest agent, it fell back to Standard with memory state, and the VM resumes running.
        var c1 = t.Host.Checkpoints.List("vm1").Single(c => c.Name == "c1");
        Assert.Equal(live ? CheckpointKind.Standard : CheckpointKind.Production, c1.Kind);
        Assert.Equal(live, c1.HasSavedState);
        var applied = await t.Host.Checkpoints.ApplyAsync("vm1", "c1", new CheckpointApplyRequest(), t.Ct);
        Assert.Equal(live ? VmState.Running : VmState.Off, applied.State);
        Assert.Equal(live, t.IsRunning("vm1"));
        now = await m1.SnapshotAsync(t.Dir.File("now2.raw"));
        await t.AssertCurrentAsync("vm1", now);
        await t.WriteAsync("vm1", now, 0x55, 4 * M, M);
        await Create(t, "c4");
        var m4 = await now.SnapshotAsync(t.Dir.File("m4.raw"));
        await t.WriteAsync("vm1", now, 0x66, 5 * M, M);

        // c1 is the root and now has two children (c5's and c4's layers): its data streams into both.
        await t.Host.Removal.RemoveAsync("vm1", "c1", subtree: false, t.Ct);
        await t.AssertCheckpointAsync("vm1", "c5", m5);
        await t.AssertCheckpointAsync("vm1", "c4", m4);
        await t.AssertCurrentAsync("vm1", now);
        await t.AssertConsistentAsync("vm1");

        // Subtree removal of the current branch keeps the current data; the other branch stays.
        var removed = await t.Host.Removal.RemoveAsync("vm1", "c4", subtree: true, t.Ct);
        Assert.Equal(["c4"], removed.Removed);
        await t.AssertCheckpointAsync("vm1", "c5", m5);
        await t.AssertCurrentAsync("vm1", now);
        await t.AssertConsistentAsync("vm1");

        await t.Host.Removal.RemoveAsync("vm1", "c5", subtree: false, t.Ct);
        Assert.Empty(t.Host.Checkpoints.List("vm1"));
        await t.AssertCurrentAsync("vm1", now);
        await t.AssertConsistentAsync("vm1");
        Assert.Single((await t.Host.Vms.ShowAsync("vm1", t.Ct)).Disks[0].Chain);
    }

    [Fact]
    public async Task Remove_subtree_removes_a_checkpoint_and_all_below_it()
    {
        await using var t = new TestHost();
        await t.CreateVmAsync("vm1");
        var now = new DiskModel(t.Dir.File("now.raw"), 32 * M);
        await t.WriteAsync("vm1", now, 0x01, 0, M);
        await Create(t, "a");
        var ma = await now.SnapshotAsync(t.Dir.File("a.raw"));
        await t.WriteAsync("vm1", now, 0x02, M, M);
        await Create(t, "b");
        await t.WriteAsync("vm1", now, 0x03, 2 * M, M);
        await Create(t, "c");
        await t.Host.Checkpoints.ApplyAsync("vm1", "b", new CheckpointApplyRequest(), t.Ct);
        await Create(t, "b2");
        now = await ma.SnapshotAsync(t.Dir.File("n2.raw"));
        await t.Host.Checkpoints.ApplyAsync("vm1", "a", new CheckpointApplyRequest(), t.Ct);
        await t.WriteAsync("vm1", now, 0x09, 6 * M, M);

        var r = await t.Host.Removal.RemoveAsync("vm1", "b", subtree: true, t.Ct);
        Assert.Equal(["c", "b2", "b"], r.Removed);
        Assert.Equal(["a"], t.Host.Checkpoints.List("vm1").Select(c => c.Name));
        await t.AssertCheckpointAsync("vm1", "a", ma);
        await t.AssertCurrentAsync("vm1", now);
        await t.AssertConsistentAsync("vm1");
    }

    [Fact]
    public async Task Apply_with_checkpoint_first_keeps_the_current_state()
    {
        await using var t = new TestHost();
        await t.CreateVmAsync("vm1");
        var now = new DiskModel(t.Dir.File("now.raw"), 32 * M);
        await Create(t, "empty");
        await t.WriteAsync("vm1", now, 0x42, 0, 2 * M);
        var r = await t.Host.Checkpoints.ApplyAsync("vm1", "empty", new CheckpointApplyRequest { CreateCheckpointFirst = true, NewCheckpointName = "before" }, t.Ct);
        Assert.Equal("before", r.CreatedFirst!.Name);
        await t.AssertCheckpointAsync("vm1", "before", now);
        await t.AssertCurrentAsync("vm1", new DiskModel(t.Dir.File("zero.raw"), 32 * M));
        await t.AssertConsistentAsync("vm1");
    }

    private static Task Create(TestHost t, string name) => t.Host.Checkpoints.CreateAsync("vm1", name, t.Ct);
}
