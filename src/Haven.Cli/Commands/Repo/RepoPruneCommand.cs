using System.CommandLine;
using System.CommandLine.Parsing;
using Haven.Api;

namespace Haven.Cli.Commands.Repo;

/// <summary>haven repo prune: POST /v1/repo/prune.</summary>
public sealed class RepoPruneCommand : Command
{
    public RepoOptions Repo { get; }

    /// <summary>The keep count that keeps one backup per period forever (RetentionPolicy.Unlimited).</summary>
    public const int Unlimited = -1;

    public Option<int> KeepLast { get; } = Keep("--keep-last", "Keep each VM's N newest backups");
    public Option<int> KeepHourly { get; } = Keep("--keep-hourly", "Keep each VM's newest backup of each of the last N hours that have one");
    public Option<int> KeepDaily { get; } = Keep("--keep-daily", "Keep each VM's newest backup of each of the last N days that have one");
    public Option<int> KeepWeekly { get; } = Keep("--keep-weekly", "Keep each VM's newest backup of each of the last N ISO weeks that have one");
    public Option<int> KeepMonthly { get; } = Keep("--keep-monthly", "Keep each VM's newest backup of each of the last N months that have one");
    public Option<int> KeepYearly { get; } = Keep("--keep-yearly", "Keep each VM's newest backup of each of the last N years that have one");

    public Option<bool> DryRun { get; } = new("--dry-run")
    {
        Description = "Only show what would be removed",
    };

    IEnumerable<Option<int>> KeepOptions => [KeepLast, KeepHourly, KeepDaily, KeepWeekly, KeepMonthly, KeepYearly];

    public RepoPruneCommand(CliContext ctx) : base("prune", "Remove the backups no --keep-* rule keeps (their data goes at the next 'repo gc')")
    {
        Repo = new RepoOptions(this, ctx);
        foreach (var keep in KeepOptions)
            Add(keep);
        Add(DryRun);
        Validators.Add(result =>
        {
            // Without a rule that keeps something, prune would remove every backup: refuse.
            if (result.Errors.Any() || KeepOptions.Any(o => result.GetValue(o) != 0))
                return;
            result.AddError("give at least one of --keep-last, --keep-hourly, --keep-daily, --keep-weekly, --keep-monthly, "
                + "--keep-yearly with a count above 0 (with no rule, every backup would be removed)");
        });
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var request = BuildRequest(parseResult);
            var result = await client.PruneRepositoryAsync(request, ct);
            output.Result(result, console =>
            {
                console.Line(request.DryRun
                    ? $"Dry run on repository {request.Repository}: nothing was removed."
                    : $"Pruned repository {request.Repository}; run 'haven repo gc' to free the space of removed backups.");
                RepoView.WriteJson(console, result);
            });
        });
    }

    public RepositoryPruneRequest BuildRequest(ParseResult parseResult) => new()
    {
        Repository = Repo.Repository(parseResult),
        Passphrase = Repo.Passphrase(parseResult),
        KeepLast = parseResult.GetValue(KeepLast),
        KeepHourly = parseResult.GetValue(KeepHourly),
        KeepDaily = parseResult.GetValue(KeepDaily),
        KeepWeekly = parseResult.GetValue(KeepWeekly),
        KeepMonthly = parseResult.GetValue(KeepMonthly),
        KeepYearly = parseResult.GetValue(KeepYearly),
        DryRun = parseResult.GetValue(DryRun),
    };

    static Option<int> Keep(string name, string description) => new(name)
    {
        Description = description + " ('unlimited': one per period forever; periods are UTC)",
        HelpName = "N",
        CustomParser = r => r.Tokens.Count > 0 && r.Tokens[^1].Value.Equals("unlimited", StringComparison.OrdinalIgnoreCase)
            ? Unlimited
            : Parsers.Int(r, min: 0),
    };
}
