using System.Text.Json;

namespace Haven.Qemu.Images;

public enum DiskFormat { Qcow2, Raw, Vhdx }

public sealed record ImageInfo(string Path, DiskFormat? Format, string FormatName, long VirtualSize, long ActualSize, string? BackingFile, string? BackingFormat);

/// <summary>
/// The one place Haven calls qemu-img. Only for images no running QEMU has open for writing:
/// live images are changed through QMP instead (QEMU holds write locks on them).
/// </summary>
public static class QemuImg
{
    public const string Tool = "qemu-img";

    public static string FormatName(DiskFormat f) => f switch
    {
        DiskFormat.Qcow2 => "qcow2",
        DiskFormat.Raw => "raw",
        DiskFormat.Vhdx => "vhdx",
        _ => throw new ArgumentOutOfRangeException(nameof(f)),
    };

    public static DiskFormat? ParseFormat(string name) => name switch
    {
        "qcow2" => DiskFormat.Qcow2,
        "raw" => DiskFormat.Raw,
        "vhdx" => DiskFormat.Vhdx,
        _ => null,
    };

    public static Task CreateAsync(string path, DiskFormat format, long sizeBytes, CancellationToken ct = default)
        => ProcessRunner.RunAsync(Tool, ["create", "-q", "-f", FormatName(format), path, sizeBytes.ToString()], ct);

    /// <summary>Creates a qcow2 overlay whose backing file is <paramref name="backingPath"/> (a qcow2 layer).</summary>
    public static Task CreateOverlayAsync(string path, string backingPath, CancellationToken ct = default)
        => ProcessRunner.RunAsync(Tool, ["create", "-q", "-f", "qcow2", "-b", backingPath, "-F", "qcow2", path], ct);

    /// <summary>
    /// Creates an overlay without opening the backing file (which a running QEMU may hold locked);
    /// the size must be given since it cannot be read from the backing file.
    /// </summary>
    public static Task CreateOverlayUnsafeAsync(string path, string backingPath, long sizeBytes, CancellationToken ct = default)
        => ProcessRunner.RunAsync(Tool, ["create", "-q", "-f", "qcow2", "-u", "-b", backingPath, "-F", "qcow2", path, sizeBytes.ToString()], ct);

    /// <summary>Reads an image header. <paramref name="forceShare"/> reads images a running QEMU holds locked.</summary>
    /// <summary>Grows a qcow2 image's virtual size (never shrinks: --shrink is not passed).</summary>
    public static Task ResizeAsync(string path, long sizeBytes, CancellationToken ct = default) =>
        ProcessRunner.RunAsync(Tool, ["resize", "-f", "qcow2", path, sizeBytes.ToString(System.Globalization.CultureInfo.InvariantCulture)], ct);

    public static async Task<ImageInfo> InfoAsync(string path, bool forceShare = false, CancellationToken ct = default)
    {
        List<string> args = ["info", "--output=json"];
        if (forceShare) args.Add("-U");
        args.Add(path);
        var r = await ProcessRunner.RunAsync(Tool, args, ct);
        using var doc = JsonDocument.Parse(r.StandardOutput);
        var root = doc.RootElement;
        var format = root.GetProperty("format").GetString() ?? "";
        return new ImageInfo(
            path,
            ParseFormat(format),
            format,
            root.GetProperty("virtual-size").GetInt64(),
            root.TryGetProperty("actual-size", out var a) ? a.GetInt64() : 0,
            root.TryGetProperty("full-backing-filename", out var b) ? b.GetString() : root.TryGetProperty("backing-filename", out var b2) ? b2.GetString() : null,
            root.TryGetProperty("backing-filename-format", out var bf) ? bf.GetString() : null);
    }

    /// <summary>Writes the full content seen through <paramref name="source"/>'s chain to a standalone image.</summary>
    public static Task ConvertAsync(string source, DiskFormat? sourceFormat, string target, DiskFormat targetFormat, CancellationToken ct = default)
    {
        List<string> args = ["convert", "-q"];
        if (sourceFormat is { } sf) { args.Add("-f"); args.Add(FormatName(sf)); }
        args.AddRange(["-O", FormatName(targetFormat), source, target]);
        return ProcessRunner.RunAsync(Tool, args, ct);
    }

    /// <summary>True when both images present the same guest-visible content.</summary>
    public static async Task<bool> CompareAsync(string a, string b, bool forceShare = false, CancellationToken ct = default)
    {
        List<string> args = ["compare", "-q"];
        if (forceShare) args.Add("-U");
        args.AddRange([a, b]);
        var r = await ProcessRunner.RunAsync(Tool, args, ct, throwOnError: false);
        return r.ExitCode switch
        {
            0 => true,
            1 => false,
            _ => throw new ToolFailedException(Tool, r.ExitCode, r.StandardError.Trim()),
        };
    }

    /// <summary>Merges <paramref name="top"/> into its backing file (the top file is left as it was).</summary>
    public static Task CommitAsync(string top, CancellationToken ct = default)
        => ProcessRunner.RunAsync(Tool, ["commit", "-q", "-d", top], ct);

    /// <summary>
    /// Changes <paramref name="path"/>'s backing file. Safe mode copies into <paramref name="path"/> whatever differs
    /// between the old and new chains so its content stays the same; unsafe mode only rewrites the header
    /// (for when both chains hold the same data). A null backing makes the image standalone.
    /// </summary>
    public static Task RebaseAsync(string path, string? newBacking, bool safe, CancellationToken ct = default)
    {
        List<string> args = ["rebase", "-q", "-f", "qcow2"];
        if (!safe) args.Add("-u");
        args.AddRange(["-b", newBacking ?? ""]);
        if (newBacking is not null) args.AddRange(["-F", "qcow2"]);
        args.Add(path);
        return ProcessRunner.RunAsync(Tool, args, ct);
    }

    /// <summary>Runs a consistency check; returns true when the image has no errors or leaks.</summary>
    public static async Task<bool> CheckAsync(string path, CancellationToken ct = default)
        => (await ProcessRunner.RunAsync(Tool, ["check", "-q", path], ct, throwOnError: false)).ExitCode == 0;
}
