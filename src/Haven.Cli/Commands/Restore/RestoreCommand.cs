using System.CommandLine;
using System.CommandLine.Parsing;
using Haven.Api;
using Haven.Cli.Commands.Repo;
using Spectre.Console;

namespace Haven.Cli.Commands.Restore;

/// <summary>haven restore: POST /v1/repo/restore.</summary>
public sealed class RestoreCommand : Command
{
    static readonly RestoreRequest Defaults = new() { Repository = "", Passphrase = "", BackupId = "" };

    public Argument<string> BackupId { get; } = new("BACKUP_ID") { Description = "The backup to restore (see 'haven backups list')" };

    public RepoOptions Repo { get; }

    public Option<string?> NewName { get; } = new("--name")
    {
        Description = "Restore the whole VM as a new VM of this name",
        HelpName = "NEW",
    };

    public Option<bool> InPlace { get; } = new("--in-place")
    {
        Description = "Restore the whole VM over the VM it was taken from (it must be off; its checkpoints are removed)",
    };

    public Option<int?> Disk { get; } = new("--disk")
    {
        Description = "Restore only this disk (0 is the first) into an image file given by --to",
        HelpName = "N",
        CustomParser = r => Parsers.Int(r, min: 0),
    };

    public Option<string?> To { get; } = new("--to")
    {
        Description = "Image file to write with --disk (must not exist)",
        HelpName = "PATH",
    };

    public Option<string> Format { get; } = new("--format")
    {
        Description = "Image format with --disk: qcow2, raw or vhdx",
        DefaultValueFactory = _ => Defaults.Format,
    };

    public RestoreCommand(CliContext ctx)
        : base("restore", "Restore a backup: as a new VM (--name), over its VM (--in-place), or one disk to a file (--disk N --to PATH)")
    {
        Format.AcceptOnlyFromAmong("qcow2", "raw", "vhdx");
        Add(BackupId);
        Repo = new RepoOptions(this, ctx);
        Add(NewName);
        Add(InPlace);
        Add(Disk);
        Add(To);
        Add(Format);
        Validators.Add(Validate);
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var request = BuildRequest(parseResult);
            var result = await client.RestoreAsync(request, ct);
            output.Result(result, console => Render(console, request, result));
        });
    }

    /// <summary>Exactly one of the three ways to restore.</summary>
    void Validate(CommandResult result)
    {
        var toDisk = result.GetResult(Disk) is not null || result.GetResult(To) is not null;
        var modes = new List<string>();
        if (result.GetResult(NewName) is not null)
            modes.Add("--name");
        if (result.GetValue(InPlace))
            modes.Add("--in-place");
        if (toDisk)
            modes.Add("--disk/--to");
        if (modes.Count == 0)
            result.AddError("say how to restore: --name NEW (as a new VM), --in-place (over its VM) or --disk N --to PATH (one disk to a file)");
        else if (modes.Count > 1)
            result.AddError($"give only one of --name, --in-place or --disk N --to PATH (got {string.Join(", ", modes)})");
        else if (toDisk && (result.GetResult(Disk) is null || result.GetResult(To) is null))
            result.AddError("--disk N and --to PATH go together");
        if (!toDisk && result.GetResult(Format) is { Implicit: false })
            result.AddError("--format applies only to --disk N --to PATH");
    }

    public RestoreRequest BuildRequest(ParseResult parseResult)
    {
        var to = parseResult.GetValue(To);
        return new RestoreRequest
        {
            Repository = Repo.Repository(parseResult),
            Passphrase = Repo.Passphrase(parseResult),
            S3 = Repo.S3(parseResult),
            BackupId = parseResult.GetRequiredValue(BackupId),
            NewName = parseResult.GetValue(NewName),
            InPlace = parseResult.GetValue(InPlace),
            Disk = parseResult.GetValue(Disk),
            TargetPath = string.IsNullOrEmpty(to) ? null : Path.GetFullPath(to),
            Format = parseResult.GetValue(Format) ?? Defaults.Format,
        };
    }

    public static void Render(IAnsiConsole console, RestoreRequest request, RestoreResult result)
    {
        var how = $"{SizeParser.Format(result.BytesWritten)} written in {Human.Duration(result.WallMilliseconds)}";
        if (request.Disk is { } disk)
        {
            console.Line($"Restored disk {disk} of backup {request.BackupId} ({how}) to:");
            foreach (var file in result.Files)
                console.Line("  " + file);
            return;
        }
        var vm = result.Vm ?? request.NewName ?? "?";
        console.Line(request.InPlace
            ? $"Restored VM '{vm}' in place from backup {request.BackupId} ({how})."
            : $"Restored backup {request.BackupId} as new VM '{vm}' ({how}).");
        foreach (var file in result.Files)
            console.Line("  " + file);
    }
}
