using System.CommandLine;

namespace Haven.Cli.Commands.Checkpoint;

/// <summary>haven checkpoint remove: DELETE /v1/vms/{vm}/checkpoints/{cp}[?subtree=true].</summary>
public sealed class CheckpointRemoveCommand : Command
{
    public Argument<string> Vm { get; } = CheckpointCommand.VmArgument();
    public Argument<string> Checkpoint { get; } = CheckpointCommand.CheckpointArgument();

    public Option<bool> Subtree { get; } = new("--subtree")
    {
        Description = "Also remove every checkpoint below it",
    };

    public CheckpointRemoveCommand(CliContext ctx) : base("remove", "Remove a checkpoint; its changes are merged, the VM's disks keep their content")
    {
        Aliases.Add("rm");
        Add(Vm);
        Add(Checkpoint);
        Add(Subtree);
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var vm = parseResult.GetRequiredValue(Vm);
            var checkpoint = parseResult.GetRequiredValue(Checkpoint);
            var result = await client.RemoveCheckpointAsync(vm, checkpoint, parseResult.GetValue(Subtree), ct);
            output.Result(result, console =>
            {
                var names = string.Join(", ", result.Removed.Select(Human.Quote));
                var how = result.Live ? "merged live" : "merged offline";
                console.Line($"Removed {result.Removed.Count} checkpoint(s) of VM '{vm}': {names} ({how}, {Human.Duration(result.ElapsedMilliseconds)}).");
            });
        });
    }
}
