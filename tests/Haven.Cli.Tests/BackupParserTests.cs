using System.CommandLine;
using Haven.Api;
using Haven.Cli.Commands.Backup;
using Haven.Cli.Commands.Repo;
using Haven.Cli.Commands.Restore;

namespace Haven.Cli.Tests;

/// <summary>Binding of the backup commands (repo, backup, backups, restore), without a daemon.</summary>
public sealed class BackupParserTests : IDisposable
{
    readonly string folder = Directory.CreateTempSubdirectory("haven-cli-pass-").FullName;

    public void Dispose() => Directory.Delete(folder, recursive: true);

    static (ParseResult Result, T Command) Parse<T>(IReadOnlyDictionary<string, string>? env, params string[] args) where T : Command
    {
        var ctx = new CliContext(new CliEnvironment
        {
            Out = TextWriter.Null,
            Error = TextWriter.Null,
            GetEnv = name => env is not null && env.TryGetValue(name, out var value) ? value : null,
        });
        var result = HavenCli.Build(ctx).Parse(args);
        Assert.Empty(result.Errors);
        return (result, Assert.IsType<T>(result.CommandResult.Command));
    }

    static (ParseResult Result, T Command) Parse<T>(params string[] args) where T : Command => Parse<T>(null, args);

    string PassphraseFile(string content)
    {
        var path = Path.Combine(folder, "pass");
        File.WriteAllText(path, content);
        return path;
    }

    [Fact]
    public void RepoIsMadeAbsoluteAndPassphraseIsTheFilesFirstLine()
    {
        var file = PassphraseFile("correct horse battery staple\r\nsecond line\n");
        var (result, command) = Parse<BackupCommand>("backup", "web", "--repo", "backups/repo1", "--passphrase-file", file);

        Assert.Equal(new BackupRequest { Repository = Path.GetFullPath("backups/repo1"), Passphrase = "correct horse battery staple" },
            command.BuildRequest(result));
        Assert.True(Path.IsPathRooted(command.BuildRequest(result).Repository));
    }

    [Fact]
    public void RepoAndPassphraseFallBackToTheEnvironment()
    {
        var env = new Dictionary<string, string> { ["HAVEN_REPO"] = "rel/repo", ["HAVEN_PASSPHRASE"] = "from env" };
        var (result, command) = Parse<BackupListCommand>(env, "backups", "list");

        Assert.Equal(new RepositoryRef { Repository = Path.GetFullPath("rel/repo"), Passphrase = "from env" }, command.BuildRequest(result));
    }

    [Fact]
    public void OptionsBeatTheEnvironment()
    {
        var env = new Dictionary<string, string> { ["HAVEN_REPO"] = "/env/repo", ["HAVEN_PASSPHRASE"] = "from env" };
        var file = PassphraseFile("from file");
        var (result, command) = Parse<RepoGcCommand>(env, "repo", "gc", "--repo", "/opt/repo", "--passphrase-file", file);

        Assert.Equal(new RepositoryRef { Repository = "/opt/repo", Passphrase = "from file" }, command.BuildRequest(result));
    }

    [Fact]
    public void PassphraseFileWithoutNewlineWorks()
    {
        var file = PassphraseFile("  spaces are kept  ");
        var (result, command) = Parse<RepoVerifyCommand>("repo", "verify", "--repo", "/r", "--passphrase-file", file, "--read-data");

        var request = command.BuildRequest(result);
        Assert.Equal("  spaces are kept  ", request.Passphrase);
        Assert.True(request.ReadData);
    }

    [Fact]
    public void RepoInitParsesTheChunkSize()
    {
        var env = new Dictionary<string, string> { ["HAVEN_REPO"] = "/r", ["HAVEN_PASSPHRASE"] = "p" };
        var (result, command) = Parse<RepoInitCommand>(env, "repo", "init", "--chunk-size", "4M");
        Assert.Equal(4 << 20, command.BuildRequest(result).ChunkSize);

        (result, command) = Parse<RepoInitCommand>(env, "repo", "init");
        Assert.Null(command.BuildRequest(result).ChunkSize); // havend's default
    }

