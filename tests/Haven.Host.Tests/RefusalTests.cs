using Haven.Api;
using Haven.TestSupport;
using Xunit;

namespace Haven.Host.Tests;

/// <summary>Bad requests get one clear error and leave the host exactly as it was.</summary>
public sealed class RefusalTests
{
    private static string Snapshot(TestHost t)
    {
        var files = Directory.GetFiles(t.Host.Paths.VmsDir, "*", SearchOption.AllDirectories).Order();
        var vms = t.Host.Store.ListVms().Select(v => $"{v.Name}:{v.CurrentCheckpointId}");
        var cps = t.Host.Store.ListVms().SelectMany(v => t.Host.Store.ListCheckpoints(v.Id)).Select(c => c.Name);
        return string.Join("\n", files.Concat(vms).Concat(cps));
    }

    private static async Task<HavenException> Refused(TestHost t, ErrorCode code, Func<Task> action)
    {
        var before = Snapshot(t);
        var e = await Assert.ThrowsAsync<HavenException>(action);
        Assert.Equal(code, e.Code);
        Assert.DoesNotContain('\n', e.Message);
        Assert.Equal(before, Snapshot(t));
        return e;
    }

    [Fact]
    public async Task Bad_names_unknown_objects_and_duplicates_are_refused()
    {
        await using var t = new TestHost();
        await t.CreateVmAsync("vm1");
        await t.Host.Checkpoints.CreateAsync("vm1", "cp", t.Ct);

        await Refused(t, ErrorCode.NotFound, () => t.Host.Vms.ShowAsync("nope", t.Ct));
        await Refused(t, ErrorCode.NotFound, () => t.Host.Checkpoints.ApplyAsync("vm1", "nope", new(), t.Ct));
        await Refused(t, ErrorCode.NotFound, () => t.Host.Removal.RemoveAsync("vm1", "nope", false, t.Ct));
        await Refused(t, ErrorCode.Conflict, () => t.CreateVmAsync("vm1"));
        await Refused(t, ErrorCode.Conflict, () => t.Host.Checkpoints.CreateAsync("vm1", "cp", t.Ct));
        foreach (var bad in new[] { "a/b", "..", "x/../y", "a\\b", "", " lead" })
        {
            await Refused(t, ErrorCode.InvalidArgument, () => t.CreateVmAsync(bad));
            await Refused(t, ErrorCode.InvalidArgument, () => t.Host.Checkpoints.CreateAsync("vm1", bad, t.Ct));
            await Refused(t, ErrorCode.InvalidArgument, () => t.Host.Checkpoints.RenameAsync("vm1", "cp", bad, t.Ct));
        }
    }

    [Fact]
    public async Task A_disk_that_is_not_an_image_is_refused()
    {
        await using var t = new TestHost();
        var text = t.Dir.File("notes.txt");
        await File.WriteAllTextAsync(text, "not a disk", t.Ct);
        foreach (var path in new[] { text, t.Dir.Path, t.Dir.File("missing.qcow2") })
        {
            var e = await Refused(t, ErrorCode.InvalidArgument, () => t.Host.Vms.CreateAsync(new VmCreateRequest
            {
                Name = "bad",
                Disks = [new DiskSpec { ImportPath = path }],
            }, t.Ct));
            Assert.Contains(path, e.Message);
        }
        Assert.Empty(Directory.GetDirectories(t.Host.Paths.VmsDir));
    }

    [Fact]
    public async Task Running_vm_cannot_be_started_again_or_removed()
    {
        await using var t = new TestHost();
        await t.CreateVmAsync("vm1");
        await t.Host.Vms.StartAsync("vm1", t.Ct);
        var pid = (await t.Host.Vms.ShowAsync("vm1", t.Ct)).Pid;
        await Refused(t, ErrorCode.Conflict, () => t.Host.Vms.StartAsync("vm1", t.Ct));
        await Refused(t, ErrorCode.Conflict, () => t.Host.Vms.RemoveAsync("vm1", t.Ct));
        Assert.Equal(pid, (await t.Host.Vms.ShowAsync("vm1", t.Ct)).Pid);
    }

    [Fact]
    public async Task ProductionOnly_without_a_guest_agent_is_refused_and_Production_falls_back()
    {
        await using var t = new TestHost();
        await t.CreateVmAsync("vm1", type: CheckpointType.ProductionOnly);
        await t.Host.Vms.StartAsync("vm1", t.Ct);
        var e = await Refused(t, ErrorCode.Conflict, () => t.Host.Checkpoints.CreateAsync("vm1", "x", t.Ct));
        Assert.Contains("ProductionOnly", e.Message);

        await t.Host.Vms.UpdateAsync("vm1", new VmUpdateRequest { CheckpointType = CheckpointType.Production }, t.Ct);
        var r = await t.Host.Checkpoints.CreateAsync("vm1", "x", t.Ct);
        Assert.Equal(CheckpointKind.Standard, r.Checkpoint.Kind);
        Assert.Equal(Consistency.CrashConsistent, r.Checkpoint.Consistency);
        Assert.Contains("guest agent", r.FallbackReason);
        await t.AssertConsistentAsync("vm1");

        await t.Host.Vms.UpdateAsync("vm1", new VmUpdateRequest { CheckpointType = CheckpointType.Disabled }, t.Ct);
        await Refused(t, ErrorCode.Conflict, () => t.Host.Checkpoints.CreateAsync("vm1", "y", t.Ct));
    }
}
