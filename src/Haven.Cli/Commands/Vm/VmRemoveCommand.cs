using System.CommandLine;

namespace Haven.Cli.Commands.Vm;

/// <summary>haven vm remove: DELETE /v1/vms/{name}.</summary>
public sealed class VmRemoveCommand : Command
{
    public Argument<string> VmName { get; } = VmCommand.NameArgument();

    public VmRemoveCommand(CliContext ctx) : base("remove", "Remove a VM with its disks and checkpoints")
    {
        Aliases.Add("rm");
        Add(VmName);
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var name = parseResult.GetRequiredValue(VmName);
            await client.RemoveVmAsync(name, ct);
            output.NoContent(console => console.Line($"Removed VM '{name}'."));
        });
    }
}
