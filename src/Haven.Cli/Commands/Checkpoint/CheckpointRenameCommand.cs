using System.CommandLine;
using Haven.Api;

namespace Haven.Cli.Commands.Checkpoint;

/// <summary>haven checkpoint rename: POST /v1/vms/{vm}/checkpoints/{cp}/rename.</summary>
public sealed class CheckpointRenameCommand : Command
{
    public Argument<string> Vm { get; } = CheckpointCommand.VmArgument();
    public Argument<string> Checkpoint { get; } = CheckpointCommand.CheckpointArgument();
    public Argument<string> NewName { get; } = new("NEWNAME") { Description = "New name of the checkpoint" };

    public CheckpointRenameCommand(CliContext ctx) : base("rename", "Rename a checkpoint")
    {
        Add(Vm);
        Add(Checkpoint);
        Add(NewName);
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var vm = parseResult.GetRequiredValue(Vm);
            var checkpoint = parseResult.GetRequiredValue(Checkpoint);
            var request = new CheckpointRenameRequest { NewName = parseResult.GetRequiredValue(NewName) };
            var renamed = await client.RenameCheckpointAsync(vm, checkpoint, request, ct);
            output.Result(renamed, console => console.Line($"Renamed checkpoint '{checkpoint}' of VM '{vm}' to '{renamed.Name}'."));
        });
    }
}
