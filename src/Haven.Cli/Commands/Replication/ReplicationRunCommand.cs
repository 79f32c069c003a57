using System.CommandLine;

namespace Haven.Cli.Commands.Replication;

/// <summary>haven replication run: POST /v1/vms/{vm}/replication/cycle.</summary>
public sealed class ReplicationRunCommand : Command
{
    public Argument<string> Vm { get; } = ReplicationCommand.VmArgument();

    public ReplicationRunCommand(CliContext ctx, bool resync = false)
        : base(resync ? "resync" : "run", resync
            ? "Resynchronize now: both sides hash every block and only the differing ones are sent (also outside the resync window)"
            : "Run a replication cycle now, besides the schedule")
    {
        Add(Vm);
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var result = await client.RunReplicationCycleAsync(parseResult.GetRequiredValue(Vm), ct, resync);
            output.Result(result, console => console.Line(ReplicationView.Cycle(result)));
        });
    }
}
