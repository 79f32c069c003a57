using System.CommandLine;
using Haven.Api;

namespace Haven.Cli.Commands.Checkpoint;

/// <summary>haven checkpoint export: POST /v1/vms/{vm}/checkpoints/{cp}/export.</summary>
public sealed class CheckpointExportCommand : Command
{
    static readonly CheckpointExportRequest Defaults = new() { Path = "" };

    public Argument<string> Vm { get; } = CheckpointCommand.VmArgument();
    public Argument<string> Checkpoint { get; } = CheckpointCommand.CheckpointArgument();
    public Argument<string> Path { get; } = new("PATH")
    {
        Description = "File to write; with several disks, -diskN is added before the extension",
    };

    public Option<string> Format { get; } = new("--format")
    {
        Description = "Image format: qcow2, raw or vhdx",
        DefaultValueFactory = _ => Defaults.Format,
    };

    public CheckpointExportCommand(CliContext ctx) : base("export", "Write a checkpoint's disk content to standalone image files")
    {
        Format.AcceptOnlyFromAmong("qcow2", "raw", "vhdx");
        Add(Vm);
        Add(Checkpoint);
        Add(Path);
        Add(Format);
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var vm = parseResult.GetRequiredValue(Vm);
            var checkpoint = parseResult.GetRequiredValue(Checkpoint);
            var result = await client.ExportCheckpointAsync(vm, checkpoint, BuildRequest(parseResult), ct);
            output.Result(result, console =>
            {
                console.Line($"Exported checkpoint '{checkpoint}' of VM '{vm}' to:");
                foreach (var file in result.Files)
                    console.Line("  " + file);
            });
        });
    }

    public CheckpointExportRequest BuildRequest(ParseResult parseResult) => new()
    {
        Path = System.IO.Path.GetFullPath(parseResult.GetRequiredValue(Path)),
        Format = parseResult.GetValue(Format) ?? Defaults.Format,
    };
}
