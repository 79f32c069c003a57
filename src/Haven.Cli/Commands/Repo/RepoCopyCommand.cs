using System.CommandLine;
using System.CommandLine.Parsing;
using Haven.Api;

namespace Haven.Cli.Commands.Repo;

/// <summary>
/// haven repo copy: POST /v1/repo/copy. Copies backups from --repo to --to (folder ↔ S3 either way);
/// only chunks the target lacks are uploaded, and a backup copied before is not copied again.
/// </summary>
public sealed class RepoCopyCommand : Command
{
    public const string TargetPassphraseVariable = "HAVEN_TARGET_PASSPHRASE";

    public RepoOptions Repo { get; }

    public Option<string> To { get; } = new("--to")
    {
        Description = "Target repository: a folder or s3://bucket/prefix (it must exist: haven repo init)",
        HelpName = "PATH|URL",
        Required = true,
    };

    public Option<string?> ToPassphraseFile { get; } = new("--to-passphrase-file")
    {
        Description = $"File whose first line is the target repository's passphrase [default: ${TargetPassphraseVariable}]",
        HelpName = "FILE",
    };

    public Option<string?> ToS3Endpoint { get; } = new("--to-s3-endpoint")
    {
        Description = "S3 service URL of an s3:// target [default: --s3-endpoint, then AWS_ENDPOINT_URL]",
        HelpName = "URL",
    };

    public Option<string[]> Backups { get; } = new("--backup")
    {
        Description = "Backup id to copy (repeat for several)",
        HelpName = "ID",
    };

    public Option<string?> Vm { get; } = new("--vm") { Description = "Copy every backup of this VM", HelpName = "NAME" };

    public Option<bool> All { get; } = new("--all") { Description = "Copy every backup in the source" };

    readonly Func<string, string?> getEnv;

    public RepoCopyCommand(CliContext ctx) : base("copy", "Copy backups to another repository, uploading only the chunks it lacks")
    {
        getEnv = ctx.Env.GetEnv;
        Repo = new RepoOptions(this, ctx);
        Add(To);
        Add(ToPassphraseFile);
        Add(ToS3Endpoint);
        Add(Backups);
        Add(Vm);
        Add(All);
        Validators.Add(result =>
        {
            var chosen = (result.GetValue(Backups) is { Length: > 0 } ? 1 : 0) + (result.GetValue(Vm) is not null ? 1 : 0) + (result.GetValue(All) ? 1 : 0);
            if (chosen != 1) result.AddError("give exactly one of --backup ID, --vm NAME or --all");
            if (string.IsNullOrEmpty(result.GetValue(ToPassphraseFile)) && string.IsNullOrEmpty(getEnv(TargetPassphraseVariable)))
                result.AddError($"no target passphrase: give --to-passphrase-file FILE or set {TargetPassphraseVariable}");
        });
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var request = BuildRequest(parseResult);
            var result = await client.CopyBackupsAsync(request, ct);
            output.Result(result, console =>
            {
                foreach (var b in result.Backups)
                {
                    console.Line(b.AlreadyPresent
                        ? $"{b.SourceId} ({b.Vm}): already in the target as {b.TargetId}"
                        : $"{b.SourceId} ({b.Vm}) -> {b.TargetId}: {b.ChunksUploaded} of {b.ChunksRead} chunks uploaded ({SizeParser.Format(b.BytesUploaded)})");
                }
                console.Line($"Copied {result.Backups.Count} backup(s) to {request.Target} in {result.WallMilliseconds / 1000:0.0} s.");
            });
        });
    }

    public RepositoryCopyRequest BuildRequest(ParseResult parseResult)
    {
        var source = Repo.Repository(parseResult);
        var target = parseResult.GetRequiredValue(To);
        if (!RepoOptions.IsS3(target)) target = Path.GetFullPath(target);
        var targetS3 = RepoOptions.IsS3(target)
            ? RepoOptions.S3FromEnvironment(getEnv, parseResult.GetValue(ToS3Endpoint) ?? parseResult.GetValue(Repo.S3Endpoint), parseResult.GetValue(Repo.S3Region), parseResult.GetValue(Repo.S3PathStyle))
            : null;
        var passphraseFile = parseResult.GetValue(ToPassphraseFile);
        return new RepositoryCopyRequest
        {
            Repository = source,
            Passphrase = Repo.Passphrase(parseResult),
            S3 = RepoOptions.IsS3(source) ? Repo.S3(parseResult) : null,
            Target = target,
            TargetPassphrase = passphraseFile is { Length: > 0 }
                ? RepoOptions.ReadFirstLine(passphraseFile, "--to-passphrase-file")
                : getEnv(TargetPassphraseVariable) ?? "",
            TargetS3 = targetS3,
            BackupIds = parseResult.GetValue(Backups) is { Length: > 0 } ids ? [.. ids] : null,
            Vm = parseResult.GetValue(Vm),
            All = parseResult.GetValue(All),
        };
    }
}
