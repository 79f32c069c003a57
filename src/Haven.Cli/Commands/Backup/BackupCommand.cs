using System.CommandLine;
using Haven.Api;
using Haven.Cli.Commands.Repo;
using Spectre.Console;

namespace Haven.Cli.Commands.Backup;

/// <summary>haven backup VM: POST /v1/vms/{name}/backup, streamed (Accept: application/x-ndjson) for the progress bar.</summary>
public sealed class BackupCommand : Command
{
    public Argument<string> Vm { get; } = new("VM") { Description = "Name of the VM to back up" };

    public RepoOptions Repo { get; }

    public BackupCommand(CliContext ctx) : base("backup", "Back a VM up into a repository (incremental when it can be, running or off)")
    {
        Add(Vm);
        Repo = new RepoOptions(this, ctx);
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var vm = parseResult.GetRequiredValue(Vm);
            var request = BuildRequest(parseResult);
            BackupResult result;
            if (output.Json || !ctx.Env.OutIsTerminal)
            {
                result = await client.BackupVmAsync(vm, request, null, ct);
            }
            else
            {
                result = await output.Console.Progress()
                    .AutoClear(true)
                    .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(),
                        new DownloadedColumn(), new TransferSpeedColumn(), new RemainingTimeColumn())
                    .StartAsync(p =>
                    {
                        var bars = new BackupProgress(description => p.AddTask(description, autoStart: true, maxValue: 1));
                        return client.BackupVmAsync(vm, request, bars.Report, ct);
                    });
            }
            output.Result(result, console => BackupView.RenderResult(console, result));
        });
    }

    public BackupRequest BuildRequest(ParseResult parseResult) => new()
    {
        Repository = Repo.Repository(parseResult),
        Passphrase = Repo.Passphrase(parseResult),
        S3 = Repo.S3(parseResult),
    };
}
