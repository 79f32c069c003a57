using System.CommandLine;
using Haven.Api;
using Spectre.Console;

namespace Haven.Cli.Commands.Checkpoint;

/// <summary>haven checkpoint create: POST /v1/vms/{vm}/checkpoints.</summary>
public sealed class CheckpointCreateCommand : Command
{
    public Argument<string> Vm { get; } = CheckpointCommand.VmArgument();

    public Option<string?> CheckpointName { get; } = new("--name")
    {
        Description = "Name of the new checkpoint (default: chosen by havend)",
        HelpName = "NAME",
    };

    public CheckpointCreateCommand(CliContext ctx) : base("create", "Take a checkpoint of a VM (the kind its checkpoint type says)")
    {
        Add(Vm);
        Add(CheckpointName);
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var vm = parseResult.GetRequiredValue(Vm);
            var result = await client.CreateCheckpointAsync(vm, new CheckpointCreateRequest { Name = parseResult.GetValue(CheckpointName) }, ct);
            output.Result(result, console => Render(console, vm, result));
        });
    }

    public static void Render(IAnsiConsole console, string vm, CheckpointCreateResult result)
    {
        var cp = result.Checkpoint;
        console.Line($"Created {cp.Kind} checkpoint '{cp.Name}' of VM '{vm}' in {Human.Duration(result.ElapsedMilliseconds)} "
            + $"({CheckpointView.Consistency(cp.Consistency)}{(cp.HasSavedState ? ", with memory" : "")}).");
        if (result.FrozenMilliseconds is { } frozen)
            console.Line($"Guest file systems were frozen for {Human.Duration(frozen)}.");
        if (result.FallbackReason is { } reason)
            console.Line($"Fell back to a Standard checkpoint: {reason}");
    }
}
