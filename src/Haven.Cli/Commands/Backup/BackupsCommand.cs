using System.CommandLine;

namespace Haven.Cli.Commands.Backup;

/// <summary>haven backups: the backups in a repository.</summary>
public static class BackupsCommand
{
    public static Command Create(CliContext ctx)
    {
        var backups = new Command("backups", "List the backups in a repository") { new BackupListCommand(ctx) };
        HavenCli.ShowHelpWhenBare(backups);
        return backups;
    }
}
