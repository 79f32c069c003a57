using System.Text.Json;
using Haven.Api;
using Haven.TestSupport;

namespace Haven.EndToEnd.Tests;

/// <summary>
/// One havend, one running VM (its dirty bitmaps make the next backup incremental) and two repositories, shared by the
/// maintenance crash tests (they run one after another and each leaves the world clean).
/// </summary>
public sealed class MaintenanceWorld : IAsyncLifetime
{
    public HavenWorld W { get; } = new();
    public string Repo => W.Dir.File("repo");
    public string Target => W.Dir.File("target");
    public string Pass => W.Dir.File("pass");
    public DiskModel Now { get; private set; } = null!;
    private byte _pattern = 0x10;

    public async ValueTask InitializeAsync()
    {
        await W.StartDaemonAsync();
        await W.CreateVmAsync("vm", start: true);
        await File.WriteAllTextAsync(Pass, "a passphrase\n");
        await W.OkAsync("repo", "init", "--repo", Repo, "--passphrase-file", Pass);
        await W.OkAsync("repo", "init", "--repo", Target, "--passphrase-file", Pass);
        Now = W.NewModel("now");
    }

    /// <summary>A guest write, then a backup of it; returns the backup.</summary>
    public async Task<BackupResult> BackupAsync()
    {
        _pattern++;
        await W.WriteAsync("vm", Now, new W(_pattern, 0, HavenWorld.M));
        return await W.JsonAsync<BackupResult>("backup", "vm", "--repo", Repo, "--passphrase-file", Pass);
    }

    public async ValueTask DisposeAsync() => await W.DisposeAsync();
}

/// <summary>
/// kill -9 of havend at every step of repository prune, GC and copy. These hold repository locks, not journal
/// rows: after the restart nothing blocks the next prune/GC/copy (the dead holder's locks are stale at once),
/// every backup the operation did not remove still restores, verify is healthy, no temporary object is left,
/// and the next backup is incremental.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class MaintenanceCrashTests(MaintenanceWorld f) : IClassFixture<MaintenanceWorld>
{
    private HavenWorld W => f.W;

    [Theory]
    [InlineData("prune.after-lock")]
    [InlineData("prune.after-delete")]
    [InlineData("gc.after-lock")]
    [InlineData("gc.after-announce")]
    [InlineData("gc.after-delete")]
    [InlineData("copy.after-lock")]
    [InlineData("copy.after-chunks")]
    [InlineData("copy.after-commit")]
    public async Task Maintenance_killed_at_a_step_leaves_the_repository_usable_and_loses_no_kept_backup(string point)
    {
        var kind = point[..point.IndexOf('.')];
        // Three backups, so prune has something to remove; then whatever the step needs to be reached.
        var backups = new List<BackupResult> { await f.BackupAsync(), await f.BackupAsync(), await f.BackupAsync() };
        var latest = await W.Remember(f.Now, "latest-" + point);
        string[] command;
        switch (kind)
        {
            case "prune":
                command = ["repo", "prune", "--repo", f.Repo, "--passphrase-file", f.Pass, "--keep-last", "1"];
                break;
            case "gc":
                // Something to delete: prune first, then age the chunks past the grace period (as if an hour went by).
                await W.OkAsync("repo", "prune", "--repo", f.Repo, "--passphrase-file", f.Pass, "--keep-last", "1");
                AgeChunks(f.Repo);
                command = ["repo", "gc", "--repo", f.Repo, "--passphrase-file", f.Pass];
                break;
            default:
                command = ["repo", "copy", "--repo", f.Repo, "--passphrase-file", f.Pass, "--to", f.Target, "--to-passphrase-file", f.Pass, "--backup", backups[^1].BackupId];
                break;
        }

        var report = await W.CrashDuringAsync(point, async () =>
        {
            var r = await W.Cli(command);
            Assert.True(r.ExitCode != 0 && r.Stdout == "", $"the command should fail when havend dies under it\n{r}");
        });
        TestContext.Current.TestOutputHelper?.WriteLine(report);

        // Nothing lost: the newest backup (kept by every step) restores exactly; the repositories verify.
        await AssertRestoresAsync(f.Repo, backups[^1].BackupId, latest);
        await AssertHealthyAsync(f.Repo);
        await AssertHealthyAsync(f.Target);

        // The next operation of the same kind works (no lock left blocking it) and finishes what was cut off.
        switch (kind)
        {
            case "prune":
                await W.OkAsync("repo", "prune", "--repo", f.Repo, "--passphrase-file", f.Pass, "--keep-last", "1");
                var left = await W.JsonAsync<List<BackupInfo>>("backups", "list", "--repo", f.Repo, "--passphrase-file", f.Pass);
                Assert.Equal(backups[^1].BackupId, Assert.Single(left).Id);
                break;
            case "gc":
                var gc = await W.JsonAsync<JsonElement>("repo", "gc", "--repo", f.Repo, "--passphrase-file", f.Pass);
                TestContext.Current.TestOutputHelper?.WriteLine(gc.ToString());
                break;
            default:
                var copy = await W.JsonAsync<RepositoryCopyResult>(command);
                var copied = Assert.Single(copy.Backups);
                Assert.Equal(point == "copy.after-commit", copied.AlreadyPresent); // a committed copy is found, not made twice
                await AssertRestoresAsync(f.Target, copied.TargetId, latest);
                await W.OkAsync("repo", "gc", "--repo", f.Target, "--passphrase-file", f.Pass); // the dead copy's writer lock does not block it
                break;
        }
        await AssertHealthyAsync(f.Repo);
        await AssertHealthyAsync(f.Target);
        AssertNoLeftovers(f.Repo);
        AssertNoLeftovers(f.Target);

        // The next backup builds on the last one: the interrupted maintenance cost no change tracking.
        var next = await f.BackupAsync();
        Assert.Equal("incremental", next.Mode);
        await AssertRestoresAsync(f.Repo, next.BackupId, f.Now);
    }

    private async Task AssertRestoresAsync(string repo, string backupId, DiskModel model)
    {
        var target = W.Dir.File($"r-{Guid.NewGuid():N}.raw");
        await W.OkAsync("restore", backupId, "--repo", repo, "--passphrase-file", f.Pass, "--disk", "0", "--to", target, "--format", "raw");
        Assert.True(await model.EqualsImageAsync(target), $"backup {backupId} of {repo} does not restore to the expected disk");
        File.Delete(target);
    }

    private async Task AssertHealthyAsync(string repo)
    {
        var r = await W.Cli("repo", "verify", "--repo", repo, "--passphrase-file", f.Pass);
        Assert.True(r.ExitCode == 0, $"{repo} does not verify after the crash\n{r}");
    }

    /// <summary>No lock is left once the next operation ran, and no temporary file of an unfinished write.</summary>
    private static void AssertNoLeftovers(string repo)
    {
        var locks = Path.Combine(repo, "locks");
        Assert.Empty(Directory.Exists(locks) ? Directory.GetFiles(locks, "*", SearchOption.AllDirectories) : []);
        Assert.Empty(Directory.GetFiles(repo, ".tmp-*", SearchOption.AllDirectories));
    }

    private static void AgeChunks(string repo)
    {
        var old = DateTime.UtcNow.AddHours(-2);
        foreach (var file in Directory.GetFiles(Path.Combine(repo, "chunks"), "*", SearchOption.AllDirectories))
            File.SetLastWriteTimeUtc(file, old);
    }
}
