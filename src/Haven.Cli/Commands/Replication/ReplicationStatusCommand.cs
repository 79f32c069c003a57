using System.CommandLine;

namespace Haven.Cli.Commands.Replication;

/// <summary>haven replication status: GET /v1/vms/{vm}/replication.</summary>
public sealed class ReplicationStatusCommand : Command
{
    public Argument<string> Vm { get; } = ReplicationCommand.VmArgument();

    public ReplicationStatusCommand(CliContext ctx) : base("status", "Show a VM's replication: health, cycles, sizes, latency and recovery points")
    {
        Add(Vm);
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var status = await client.GetReplicationAsync(parseResult.GetRequiredValue(Vm), ct);
            output.Result(status, console => ReplicationView.RenderStatus(console, status));
        });
    }
}
