using System.CommandLine;
using Haven.Api;
using Haven.Cli.Commands.Repo;

namespace Haven.Cli.Commands.Backup;

/// <summary>haven backups list: POST /v1/repo/backups, filtered by VM here.</summary>
public sealed class BackupListCommand : Command
{
    public RepoOptions Repo { get; }

    public Option<string?> Vm { get; } = new("--vm")
    {
        Description = "Only the backups of this VM",
        HelpName = "NAME",
    };

    public BackupListCommand(CliContext ctx) : base("list", "List the backups in a repository, oldest first")
    {
        Aliases.Add("ls");
        Repo = new RepoOptions(this, ctx);
        Add(Vm);
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var backups = Filter(await client.ListBackupsAsync(BuildRequest(parseResult), ct), parseResult.GetValue(Vm));
            output.Result(backups, console => BackupView.RenderList(console, backups, parseResult.GetValue(Vm)));
        });
    }

    public RepositoryRef BuildRequest(ParseResult parseResult) => new()
    {
        Repository = Repo.Repository(parseResult),
        Passphrase = Repo.Passphrase(parseResult),
        S3 = Repo.S3(parseResult),
    };

    /// <summary>The backups of <paramref name="vm"/> (all when null), in havend's order; unreadable ones always (their VM is unknown).</summary>
    public static List<BackupInfo> Filter(List<BackupInfo> backups, string? vm) =>
        vm is null ? backups : backups.FindAll(b => b.Unreadable is not null || string.Equals(b.Vm, vm, StringComparison.Ordinal));
}
