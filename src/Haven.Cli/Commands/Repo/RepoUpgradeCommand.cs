using System.CommandLine;
using Haven.Api;

namespace Haven.Cli.Commands.Repo;

/// <summary>haven repo upgrade: POST /v1/repo/upgrade.</summary>
public sealed class RepoUpgradeCommand : Command
{
    public RepoOptions Repo { get; }

    public RepoUpgradeCommand(CliContext ctx) : base("upgrade", "Convert a version-1 repository to format version 2 in place (safe to run again if interrupted)")
    {
        Repo = new RepoOptions(this, ctx);
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var request = BuildRequest(parseResult);
            var result = await client.UpgradeRepositoryAsync(request, ct);
            output.Result(result, console =>
            {
                console.Line($"Upgraded repository {request.Repository}:");
                RepoView.WriteJson(console, result);
            });
        });
    }

    public RepositoryRef BuildRequest(ParseResult parseResult) => new()
    {
        Repository = Repo.Repository(parseResult),
        Passphrase = Repo.Passphrase(parseResult),
        S3 = Repo.S3(parseResult),
    };
}
