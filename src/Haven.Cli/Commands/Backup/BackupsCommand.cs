using System.CommandLine;

namespace Haven.Cli.Commands.Backup;

/// <summary>haven backups: the backups in a repository.</summary>
public static class BackupsCommand
{
    public static Command Create(CliContext ctx)
    {
        var backups = new Command("backups", "List the backups in a repository, and serve their disks over NBD")
        {
            new BackupListCommand(ctx), new BackupMountCommand(ctx), new BackupUnmountCommand(ctx), new BackupMountsCommand(ctx),
        };
        HavenCli.ShowHelpWhenBare(backups);
        return backups;
    }
}
