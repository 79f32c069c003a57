using System.CommandLine;

namespace Haven.Cli.Commands.Vm;

/// <summary>haven vm show: GET /v1/vms/{name}.</summary>
public sealed class VmShowCommand : Command
{
    public Argument<string> VmName { get; } = VmCommand.NameArgument();

    public VmShowCommand(CliContext ctx) : base("show", "Show a VM's settings, state and disk layers")
    {
        Add(VmName);
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var vm = await client.GetVmAsync(parseResult.GetRequiredValue(VmName), ct);
            output.Result(vm, console => VmView.RenderDetails(console, vm));
        });
    }
}
