using System.CommandLine;
using Haven.Api;

namespace Haven.Cli.Commands.Vm;

/// <summary>haven vm set: PATCH /v1/vms/{name}.</summary>
public sealed class VmSetCommand : Command
{
    public Argument<string> VmName { get; } = VmCommand.NameArgument();

    public Option<CheckpointType?> CheckpointType { get; } = new("--checkpoint-type")
    {
        Description = "Kind of checkpoint 'checkpoint create' takes",
        Required = true,
    };

    public VmSetCommand(CliContext ctx) : base("set", "Change a VM's settings")
    {
        Add(VmName);
        Add(CheckpointType);
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var vm = await client.UpdateVmAsync(parseResult.GetRequiredValue(VmName), BuildRequest(parseResult), ct);
            output.Result(vm, console => console.Line($"VM '{vm.Name}' now takes {vm.CheckpointType} checkpoints."));
        });
    }

    public VmUpdateRequest BuildRequest(ParseResult parseResult) => new()
    {
        CheckpointType = parseResult.GetValue(CheckpointType),
    };
}
