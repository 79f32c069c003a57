using System.CommandLine;

namespace Haven.Cli.Commands.Checkpoint;

/// <summary>haven checkpoint list: GET /v1/vms/{vm}/checkpoints, drawn as a tree.</summary>
public sealed class CheckpointListCommand : Command
{
    public Argument<string> Vm { get; } = CheckpointCommand.VmArgument();

    public CheckpointListCommand(CliContext ctx) : base("list", "Show a VM's checkpoint tree (\"Now\" marks the running state)")
    {
        Aliases.Add("ls");
        Add(Vm);
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var vm = parseResult.GetRequiredValue(Vm);
            var checkpoints = await client.ListCheckpointsAsync(vm, ct);
            output.Result(checkpoints, console => CheckpointView.RenderList(console, vm, checkpoints));
        });
    }
}
