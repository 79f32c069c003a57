using System.CommandLine;
using Haven.Api;

namespace Haven.Cli.Commands.Repo;

/// <summary>haven repo gc: POST /v1/repo/gc.</summary>
public sealed class RepoGcCommand : Command
{
    public RepoOptions Repo { get; }

    public RepoGcCommand(CliContext ctx) : base("gc", "Delete the chunks no backup references any more")
    {
        Repo = new RepoOptions(this, ctx);
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var request = BuildRequest(parseResult);
            var result = await client.GcRepositoryAsync(request, ct);
            output.Result(result, console =>
            {
                console.Line($"Collected garbage in repository {request.Repository}:");
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
