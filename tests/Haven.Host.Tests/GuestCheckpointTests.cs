using Haven.Api;
using Haven.Qemu.GuestAgent;
using Haven.Qemu.Images;
using Haven.TestSupport;
using Xunit;

namespace Haven.Host.Tests;

/// <summary>Checkpoints of the booted test guest (Linux + qemu-ga under TCG).</summary>
public sealed class GuestCheckpointTests
{
    private static async Task<TestHost> BootGuestAsync(CheckpointType type)
    {
        await TestGuest.EnsureBuiltAsync();
        var t = new TestHost();
        await t.Host.Vms.CreateAsync(new VmCreateRequest
        {
            Name = "guest",
            Kernel = TestGuest.Kernel,
            Initrd = TestGuest.Initrd,
            Append = TestGuest.Append,
            Disks = [new DiskSpec { ImportPath = TestGuest.DataDisk }],
            MemoryMiB = 256,
            Accelerator = "tcg",
            CheckpointType = type,
        }, t.Ct);
        await t.Host.Vms.StartAsync("guest", t.Ct);
        await WaitForAgentAsync(t);
        return t;
    }

    private static async Task WaitForAgentAsync(TestHost t)
    {
        var socket = t.Host.Paths.GuestAgentSocket(t.Host.Vms.Find("guest").Id);
        var deadline = DateTime.UtcNow.AddSeconds(120);
        while (true)
        {
            try
            {
                await using var agent = await GuestAgentClient.ConnectAsync(socket, TimeSpan.FromSeconds(3), t.Ct);
                await agent.PingAsync(t.Ct);
                return;
            }
            catch (GuestAgentUnavailableException) when (DateTime.UtcNow < deadline) { await Task.Delay(500, t.Ct); }
        }
    }

    private static async Task<string> FreezeStatusAsync(TestHost t)
    {
        await using var agent = await GuestAgentClient.ConnectAsync(t.Host.Paths.GuestAgentSocket(t.Host.Vms.Find("guest").Id), TimeSpan.FromSeconds(10), t.Ct);
        return await agent.GetFreezeStatusAsync(t.Ct);
    }

    [Fact]
    public async Task Production_checkpoint_freezes_and_thaws_the_guest_and_exports_a_clean_file_system()
    {
        await using var t = await BootGuestAsync(CheckpointType.Production);
        string? statusWhileFrozen = null;
        t.Host.Checkpoints.WhileFrozen = async agent => statusWhileFrozen = await agent.GetFreezeStatusAsync(t.Ct);

        var r = await t.Host.Checkpoints.CreateAsync("guest", "app-consistent", t.Ct);

        Assert.Equal("frozen", statusWhileFrozen);
        Assert.Equal("thawed", await FreezeStatusAsync(t));
        Assert.Equal(CheckpointKind.Production, r.Checkpoint.Kind);
        Assert.Equal(Consistency.ApplicationConsistent, r.Checkpoint.Consistency);
        Assert.Null(r.FallbackReason);
        Assert.True(r.FrozenMilliseconds > 0, "frozen duration is reported");
        TestContext.Current.SendDiagnosticMessage($"frozen for {r.FrozenMilliseconds:0.0} ms, checkpoint took {r.ElapsedMilliseconds:0} ms");

        var raw = t.Dir.File("export.raw");
        await t.Host.Checkpoints.ExportAsync("guest", "app-consistent", new CheckpointExportRequest { Path = raw, Format = "raw" }, t.Ct);
        var fsck = await ProcessRunner.RunAsync("e2fsck", ["-fn", raw], t.Ct, throwOnError: false);
        Assert.True(fsck.ExitCode == 0, "e2fsck -fn on the exported checkpoint: " + fsck.StandardOutput + fsck.StandardError);
        Assert.Contains("hello.txt", (await ProcessRunner.RunAsync("debugfs", ["-R", "ls /", raw], t.Ct)).StandardOutput);
        await t.AssertConsistentAsync("guest");
    }

    [Fact]
    public async Task Standard_checkpoint_apply_resumes_the_running_guest()
    {
        await using var t = await BootGuestAsync(CheckpointType.Standard);
        var r = await t.Host.Checkpoints.CreateAsync("guest", "with-memory", t.Ct);
        Assert.Equal(CheckpointKind.Standard, r.Checkpoint.Kind);
        Assert.True(r.Checkpoint.HasSavedState);

        var applied = await t.Host.Checkpoints.ApplyAsync("guest", "with-memory", new CheckpointApplyRequest(), t.Ct);

        Assert.Equal(VmState.Running, applied.State);
        Assert.Equal(VmState.Running, (await t.Host.Vms.ShowAsync("guest", t.Ct)).State);
        // The agent answers without a boot: the restored guest prints no boot banner on its new serial log.
        await WaitForAgentAsync(t);
        var serial = await File.ReadAllTextAsync(t.Host.Paths.SerialLog(t.Host.Vms.Find("guest").Id), t.Ct);
        Assert.DoesNotContain("GUEST-READY", serial);
        await t.AssertConsistentAsync("guest");
    }

    [Fact]
    public async Task Production_backup_of_the_running_guest_restores_to_a_clean_file_system()
    {
        await using var t = await BootGuestAsync(CheckpointType.Production);
        var repo = t.Dir.File("repo");
        await t.Host.Repositories.InitAsync(new RepositoryInitRequest { Repository = repo, Passphrase = "p" }, t.Ct);
        var r = await t.Host.Backups.BackupAsync("guest", new BackupRequest { Repository = repo, Passphrase = "p" }, t.Ct);
        Assert.Equal(Consistency.ApplicationConsistent, r.Consistency);
        Assert.True(r.FrozenMilliseconds > 0);
        Assert.Equal("thawed", await FreezeStatusAsync(t));

        var raw = t.Dir.File("restored.raw");
        await t.Host.Restores.RestoreAsync(new RestoreRequest { Repository = repo, Passphrase = "p", BackupId = r.BackupId, Disk = 0, TargetPath = raw, Format = "raw" }, t.Ct);
        var fsck = await ProcessRunner.RunAsync("e2fsck", ["-fn", raw], t.Ct, throwOnError: false);
        Assert.True(fsck.ExitCode == 0, "e2fsck -fn on the restored backup: " + fsck.StandardOutput + fsck.StandardError);
        Assert.Contains("hello.txt", (await ProcessRunner.RunAsync("debugfs", ["-R", "ls /", raw], t.Ct)).StandardOutput);
    }
}
