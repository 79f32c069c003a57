using System.CommandLine;

namespace Haven.Cli.Commands.Replication;

/// <summary>haven replication disable: DELETE /v1/vms/{vm}/replication.</summary>
public sealed class ReplicationDisableCommand : Command
{
    public Argument<string> Vm { get; } = ReplicationCommand.VmArgument();

    public ReplicationDisableCommand(CliContext ctx) : base("disable", "Stop replicating a VM")
    {
        Add(Vm);
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var vm = parseResult.GetRequiredValue(Vm);
            await client.DisableReplicationAsync(vm, ct);
            output.NoContent(console => console.Line($"Replication of VM '{vm}' disabled."));
        });
    }
}
