using System.CommandLine;

namespace Haven.Cli.Commands.Checkpoint;

public static class CheckpointCommand
{
    public static Command Create(CliContext ctx)
    {
        var checkpoint = new Command("checkpoint", "Create, list, apply, rename, remove and export checkpoints")
        {
            new CheckpointCreateCommand(ctx),
            new CheckpointListCommand(ctx),
            new CheckpointApplyCommand(ctx),
            new CheckpointRenameCommand(ctx),
            new CheckpointRemoveCommand(ctx),
            new CheckpointExportCommand(ctx),
        };
        checkpoint.Aliases.Add("cp");
        HavenCli.ShowHelpWhenBare(checkpoint);
        return checkpoint;
    }

    public static Argument<string> VmArgument() => new("VM") { Description = "Name of the VM" };

    public static Argument<string> CheckpointArgument() => new("CHECKPOINT") { Description = "Name of the checkpoint" };
}
