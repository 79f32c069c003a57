using System.CommandLine;
using Haven.Api;
using Haven.Cli.Commands.Backup;
using Haven.Cli.Commands.Repo;

namespace Haven.Cli.Tests;

/// <summary>Binding of s3:// repositories, their settings and credentials, and of repo copy — without a daemon.</summary>
public sealed class S3ParserTests
{
    static (ParseResult Result, Command Command) Parse(IReadOnlyDictionary<string, string>? env, params string[] args)
    {
        var ctx = new CliContext(new CliEnvironment
        {
            Out = TextWriter.Null,
            Error = TextWriter.Null,
            GetEnv = name => env is not null && env.TryGetValue(name, out var value) ? value : null,
        });
        var result = HavenCli.Build(ctx).Parse(args);
        return (result, result.CommandResult.Command);
    }

    static readonly Dictionary<string, string> Aws = new()
    {
        ["HAVEN_PASSPHRASE"] = "p",
        ["AWS_ACCESS_KEY_ID"] = "AKID",
        ["AWS_SECRET_ACCESS_KEY"] = "SECRET",
        ["AWS_ENDPOINT_URL"] = "http://127.0.0.1:7480",
        ["AWS_DEFAULT_REGION"] = "eu-1",
    };

    [Fact]
    public void An_s3_location_is_kept_as_given_and_carries_the_shells_aws_settings()
    {
        var (result, command) = Parse(Aws, "backup", "web", "--repo", "s3://bucket/haven/prod");
        Assert.Empty(result.Errors);
        var request = Assert.IsType<BackupCommand>(command).BuildRequest(result);
        Assert.Equal("s3://bucket/haven/prod", request.Repository);
        Assert.Equal(new S3Options { Endpoint = "http://127.0.0.1:7480", Region = "eu-1", AccessKeyId = "AKID", SecretAccessKey = "SECRET" }, request.S3);
        Assert.DoesNotContain("SECRET", request.S3!.ToString());
    }

    [Fact]
    public void S3_options_beat_the_environment_and_are_refused_for_a_folder()
    {
        var (result, command) = Parse(Aws, "repo", "gc", "--repo", "s3://b", "--s3-endpoint", "https://s3.example", "--s3-region", "x", "--s3-path-style", "false");
        var s3 = Assert.IsType<RepoGcCommand>(command).BuildRequest(result).S3!;
        Assert.Equal(("https://s3.example", "x", (bool?)false), (s3.Endpoint, s3.Region, s3.PathStyle));

        (result, command) = Parse(Aws, "repo", "gc", "--repo", "/srv/repo", "--s3-endpoint", "https://s3.example");
        var e = Assert.Throws<HavenApiException>(() => ((RepoGcCommand)command).BuildRequest(result));
        Assert.Contains("only to an s3:// repository", e.Message);

        (result, command) = Parse(Aws, "repo", "gc", "--repo", "/srv/repo");
        Assert.Null(((RepoGcCommand)command).BuildRequest(result).S3);
    }

    [Fact]
    public void Repo_init_binds_immutability_and_refuses_an_unknown_mode()
    {
        var (result, command) = Parse(Aws, "repo", "init", "--repo", "s3://b/p", "--immutable-days", "30", "--immutable-mode", "compliance");
        Assert.Empty(result.Errors);
        var request = Assert.IsType<RepoInitCommand>(command).BuildRequest(result);
        Assert.Equal((30, "compliance"), (request.ImmutableDays, request.ImmutableMode));

        (result, _) = Parse(Aws, "repo", "init", "--repo", "s3://b/p", "--immutable-days", "30", "--immutable-mode", "forever");
        Assert.NotEmpty(result.Errors);
    }

    [Fact]
    public void Repo_copy_needs_exactly_one_selection_and_a_target_passphrase()
    {
        var env = new Dictionary<string, string>(Aws) { ["HAVEN_TARGET_PASSPHRASE"] = "q" };
        var (result, command) = Parse(env, "repo", "copy", "--repo", "/srv/repo", "--to", "s3://b/copy", "--vm", "web");
        Assert.Empty(result.Errors);
        var request = Assert.IsType<RepoCopyCommand>(command).BuildRequest(result);
        Assert.Equal(("/srv/repo", "s3://b/copy", "q", "web"), (request.Repository, request.Target, request.TargetPassphrase, request.Vm));
        Assert.Null(request.S3);
        Assert.Equal("AKID", request.TargetS3!.AccessKeyId);

        (result, _) = Parse(env, "repo", "copy", "--repo", "/srv/repo", "--to", "/srv/other", "--vm", "web", "--all");
        Assert.Contains(result.Errors, e => e.Message.Contains("exactly one of"));
        (result, _) = Parse(env, "repo", "copy", "--repo", "/srv/repo", "--to", "/srv/other");
        Assert.Contains(result.Errors, e => e.Message.Contains("exactly one of"));
        (result, _) = Parse(Aws, "repo", "copy", "--repo", "/srv/repo", "--to", "/srv/other", "--all");
        Assert.Contains(result.Errors, e => e.Message.Contains("no target passphrase"));
    }
}
