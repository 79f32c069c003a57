using System.CommandLine;
using System.Globalization;
using System.CommandLine.Parsing;
using Haven.Api;

namespace Haven.Cli.Commands.Repo;

/// <summary>haven repo prune: POST /v1/repo/prune.</summary>
public sealed class RepoPruneCommand : Command
{
    public RepoOptions Repo { get; }

    /// <summary>The keep count that keeps one backup per period forever (RetentionPolicy.Unlimited).</summary>
    public const int Unlimited = -1;

    public Option<int> KeepLast { get; } = Keep("--keep-last", "Keep each VM's N newest backups ('unlimited': all)");
    public Option<int> KeepHourly { get; } = KeepPeriod("--keep-hourly", "hours");
    public Option<int> KeepDaily { get; } = KeepPeriod("--keep-daily", "days");
    public Option<int> KeepWeekly { get; } = KeepPeriod("--keep-weekly", "ISO weeks");
    public Option<int> KeepMonthly { get; } = KeepPeriod("--keep-monthly", "months");
    public Option<int> KeepYearly { get; } = KeepPeriod("--keep-yearly", "years");

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
            if (KeepOptions.Any(o => result.GetResult(o) is { } given && KeepsSomething(given)))
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
        S3 = Repo.S3(parseResult),
        KeepLast = parseResult.GetValue(KeepLast),
        KeepHourly = parseResult.GetValue(KeepHourly),
        KeepDaily = parseResult.GetValue(KeepDaily),
        KeepWeekly = parseResult.GetValue(KeepWeekly),
        KeepMonthly = parseResult.GetValue(KeepMonthly),
        KeepYearly = parseResult.GetValue(KeepYearly),
        DryRun = parseResult.GetValue(DryRun),
    };

    /// <summary>Whether a --keep-* value is not 0 (read from the token: a bad value has its own error and must not be converted here).</summary>
    static bool KeepsSomething(OptionResult option) =>
        option.Tokens.Count == 0 || option.Tokens[^1].Value is var text
            && (!int.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var n) || n != 0);

    static Option<int> KeepPeriod(string name, string periods) =>
        Keep(name, $"Keep each VM's newest backup in each of the last N {periods} (UTC) that have one ('unlimited': no limit)");

    static Option<int> Keep(string name, string description) => new(name)
    {
        Description = description,
        HelpName = "N",
        CustomParser = r => r.Tokens.Count > 0 && r.Tokens[^1].Value.Equals("unlimited", StringComparison.OrdinalIgnoreCase)
            ? Unlimited
            : Parsers.Int(r, min: 0),
    };
}
