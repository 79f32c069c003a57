using System.CommandLine;
using System.CommandLine.Parsing;
using Haven.Api;

namespace Haven.Cli.Commands.Repo;

/// <summary>haven repo init: POST /v1/repo/init.</summary>
public sealed class RepoInitCommand : Command
{
    public RepoOptions Repo { get; }

    public Option<int?> ChunkSize { get; } = new("--chunk-size")
    {
        Description = "Fixed chunk size: a power of two from 64K to 16M (binary units; a bare number is bytes) [default: 1M]",
        HelpName = "SIZE",
        CustomParser = ParseChunkSize,
    };

    public Option<int?> ImmutableDays { get; } = new("--immutable-days")
    {
        Description = "Lock every backup against deletion and overwrite for N days (S3 Object Lock; s3:// repositories only)",
        HelpName = "N",
    };

    public Option<string?> ImmutableMode { get; } = new("--immutable-mode")
    {
        Description = "governance (a privileged S3 user can lift the lock) or compliance (no one can) [default: governance]",
        HelpName = "MODE",
    };

    public RepoInitCommand(CliContext ctx) : base("init", "Create an empty, encrypted backup repository")
    {
        Repo = new RepoOptions(this, ctx);
        Add(ChunkSize);
        Add(ImmutableDays);
        Add(ImmutableMode);
        ImmutableMode.AcceptOnlyFromAmong("governance", "compliance");
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var info = await client.InitRepositoryAsync(BuildRequest(parseResult), ct);
            output.Result(info, console =>
            {
                console.Line($"Created repository {info.Id} at {info.Location} (chunk size {SizeParser.Format(info.ChunkSize)}"
                    + (info.Immutability is { } lockText ? $", backups locked: {lockText})." : ")."));
                console.Line("Keep the passphrase safe: without it, nothing in the repository can be read.");
            });
        });
    }

    public RepositoryInitRequest BuildRequest(ParseResult parseResult) => new()
    {
        Repository = Repo.Repository(parseResult),
        Passphrase = Repo.Passphrase(parseResult),
        S3 = Repo.S3(parseResult),
        ChunkSize = parseResult.GetValue(ChunkSize),
        ImmutableDays = parseResult.GetValue(ImmutableDays),
        ImmutableMode = parseResult.GetValue(ImmutableMode),
    };

    static int? ParseChunkSize(ArgumentResult result)
    {
        var text = result.Tokens.Count > 0 ? result.Tokens[^1].Value : "";
        if (!SizeParser.TryParse(text, out var bytes, out var error))
        {
            result.AddError(Parsers.OptionName(result) + ": " + error);
            return null;
        }
        if (bytes > int.MaxValue)
        {
            result.AddError($"{Parsers.OptionName(result)}: '{text}' is too large");
            return null;
        }
        return (int)bytes;
    }
}
