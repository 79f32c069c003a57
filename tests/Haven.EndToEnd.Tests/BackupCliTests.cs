using System.Text.Json;
using Haven.Api;
using Xunit;

namespace Haven.EndToEnd.Tests;

/// <summary>The backup commands end to end through the CLI and a real havend.</summary>
public sealed class BackupCliTests
{
    private const long M = 1 << 20;

    [Fact]
    public async Task Repo_backup_list_restore_job_verify_prune_gc_through_the_cli()
    {
        await using var w = new HavenWorld(TestContext.Current.CancellationToken);
        await w.StartDaemonAsync();
        await w.CreateVmAsync("vm", start: true);
        var repo = w.Dir.File("repo");
        var pass = w.Dir.File("pass");
        await File.WriteAllTextAsync(pass, "a passphrase\n", TestContext.Current.CancellationToken);
        string[] r = ["--repo", repo, "--passphrase-file", pass];

        await w.OkAsync(["repo", "init", .. r]);
        var again = await w.Cli(["repo", "init", .. r]);
        Assert.Equal(4, again.ExitCode); // already a repository

        var now = w.NewModel("now");
        await w.WriteAsync("vm", now, new W(0x51, 0, 3 * M));
        var full = await w.JsonAsync<BackupResult>(["backup", "vm", .. r]);
        Assert.Equal("full", full.Mode);
        var human = await w.OkAsync(["backup", "vm", .. r]);
        Assert.Contains("incremental", human);

        var list = await w.JsonAsync<List<BackupInfo>>(["backups", "list", .. r]);
        Assert.Equal(2, list.Count);

        var restored = await w.JsonAsync<RestoreResult>(["restore", full.BackupId, .. r, "--name", "vm-copy"]);
        Assert.Equal("vm-copy", restored.Vm);
        Assert.True(await now.EqualsImageAsync((await w.ShowAsync("vm-copy")).Disks[0].Chain[0].Path));

        await w.OkAsync(["job", "create", "nightly", "--vm", "vm", .. r, "--schedule", "0 2 * * *", "--keep-last", "1"]);
        var run = await w.JsonAsync<JobRunResult>("job", "run", "nightly");
        Assert.Empty(run.Errors);
        Assert.Equal(2, run.PrunedBackups);
        var jobs = await w.JsonAsync<List<JobInfo>>("job", "list");
        Assert.Equal("success", Assert.Single(jobs).LastStatus);

        var verify = await w.JsonAsync<JsonElement>(["repo", "verify", "--read-data", .. r]);
        Assert.True(verify.GetProperty("isHealthy").GetBoolean(), verify.ToString());
        await w.JsonAsync<JsonElement>(["repo", "gc", .. r]);
        Assert.Single(await w.JsonAsync<List<BackupInfo>>(["backups", "list", .. r]));
        var prune = await w.Cli(["repo", "prune", .. r]);
        Assert.Equal(2, prune.ExitCode); // no keep rule: refused rather than deleting everything

        var wrong = w.Dir.File("wrong");
        await File.WriteAllTextAsync(wrong, "not it\n", TestContext.Current.CancellationToken);
        var refused = await w.Cli("backup", "vm", "--repo", repo, "--passphrase-file", wrong);
        Assert.Equal(2, refused.ExitCode);
        Assert.Contains("passphrase", Assert.Single(refused.StderrLines));
    }
}
