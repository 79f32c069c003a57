using System.CommandLine;

namespace Haven.Cli.Commands.Replication;

/// <summary>haven replication complete-failover: POST /v1/vms/{vm}/replication/failover/complete (on the replica).</summary>
public sealed class ReplicationCompleteFailoverCommand : Command
{
    public Argument<string> Vm { get; } = ReplicationCommand.VmArgument();

    public ReplicationCompleteFailoverCommand(CliContext ctx) : base("complete-failover", "On the replica: keep the failover; the recovery points are merged away and the VM becomes an ordinary VM")
    {
        Add(Vm);
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var vm = parseResult.GetRequiredValue(Vm);
            await client.CompleteFailoverAsync(vm, ct);
            output.NoContent(console => console.Line($"Failover of VM '{vm}' completed; it is an ordinary VM now."));
        });
    }
}
