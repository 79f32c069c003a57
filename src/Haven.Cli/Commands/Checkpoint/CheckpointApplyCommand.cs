using System.CommandLine;
using Haven.Api;

namespace Haven.Cli.Commands.Checkpoint;

/// <summary>haven checkpoint apply: POST /v1/vms/{vm}/checkpoints/{cp}/apply.</summary>
public sealed class CheckpointApplyCommand : Command
{
    public Argument<string> Vm { get; } = CheckpointCommand.VmArgument();
    public Argument<string> Checkpoint { get; } = CheckpointCommand.CheckpointArgument();

    public Option<bool> CreateCheckpointFirst { get; } = new("--create-checkpoint-first")
    {
        Description = "Take a checkpoint of the current state first, so it is not lost",
    };

    public Option<string?> NewCheckpointName { get; } = new("--new-checkpoint-name")
    {
        Description = "Name of that checkpoint (implies --create-checkpoint-first)",
        HelpName = "NAME",
    };

    public CheckpointApplyCommand(CliContext ctx) : base("apply", "Revert a VM to a checkpoint (the current state is discarded unless saved first)")
    {
        Add(Vm);
        Add(Checkpoint);
        Add(CreateCheckpointFirst);
        Add(NewCheckpointName);
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var vm = parseResult.GetRequiredValue(Vm);
            var checkpoint = parseResult.GetRequiredValue(Checkpoint);
            var result = await client.ApplyCheckpointAsync(vm, checkpoint, BuildRequest(parseResult), ct);
            output.Result(result, console =>
            {
                if (result.CreatedFirst is { } first)
                    console.Line($"Saved the previous state as checkpoint '{first.Name}'.");
                console.Line($"Applied checkpoint '{checkpoint}' to VM '{vm}'; the VM is {result.State}.");
            });
        });
    }

    public CheckpointApplyRequest BuildRequest(ParseResult parseResult)
    {
        var name = parseResult.GetValue(NewCheckpointName);
        return new CheckpointApplyRequest
        {
            CreateCheckpointFirst = parseResult.GetValue(CreateCheckpointFirst) || name is not null,
            NewCheckpointName = name,
        };
    }
}
