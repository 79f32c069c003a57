using System.CommandLine;

namespace Haven.Cli.Commands.Vm;

/// <summary>haven vm start: POST /v1/vms/{name}/start.</summary>
public sealed class VmStartCommand : Command
{
    public Argument<string> VmName { get; } = VmCommand.NameArgument();

    public VmStartCommand(CliContext ctx) : base("start", "Start a VM (or resume it from its saved state)")
    {
        Add(VmName);
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var vm = await client.StartVmAsync(parseResult.GetRequiredValue(VmName), ct);
            output.Result(vm, console => console.Line($"VM '{vm.Name}' is {VmView.State(vm)}."));
        });
    }
}
