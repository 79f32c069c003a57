using System.CommandLine;

namespace Haven.Cli.Commands.Repo;

public static class RepoCommand
{
    public static Command Create(CliContext ctx)
    {
        var repo = new Command("repo", "Create, check and tidy backup repositories")
        {
            new RepoInitCommand(ctx),
            new RepoVerifyCommand(ctx),
            new RepoPruneCommand(ctx),
            new RepoGcCommand(ctx),
            new RepoCopyCommand(ctx),
            new RepoUpgradeCommand(ctx),
        };
        HavenCli.ShowHelpWhenBare(repo);
        return repo;
    }
}
