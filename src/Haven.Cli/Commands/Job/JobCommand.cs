using System.CommandLine;
using Haven.Api;
using Haven.Cli.Commands.Backup;
using Spectre.Console;

namespace Haven.Cli.Commands.Job;

/// <summary>haven job create|list|run|remove: backup jobs (VMs + repository + schedule + retention) that havend runs.</summary>
public static class JobCommand
{
    public static Command Create(CliContext ctx)
    {
        var job = new Command("job", "Backup jobs havend runs on a schedule, with retention")
        {
            CreateCommand(ctx),
            ListCommand(ctx),
            RunCommand(ctx),
            RemoveCommand(ctx),
        };
        HavenCli.ShowHelpWhenBare(job);
        return job;
    }

    static Argument<string> NameArgument() => new("NAME") { Description = "Name of the job" };

    static Command CreateCommand(CliContext ctx)
    {
        var name = NameArgument();
        var vms = new Option<string[]>("--vm") { Description = "VM to back up (repeat for several)", Required = true, AllowMultipleArgumentsPerToken = false };
        var repo = new Option<string>("--repo") { Description = "Backup repository: a folder or s3://bucket/prefix (S3 credentials come from havend's environment)", Required = true, HelpName = "PATH|URL" };
        var s3Endpoint = new Option<string?>("--s3-endpoint") { Description = "S3 service URL for an s3:// repository [default: AWS_ENDPOINT_URL of this shell]", HelpName = "URL" };
        var s3Region = new Option<string?>("--s3-region") { Description = "S3 region [default: AWS_REGION of this shell]", HelpName = "REGION" };
        var passphraseFile = new Option<string>("--passphrase-file") { Description = "File whose first line is the passphrase (read at every run; havend does not store it)", Required = true, HelpName = "FILE" };
        var schedule = new Option<string?>("--schedule") { Description = "Five-field cron expression in UTC, e.g. \"0 2 * * *\" (omit for on-demand only)", HelpName = "CRON" };
        var keeps = new[] { "last", "hourly", "daily", "weekly", "monthly", "yearly" }
            .Select(k => new Option<int>("--keep-" + k) { Description = $"Retention: keep the newest backup of each of the last N {(k == "last" ? "backups" : k + " periods")}", HelpName = "N" })
            .ToArray();
        var cmd = new Command("create", "Define a backup job") { name, vms, repo, s3Endpoint, s3Region, passphraseFile, schedule };
        foreach (var k in keeps) cmd.Add(k);
        ctx.SetAction(cmd, async (parseResult, client, output, ct) =>
        {
            var location = parseResult.GetRequiredValue(repo);
            var s3 = Repo.RepoOptions.IsS3(location)
                ? Repo.RepoOptions.S3FromEnvironment(ctx.Env.GetEnv, parseResult.GetValue(s3Endpoint), parseResult.GetValue(s3Region), null).WithoutSecrets()
                : null;
            var job = await client.CreateJobAsync(new JobDefinition
            {
                Name = parseResult.GetRequiredValue(name),
                Vms = [.. parseResult.GetRequiredValue(vms)],
                Repository = s3 is null ? Path.GetFullPath(location) : location,
                S3 = s3,
                PassphraseFile = Path.GetFullPath(parseResult.GetRequiredValue(passphraseFile)),
                Schedule = parseResult.GetValue(schedule),
                KeepLast = parseResult.GetValue(keeps[0]),
                KeepHourly = parseResult.GetValue(keeps[1]),
                KeepDaily = parseResult.GetValue(keeps[2]),
                KeepWeekly = parseResult.GetValue(keeps[3]),
                KeepMonthly = parseResult.GetValue(keeps[4]),
                KeepYearly = parseResult.GetValue(keeps[5]),
            }, ct);
            output.Result(job, console => console.Line($"Created job '{job.Definition.Name}'" + (job.NextRun is { } next ? $"; next run {next:yyyy-MM-dd HH:mm} UTC." : " (on demand only).")));
        });
        return cmd;
    }

    static Command ListCommand(CliContext ctx)
    {
        var cmd = new Command("list", "List backup jobs");
        cmd.Aliases.Add("ls");
        ctx.SetAction(cmd, async (parseResult, client, output, ct) =>
        {
            var jobs = await client.ListJobsAsync(ct);
            output.Result(jobs, console =>
            {
                var table = new Table().NoBorder();
                foreach (var c in new[] { "NAME", "VMS", "SCHEDULE", "NEXT RUN", "LAST RUN", "STATUS" }) table.AddColumn(c);
                foreach (var j in jobs)
                    table.AddRow(Markup.Escape(j.Definition.Name), Markup.Escape(string.Join(", ", j.Definition.Vms)), Markup.Escape(j.Definition.Schedule ?? "on demand"),
                        j.NextRun?.ToString("yyyy-MM-dd HH:mm") ?? "-", j.LastRun?.ToString("yyyy-MM-dd HH:mm") ?? "-",
                        Markup.Escape(j.LastStatus is null ? "-" : j.LastStatus + (j.LastError is { } e ? ": " + e : "")));
                console.Write(table);
            });
        });
        return cmd;
    }

    static Command RunCommand(CliContext ctx)
    {
        var name = NameArgument();
        var cmd = new Command("run", "Run a job now") { name };
        ctx.SetAction(cmd, async (parseResult, client, output, ct) =>
        {
            var r = await client.RunJobAsync(parseResult.GetRequiredValue(name), ct);
            output.Result(r, console =>
            {
                foreach (var b in r.Backups) BackupView.RenderResult(console, b);
                if (r.PrunedBackups > 0) console.Line($"Retention removed {r.PrunedBackups} backup(s).");
                foreach (var e in r.Errors) console.Line("error: " + e);
            });
            if (r.Errors.Count > 0) throw new HavenApiException($"job '{r.Job}' had {r.Errors.Count} error(s): {string.Join("; ", r.Errors)}", "failed", System.Net.HttpStatusCode.InternalServerError);
        });
        return cmd;
    }

    static Command RemoveCommand(CliContext ctx)
    {
        var name = NameArgument();
        var cmd = new Command("remove", "Remove a job (its backups stay in the repository)") { name };
        cmd.Aliases.Add("rm");
        ctx.SetAction(cmd, async (parseResult, client, output, ct) =>
        {
            var job = parseResult.GetRequiredValue(name);
            await client.RemoveJobAsync(job, ct);
            output.NoContent(console => console.Line($"Removed job '{job}'."));
        });
        return cmd;
    }
}
