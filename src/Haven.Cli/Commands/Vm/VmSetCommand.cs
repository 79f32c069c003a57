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
    };

    public Option<string?> Autostart { get; } = new("--autostart")
    {
        Description = "on: havend starts the VM when it starts; off: it does not",
        HelpName = "on|off",
        CustomParser = Parsers.OnOff,
    };

    public VmSetCommand(CliContext ctx) : base("set", "Change a VM's settings")
    {
        Add(VmName);
        Add(CheckpointType);
        Add(Autostart);
        Validators.Add(r =>
        {
            if (r.GetResult(CheckpointType) is null && r.GetResult(Autostart) is null) r.AddError("give at least one setting: --checkpoint-type, --autostart");
        });
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var vm = await client.UpdateVmAsync(parseResult.GetRequiredValue(VmName), BuildRequest(parseResult), ct);
            output.Result(vm, console => console.Line($"VM '{vm.Name}' now takes {vm.CheckpointType} checkpoints; autostart is {(vm.Autostart ? "on" : "off")}."));
        });
    }

    public VmUpdateRequest BuildRequest(ParseResult parseResult) => new()
    {
        CheckpointType = parseResult.GetValue(CheckpointType),
        Autostart = parseResult.GetValue(Autostart) is { } a ? a == "on" : null,
    };
}
