using System.CommandLine;

namespace Haven.Cli.Commands.Vm;

/// <summary>haven vm list: GET /v1/vms.</summary>
public sealed class VmListCommand : Command
{
    public VmListCommand(CliContext ctx) : base("list", "List VMs")
    {
        Aliases.Add("ls");
        ctx.SetAction(this, async (_, client, output, ct) =>
        {
            var vms = await client.ListVmsAsync(ct);
            output.Result(vms, console => VmView.RenderList(console, vms));
        });
    }
}