    [Fact]
    public void RepoPruneBindsEveryRule()
    {
        var env = new Dictionary<string, string> { ["HAVEN_REPO"] = "/r", ["HAVEN_PASSPHRASE"] = "p" };
        var (result, command) = Parse<RepoPruneCommand>(env, "repo", "prune", "--keep-last", "3", "--keep-hourly", "24", "--keep-daily", "7",
            "--keep-weekly", "4", "--keep-monthly", "12", "--keep-yearly", "unlimited", "--dry-run");

        Assert.Equal(new RepositoryPruneRequest
        {
            Repository = "/r",
            Passphrase = "p",
            KeepLast = 3,
            KeepHourly = 24,
            KeepDaily = 7,
            KeepWeekly = 4,
            KeepMonthly = 12,
            KeepYearly = -1,
            DryRun = true,
        }, command.BuildRequest(result));

        (result, command) = Parse<RepoPruneCommand>(env, "repo", "prune", "--keep-daily", "7", "--keep-last", "0");
        var request = command.BuildRequest(result);
        Assert.Equal((0, 7, 0, false), (request.KeepLast, request.KeepDaily, request.KeepYearly, request.DryRun));
    }

    [Fact]
    public void RestoreAsANewVm()
    {
        var env = new Dictionary<string, string> { ["HAVEN_REPO"] = "/r", ["HAVEN_PASSPHRASE"] = "p" };
        var (result, command) = Parse<RestoreCommand>(env, "restore", "b1", "--name", "web2");

        Assert.Equal(new RestoreRequest { Repository = "/r", Passphrase = "p", BackupId = "b1", NewName = "web2" }, command.BuildRequest(result));
    }

    [Fact]
    public void RestoreInPlace()
    {
        var env = new Dictionary<string, string> { ["HAVEN_REPO"] = "/r", ["HAVEN_PASSPHRASE"] = "p" };
        var (result, command) = Parse<RestoreCommand>(env, "restore", "b1", "--in-place");

        Assert.Equal(new RestoreRequest { Repository = "/r", Passphrase = "p", BackupId = "b1", InPlace = true }, command.BuildRequest(result));
    }

    [Fact]
    public void RestoreOneDiskMakesTheTargetAbsolute()
    {
        var env = new Dictionary<string, string> { ["HAVEN_REPO"] = "/r", ["HAVEN_PASSPHRASE"] = "p" };
        var (result, command) = Parse<RestoreCommand>(env, "restore", "b1", "--disk", "1", "--to", "out/disk1.raw", "--format", "raw");

        Assert.Equal(new RestoreRequest
        {
            Repository = "/r",
            Passphrase = "p",
            BackupId = "b1",
            Disk = 1,
            TargetPath = Path.GetFullPath("out/disk1.raw"),
            Format = "raw",
        }, command.BuildRequest(result));

        (result, command) = Parse<RestoreCommand>(env, "restore", "b1", "--disk", "0", "--to", "/tmp/d0.qcow2");
        Assert.Equal(("/tmp/d0.qcow2", "qcow2", 0), (command.BuildRequest(result).TargetPath, command.BuildRequest(result).Format, command.BuildRequest(result).Disk));
    }

    [Theory]
    [InlineData("restore", "b1")]                                             // no mode
    [InlineData("restore", "b1", "--name", "x", "--in-place")]
    [InlineData("restore", "b1", "--name", "x", "--disk", "0", "--to", "/t")]
    [InlineData("restore", "b1", "--in-place", "--disk", "0", "--to", "/t")]
    [InlineData("restore", "b1", "--disk", "0")]                              // --disk without --to
    [InlineData("restore", "b1", "--to", "/t")]                               // --to without --disk
    [InlineData("restore", "b1", "--disk", "-1", "--to", "/t")]
    [InlineData("restore", "b1", "--disk", "0", "--to", "/t", "--format", "vmdk")]
    [InlineData("restore", "b1", "--name", "x", "--format", "raw")]           // --format only with --disk
    [InlineData("restore", "--name", "x")]                                    // no BACKUP_ID
    [InlineData("repo", "prune")]                                             // no keep rule
    [InlineData("repo", "prune", "--keep-last", "0")]                         // a rule that keeps nothing
    [InlineData("repo", "prune", "--keep-daily", "many")]
    [InlineData("repo", "prune", "--keep-daily", "-2")]
    [InlineData("repo", "init", "--chunk-size", "12Q")]
    [InlineData("repo", "init", "--chunk-size", "4T")]
    [InlineData("backup")]                                                    // no VM
    [InlineData("backups", "list", "extra")]
    public async Task InvalidCommandLinesAreExit2(params string[] args)
    {
        var run = await CliRun.RunAsync(new Dictionary<string, string> { ["HAVEN_REPO"] = "/r", ["HAVEN_PASSPHRASE"] = "p" }, args);
        Assert.Equal(2, run.ExitCode);
        Assert.Equal("", run.Out);
        Assert.All(run.ErrorLines[..^1], l => Assert.StartsWith("haven: ", l));
        Assert.Matches("^see 'haven( [a-z]+)* --help'$", run.ErrorLines[^1]);
    }

