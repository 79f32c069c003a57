using Haven.Api;
using Haven.Qemu.Images;
using Xunit;

namespace Haven.EndToEnd.Tests;

/// <summary>
/// kill -9 of havend inside a backup: after the restart the point-in-time view (fleece nodes, jobs,
/// exports, files, qemu-nbd) is gone, no journal entry is left, the VM still runs, and the next backup
/// works and restores exactly — no change was lost to the interrupted run.
/// </summary>
public sealed class BackupCrashTests
{
    private const long M = 1 << 20;

    private static async Task<(HavenWorld W, string Repo, string Pass)> SetUpAsync(bool live)
    {
        var w = new HavenWorld(TestContext.Current.CancellationToken);
        await w.StartDaemonAsync();
        await w.CreateVmAsync("vm", start: live);
        var repo = w.Dir.File("repo");
        var pass = w.Dir.File("pass");
        await File.WriteAllTextAsync(pass, "a passphrase\n");
        await w.OkAsync("repo", "init", "--repo", repo, "--passphrase-file", pass);
        return (w, repo, pass);
    }

    private static async Task AssertRestoresAsync(HavenWorld w, string repo, string pass, string backupId, Haven.TestSupport.DiskModel model)
    {
        var target = w.Dir.File($"r-{Guid.NewGuid():N}.raw");
        await w.OkAsync("restore", backupId, "--repo", repo, "--passphrase-file", pass, "--disk", "0", "--to", target, "--format", "raw");
        Assert.True(await model.EqualsImageAsync(target), $"backup {backupId} does not restore to the expected disk");
    }

    private static async Task AssertNoLeftoversAsync(HavenWorld w, bool live)
    {
        Assert.Empty(Directory.GetFiles(w.Paths.RunDir, "*.fleece.qcow2"));
        Assert.Empty(HavenWorld.QemuNbdProcesses(w.Data));
        if (live)
        {
            Assert.True(w.IsRunning("vm"));
            await w.WithQmpAsync("vm", async qmp =>
            {
                Assert.Equal(0, (await qmp.ExecuteAsync("query-block-jobs")).GetArrayLength());
                Assert.Equal(0, (await qmp.ExecuteAsync("query-block-exports")).GetArrayLength());
                foreach (var n in (await qmp.ExecuteAsync("query-named-block-nodes", new { flat = true })).EnumerateArray())
                    Assert.DoesNotContain("fleece", n.GetProperty("node-name").GetString());
            });
        }
        await w.StopDaemonAsync();
        using (var store = new Haven.Host.State.HostStore(w.Paths.Database)) Assert.Empty(store.ListOperations());
        await w.StartDaemonAsync();
    }

    [Theory]
    [InlineData("backup.before-point-in-time", true)]
    [InlineData("backup.after-point-in-time", true)]
    [InlineData("backup.after-disk", true)]
    [InlineData("backup.after-manifest", true)]
    [InlineData("backup.after-point-in-time", false)]
    public async Task Backup_killed_midway_leaves_nothing_behind_and_the_next_backup_misses_no_change(string point, bool live)
    {
        var (w, repo, pass) = await SetUpAsync(live);
        await using var _ = w;
        var now = w.NewModel("now");
        await w.WriteAsync("vm", now, new W(0x11, 0, 2 * M));
        var first = await w.JsonAsync<BackupResult>("backup", "vm", "--repo", repo, "--passphrase-file", pass);
        Assert.Equal("full", first.Mode);

        await w.WriteAsync("vm", now, new W(0x22, 4 * M, M));
        await w.CrashAsync(point, "backup", "vm", "--repo", repo, "--passphrase-file", pass);
        await AssertNoLeftoversAsync(w, live);

        await w.WriteAsync("vm", now, new W(0x33, 8 * M, M));
        var next = await w.JsonAsync<BackupResult>("backup", "vm", "--repo", repo, "--passphrase-file", pass);
        if (live)
        {
            // Tracking was handed back to the first backup's bitmap: both changes are in this incremental.
            Assert.Equal("incremental", next.Mode);
            Assert.Equal(2, next.ChunksRead);
        }
        await AssertRestoresAsync(w, repo, pass, next.BackupId, now);
        await AssertNoLeftoversAsync(w, live);
    }
}
