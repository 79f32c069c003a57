using System.CommandLine;
using Haven.Api;

namespace Haven.Cli.Commands.Vm;

/// <summary>haven vm nic VM NIC --link up|down: POST /v1/vms/{name}/nics/{nic}/link (live when the VM runs).</summary>
public sealed class VmNicCommand : Command
{
    public Argument<string> VmName { get; } = VmCommand.NameArgument();
    public Argument<string> NicName { get; } = new("NIC") { Description = "The NIC (nic0, nic1 ...)" };
    public Option<string> Link { get; } = new("--link") { Description = "Link state: up or down", Required = true };

    public VmNicCommand(CliContext ctx) : base("nic", "Set a NIC's link up or down (live when the VM runs)")
    {
        Link.AcceptOnlyFromAmong("up", "down");
        Add(VmName);
        Add(NicName);
        Add(Link);
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var nic = parseResult.GetRequiredValue(NicName);
            var vm = await client.SetNicLinkAsync(parseResult.GetRequiredValue(VmName), nic,
                new NicLinkRequest { Up = parseResult.GetRequiredValue(Link) == "up" }, ct);
            output.Result(vm, console => console.Line($"VM '{vm.Name}': link of {nic} is {parseResult.GetRequiredValue(Link)}."));
        });
    }
}
