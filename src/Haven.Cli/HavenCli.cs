using System.CommandLine;
using System.CommandLine.Help;
using System.CommandLine.Invocation;
using System.CommandLine.Parsing;
using Haven.Cli.Commands.Backup;
using Haven.Cli.Commands.Checkpoint;
using Haven.Cli.Commands.Host;
using Haven.Cli.Commands.ReplicaServer;
using Haven.Cli.Commands.Replication;
using Haven.Cli.Commands.Repo;
using Haven.Cli.Commands.Restore;
using Haven.Cli.Commands.Vm;

namespace Haven.Cli;

/// <summary>The haven command line: builds the command tree, parses and runs.</summary>
public static class HavenCli
{
    public const string Description =
        "haven: command-line client of havend, the Haven VM data-protection daemon.\n\n"
        + "Every command accepts --json to print only the daemon's JSON answer. Connection: --host (HAVEN_HOST) "
        + "names havend's data folder (socket <folder>/havend.sock, token <folder>/token), unix:/path/to/havend.sock, "
        + "or http://HOST:PORT (token from --token/HAVEN_TOKEN). Default: $HAVEN_HOME, else ~/.local/share/haven.\n\n"
        + "Backup commands (repo, backup, backups, restore) name the repository with --repo (HAVEN_REPO) and read its "
        + "passphrase from the first line of --passphrase-file, else from HAVEN_PASSPHRASE.\n\n"
        + ExitCodes.HelpText;

    public static RootCommand Build(CliContext ctx)
    {
        var root = new RootCommand(Description) { HelpName = "haven" };
        root.Add(ctx.Host);
        root.Add(ctx.Token);
        root.Add(ctx.Json);
        root.Add(HostCommand.Create(ctx));
        root.Add(VmCommand.Create(ctx));
        root.Add(CheckpointCommand.Create(ctx));
        root.Add(new BackupCommand(ctx));
        root.Add(BackupsCommand.Create(ctx));
        root.Add(new RestoreCommand(ctx));
        root.Add(RepoCommand.Create(ctx));
        root.Add(Commands.Job.JobCommand.Create(ctx));
        root.Add(ReplicaServerCommand.Create(ctx));
        root.Add(ReplicationCommand.Create(ctx));
        ShowHelpWhenBare(root);
        return root;
    }

    public static async Task<int> RunAsync(string[] args, CliEnvironment env, CancellationToken ct = default)
    {
        var ctx = new CliContext(env);
        var parseResult = Build(ctx).Parse(args);
        if (parseResult.Action is ParseErrorAction)
            return ReportParseErrors(parseResult, ctx);
        var config = new InvocationConfiguration { Output = env.Out, Error = env.Error };
        return await parseResult.InvokeAsync(config, ct);
    }

    /// <summary>Group commands (haven, haven vm, ...) print their help when run without a subcommand.</summary>
    public static void ShowHelpWhenBare(Command group) =>
        group.SetAction(parseResult =>
        {
            new HelpAction().Invoke(parseResult);
            return ExitCodes.Ok;
        });

    static int ReportParseErrors(ParseResult parseResult, CliContext ctx)
    {
        foreach (var message in parseResult.Errors.Select(e => e.Message).Distinct())
            ctx.Fail(message, ExitCodes.InvalidArgument);
        ctx.Env.Error.WriteLine($"see '{CommandPath(parseResult.CommandResult)} --help'");
        return ExitCodes.InvalidArgument;
    }

    static string CommandPath(CommandResult result)
    {
        var names = new List<string>();
        for (SymbolResult? r = result; r is not null; r = r.Parent)
        {
            if (r is CommandResult c)
                names.Add(c.Command is RootCommand ? "haven" : c.Command.Name);
        }
        names.Reverse();
        return string.Join(' ', names);
    }
}
