using System.Buffers.Binary;
using System.CommandLine;
using System.Net;

namespace Haven.Cli.Commands.Vm;

/// <summary>haven vm screenshot: GET /v1/vms/{name}/screenshot, written owner-only to a PNG file.</summary>
public sealed class VmScreenshotCommand : Command
{
    public Argument<string> VmName { get; } = VmCommand.NameArgument();
    public Argument<string> File { get; } = new("FILE") { Description = "PNG file to write (replaced if it exists)" };

    public VmScreenshotCommand(CliContext ctx) : base("screenshot", "Save a running VM's display as a PNG file")
    {
        Add(VmName);
        Add(File);
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var name = parseResult.GetRequiredValue(VmName);
            var path = Path.GetFullPath(parseResult.GetRequiredValue(File));
            // Checked before asking havend, so a typo costs nothing; writing can still fail later (then nothing is left).
            if (Directory.Exists(path)) throw Invalid($"{path} is a folder");
            if (!Directory.Exists(Path.GetDirectoryName(path))) throw Invalid($"cannot write {path}: its folder does not exist");
            var png = await client.GetScreenshotAsync(name, ct);
            var (width, height) = PngSize(png) ?? throw new HavenProtocolException($"havend's screenshot of VM '{name}' is not a PNG");
            WriteOwnerOnly(path, png);
            output.Result(new { path, width, height, bytes = png.Length },
                console => console.Line($"Saved the display of VM '{name}' ({width}x{height}) to {path}."));
        });
    }

    /// <summary>Width and height from a PNG's IHDR chunk (the first chunk, right after the 8-byte signature); null if not a PNG.</summary>
    public static (int Width, int Height)? PngSize(ReadOnlySpan<byte> png)
    {
        ReadOnlySpan<byte> signature = [0x89, (byte)'P', (byte)'N', (byte)'G', 0x0d, 0x0a, 0x1a, 0x0a];
        if (png.Length < 24 || !png[..8].SequenceEqual(signature) || !png.Slice(12, 4).SequenceEqual("IHDR"u8)) return null;
        return (BinaryPrimitives.ReadInt32BigEndian(png.Slice(16, 4)), BinaryPrimitives.ReadInt32BigEndian(png.Slice(20, 4)));
    }

    /// <summary>Written to a 0600 temporary file beside it, then renamed over: the file is never readable by others.</summary>
    static void WriteOwnerOnly(string path, byte[] bytes)
    {
        var temp = Path.Combine(Path.GetDirectoryName(path)!, $".{Path.GetFileName(path)}.{Environment.ProcessId}.tmp");
        try
        {
            var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
            if (!OperatingSystem.IsWindows()) options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
            using (var f = new FileStream(temp, options))
                f.Write(bytes);
            System.IO.File.Move(temp, path, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            try { System.IO.File.Delete(temp); } catch (Exception x) when (x is IOException or UnauthorizedAccessException) { }
            throw Invalid($"cannot write {path}: {e.Message}");
        }
    }

    static HavenApiException Invalid(string message) => new(message, "invalid_argument", HttpStatusCode.BadRequest);
}
