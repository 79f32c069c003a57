using System.CommandLine;
using Haven.Api;

namespace Haven.Cli.Commands.Replication;

/// <summary>haven replication import DIR: POST /v1/replication/import (replica side: an initial copy brought on external media).</summary>
public sealed class ReplicationImportCommand : Command
{
    public Argument<string> Folder { get; } = new("DIR") { Description = "Folder the primary exported the initial copy to (haven replication enable --initial export)" };

    public ReplicationImportCommand(CliContext ctx) : base("import", "Create a replica from an initial copy exported on the primary (its primary must be authorized here)")
    {
        Add(Folder);
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var status = await client.ImportReplicaAsync(new ReplicationImportRequest { Folder = Path.GetFullPath(parseResult.GetRequiredValue(Folder)) }, ct);
            output.Result(status, console =>
            {
                console.Line($"Imported the replica of '{status.Vm}' from {status.Partner} at cycle {status.LastCycle}.");
                ReplicationView.RenderStatus(console, status);
            });
        });
    }
}
