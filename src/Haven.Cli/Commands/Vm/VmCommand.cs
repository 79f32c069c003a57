using System.CommandLine;

namespace Haven.Cli.Commands.Vm;

public static class VmCommand
{
    public static Command Create(CliContext ctx)
    {
        var vm = new Command("vm", "Create, inspect, start, stop and remove VMs")
        {
            new VmCreateCommand(ctx),
            new VmImportCommand(ctx),
            new VmListCommand(ctx),
            new VmShowCommand(ctx),
            new VmStartCommand(ctx),
            new VmStopCommand(ctx),
            new VmSetCommand(ctx),
            new VmConsoleCommand(ctx),
            new VmScreenshotCommand(ctx),
            new VmNicCommand(ctx),
            new VmRemoveCommand(ctx),
        };
        HavenCli.ShowHelpWhenBare(vm);
        return vm;
    }

    /// <summary>The NAME argument most vm commands take.</summary>
    public static Argument<string> NameArgument() => new("NAME") { Description = "Name of the VM" };

    /// <summary>A comma-separated list option's items; null when the option was not given.</summary>
    public static List<string>? SplitList(string? text) =>
        text is null ? null : [.. text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)];
}
