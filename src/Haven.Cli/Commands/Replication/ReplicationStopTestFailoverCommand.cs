using System.CommandLine;

namespace Haven.Cli.Commands.Replication;

/// <summary>haven replication stop-test-failover: DELETE /v1/vms/{vm}/replication/test-failover (on the replica).</summary>
public sealed class ReplicationStopTestFailoverCommand : Command
{
    public Argument<string> Vm { get; } = ReplicationCommand.VmArgument();

    public ReplicationStopTestFailoverCommand(CliContext ctx) : base("stop-test-failover", "On the replica: stop the test failover and delete the test VM \"<VM> - Test\"")
    {
        Add(Vm);
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var vm = parseResult.GetRequiredValue(Vm);
            await client.StopTestFailoverAsync(vm, ct);
            output.NoContent(console => console.Line($"Test failover of VM '{vm}' stopped; the test VM is deleted."));
        });
    }
}
