using System.CommandLine;

namespace Haven.Cli.Commands.Replication;

/// <summary>haven replication run: POST /v1/vms/{vm}/replication/cycle.</summary>
public sealed class ReplicationRunCommand : Command
{
    public Argument<string> Vm { get; } = ReplicationCommand.VmArgument();

    public ReplicationRunCommand(CliContext ctx) : base("run", "Run a replication cycle now, besides the schedule")
    {
        Add(Vm);
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var result = await client.RunReplicationCycleAsync(parseResult.GetRequiredValue(Vm), ct);
            output.Result(result, console => console.Line(ReplicationView.Cycle(result)));
        });
    }
}
