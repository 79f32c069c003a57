using System.CommandLine;
using Haven.Api;

namespace Haven.Cli.Commands.Vm;

/// <summary>haven vm stop: POST /v1/vms/{name}/stop.</summary>
public sealed class VmStopCommand : Command
{
    static readonly VmStopRequest Defaults = new();

    public Argument<string> VmName { get; } = VmCommand.NameArgument();

    public Option<bool> Force { get; } = new("--force")
    {
        Description = "Skip the ACPI shutdown and end QEMU at once (like pulling the plug)",
    };

    public Option<int> Timeout { get; } = new("--timeout")
    {
        Description = "Seconds to wait for the guest to shut down",
        HelpName = "SECONDS",
        DefaultValueFactory = _ => Defaults.TimeoutSeconds,
        CustomParser = r => Parsers.Int(r, min: 0),
    };

    public VmStopCommand(CliContext ctx) : base("stop", "Shut a VM down")
    {
        Add(VmName);
        Add(Force);
        Add(Timeout);
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var vm = await client.StopVmAsync(parseResult.GetRequiredValue(VmName), BuildRequest(parseResult), ct);
            output.Result(vm, console => console.Line($"VM '{vm.Name}' is {VmView.State(vm)}."));
        });
    }

    public VmStopRequest BuildRequest(ParseResult parseResult) => new()
    {
        Force = parseResult.GetValue(Force),
        TimeoutSeconds = parseResult.GetValue(Timeout),
    };
}