    [Fact]
    public async Task RestoreModesAreExplained()
    {
        var env = new Dictionary<string, string> { ["HAVEN_REPO"] = "/r", ["HAVEN_PASSPHRASE"] = "p" };
        var run = await CliRun.RunAsync(env, "restore", "b1", "--name", "x", "--in-place");
        Assert.Equal(["haven: give only one of --name, --in-place or --disk N --to PATH (got --name, --in-place)", "see 'haven restore --help'"], run.ErrorLines);

        run = await CliRun.RunAsync(env, "restore", "b1", "--disk", "2");
        Assert.Equal(["haven: --disk N and --to PATH go together", "see 'haven restore --help'"], run.ErrorLines);
    }

    [Fact]
    public async Task PruneWithoutAKeepRuleIsRefused()
    {
        var run = await CliRun.RunAsync(new Dictionary<string, string> { ["HAVEN_REPO"] = "/r", ["HAVEN_PASSPHRASE"] = "p" }, "repo", "prune", "--dry-run");
        Assert.Equal(2, run.ExitCode);
        Assert.StartsWith("haven: give at least one of --keep-last,", run.ErrorLines[0]);
    }

    [Theory]
    [InlineData("backup", "web")]
    [InlineData("backups", "list")]
    [InlineData("restore", "b1", "--in-place")]
    [InlineData("repo", "init")]
    [InlineData("repo", "verify")]
    [InlineData("repo", "prune", "--keep-last", "1")]
    [InlineData("repo", "gc")]
    public async Task MissingRepositoryAndPassphraseAreExit2(params string[] args)
    {
        var run = await CliRun.RunAsync(args); // an environment without HAVEN_REPO or HAVEN_PASSPHRASE
        Assert.Equal(2, run.ExitCode);
        Assert.Equal("", run.Out);
        Assert.Equal("haven: no repository: give --repo PATH or set HAVEN_REPO", run.ErrorLines[0]);
        Assert.Equal("haven: no passphrase: give --passphrase-file FILE or set HAVEN_PASSPHRASE", run.ErrorLines[1]);
        Assert.Matches("^see 'haven .* --help'$", run.ErrorLines[2]);
    }

    [Fact]
    public async Task MissingPassphraseAloneIsExit2()
    {
        var run = await CliRun.RunAsync(new Dictionary<string, string> { ["HAVEN_REPO"] = "/r" }, "backups", "list");
        Assert.Equal(2, run.ExitCode);
        Assert.Equal(["haven: no passphrase: give --passphrase-file FILE or set HAVEN_PASSPHRASE", "see 'haven backups list --help'"], run.ErrorLines);
    }

    [Fact]
    public async Task ThePassphraseIsNotACommandLineOption()
    {
        var run = await CliRun.RunAsync(new Dictionary<string, string> { ["HAVEN_REPO"] = "/r" }, "backups", "list", "--passphrase", "secret");
        Assert.Equal(2, run.ExitCode);
        Assert.Contains("haven: Unrecognized command or argument '--passphrase'.", run.ErrorLines);
    }

    [Fact]
    public async Task UnreadableOrEmptyPassphraseFileIsExit2BeforeAnyRequest()
    {
        using var daemon = new FakeHavend(200, "[]");
        var env = new Dictionary<string, string>(daemon.Env) { ["HAVEN_REPO"] = "/r" };
        var missing = Path.Combine(folder, "nope");
        var run = await CliRun.RunAsync(env, "backups", "list", "--passphrase-file", missing);
        Assert.Equal(2, run.ExitCode);
        Assert.Equal([$"haven: --passphrase-file: cannot read {missing}: Could not find file '{missing}'."], run.ErrorLines);

        var empty = PassphraseFile("\nsecond line is not the passphrase\n");
        run = await CliRun.RunAsync(env, "backups", "list", "--passphrase-file", empty);
        Assert.Equal(2, run.ExitCode);
        Assert.Equal([$"haven: --passphrase-file: the first line of {empty} is empty"], run.ErrorLines);
        Assert.Empty(daemon.Requests);
    }

    [Fact]
    public async Task HelpNeedsNoRepository()
    {
        var run = await CliRun.RunAsync("backup", "--help");
        Assert.Equal(0, run.ExitCode);
        Assert.Contains("--passphrase-file", run.Out);
        Assert.Equal("", run.Error);

        run = await CliRun.RunAsync("repo");
        Assert.Equal(0, run.ExitCode);
        Assert.Contains("prune", run.Out);
    }
}
