using System.CommandLine;

namespace Haven.Cli.Commands.Replication;

/// <summary>haven replication cancel-failover: POST /v1/vms/{vm}/replication/failover/cancel (on the replica).</summary>
public sealed class ReplicationCancelFailoverCommand : Command
{
    public Argument<string> Vm { get; } = ReplicationCommand.VmArgument();

    public ReplicationCancelFailoverCommand(CliContext ctx) : base("cancel-failover", "On the replica: discard what the failed-over VM wrote and go back to replicating")
    {
        Add(Vm);
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var status = await client.CancelFailoverAsync(parseResult.GetRequiredValue(Vm), ct);
            output.Result(status, console =>
            {
                console.Line($"Failover of VM '{status.Vm}' cancelled; it is a replica again.");
                ReplicationView.RenderStatus(console, status);
            });
        });
    }
}
