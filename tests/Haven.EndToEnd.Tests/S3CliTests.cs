using System.Text.Json;
using Haven.Api;
using Haven.TestSupport;
using Xunit;

namespace Haven.EndToEnd.Tests;

/// <summary>
/// An s3:// repository on a real Ceph RGW through the CLI and havend. havend has no AWS settings of its own
/// here: the user's AWS_* variables travel from the CLI with each request.
/// </summary>
public sealed class S3CliTests
{
    private const long M = 1 << 20;

    [Fact]
    public async Task Init_backup_list_verify_copy_and_restore_with_the_users_aws_environment()
    {
        var ct = TestContext.Current.CancellationToken;
        var rgw = await CephRgw.GetAsync();
        await using var w = new HavenWorld(ct);
        await w.StartDaemonAsync();
        await w.CreateVmAsync("vm", start: true);
        var pass = w.Dir.File("pass");
        await File.WriteAllTextAsync(pass, "s3 passphrase\n", ct);
        var repo = $"s3://{rgw.NewBucketName()}/haven/prod";
        string[] r = ["--repo", repo, "--passphrase-file", pass];

        // Without credentials anywhere: one clear line, not a stack trace.
        var bare = await w.Cli(["repo", "init", .. r, "--s3-endpoint", rgw.Endpoint]);
        Assert.NotEqual(0, bare.ExitCode);
        Assert.Contains("credentials", Assert.Single(bare.StderrLines));

        w.CliEnvironment["AWS_ENDPOINT_URL"] = rgw.Endpoint;
        w.CliEnvironment["AWS_ACCESS_KEY_ID"] = rgw.AccessKey;
        w.CliEnvironment["AWS_SECRET_ACCESS_KEY"] = "wrong-secret-key-00000000000000000000000";
        var wrong = await w.Cli(["repo", "init", .. r]);
        Assert.Equal(2, wrong.ExitCode);
        Assert.Contains("credentials", Assert.Single(wrong.StderrLines));
        Assert.DoesNotContain("wrong-secret", wrong.Stderr);

        w.CliEnvironment["AWS_SECRET_ACCESS_KEY"] = rgw.SecretKey;
        var init = await w.OkAsync(["repo", "init", .. r]);
        Assert.Contains(repo, init);
        var now = w.NewModel("now");
        await w.WriteAsync("vm", now, new W(0x71, 0, 3 * M), new W(0x72, 9 * M, M));
        var full = await w.JsonAsync<BackupResult>(["backup", "vm", .. r]);
        Assert.Equal("full", full.Mode);
        Assert.Equal(full.BackupId, Assert.Single(await w.JsonAsync<List<BackupInfo>>(["backups", "list", .. r])).Id);
        var verify = await w.JsonAsync<JsonElement>(["repo", "verify", "--read-data", .. r]);
        Assert.True(verify.GetProperty("isHealthy").GetBoolean(), verify.ToString());

        // Copy to a folder and restore from there: the copy is a complete backup of its own.
        var local = w.Dir.File("local");
        var localPass = w.Dir.File("local-pass");
        await File.WriteAllTextAsync(localPass, "local passphrase\n", ct);
        await w.OkAsync("repo", "init", "--repo", local, "--passphrase-file", localPass);
        var copy = await w.JsonAsync<RepositoryCopyResult>(["repo", "copy", .. r, "--to", local, "--to-passphrase-file", localPass, "--all"]);
        var copied = Assert.Single(copy.Backups);
        Assert.Equal(full.BackupId, copied.SourceId);
        var target = w.Dir.File("restored.raw");
        await w.OkAsync("restore", copied.TargetId, "--repo", local, "--passphrase-file", localPass, "--disk", "0", "--to", target, "--format", "raw");
        Assert.True(await now.EqualsImageAsync(target));
    }
}
