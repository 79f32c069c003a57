using System.CommandLine;
using System.Text.Json;
using Haven.Api;

namespace Haven.Cli.Commands.Repo;

/// <summary>haven repo verify: POST /v1/repo/verify.</summary>
public sealed class RepoVerifyCommand : Command
{
    public RepoOptions Repo { get; }

    public Option<bool> ReadData { get; } = new("--read-data")
    {
        Description = "Also read, decrypt and check every chunk (slow); otherwise only the structure is checked",
    };

    public RepoVerifyCommand(CliContext ctx) : base("verify", "Check that every backup in a repository can be restored")
    {
        Repo = new RepoOptions(this, ctx);
        Add(ReadData);
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var request = BuildRequest(parseResult);
            var result = await client.VerifyRepositoryAsync(request, ct);
            output.Result(result, console =>
            {
                console.Line($"Verified repository {request.Repository} ({(request.ReadData ? "structure and data" : "structure only")}):");
                RepoView.WriteJson(console, result);
            });
            if (Problem(result) is { } problem)
                throw new HavenApiException(problem, "failed", System.Net.HttpStatusCode.OK);
        });
    }

    public RepositoryVerifyRequest BuildRequest(ParseResult parseResult) => new()
    {
        Repository = Repo.Repository(parseResult),
        Passphrase = Repo.Passphrase(parseResult),
        S3 = Repo.S3(parseResult),
        ReadData = parseResult.GetValue(ReadData),
    };

    /// <summary>
    /// What is wrong when havend's answer says the repository is not healthy ("isHealthy": false), so that
    /// scripts see a failed verify in the exit code (1); null when it is healthy or the answer does not say.
    /// </summary>
    public static string? Problem(JsonElement result)
    {
        if (result.ValueKind != JsonValueKind.Object
            || !result.TryGetProperty("isHealthy", out var healthy) || healthy.ValueKind != JsonValueKind.False)
            return null;
        var damaged = result.TryGetProperty("damagedBackups", out var list) && list.ValueKind == JsonValueKind.Array
            ? list.EnumerateArray().Select(e => e.ToString()).ToList()
            : [];
        return damaged.Count == 0
            ? "verify found problems in the repository"
            : $"verify found problems in the repository; {damaged.Count} backup(s) cannot be fully restored: {string.Join(", ", damaged)}";
    }
}
