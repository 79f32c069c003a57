using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Haven.Qemu.Images;

/// <summary>An image from outside was refused; the message is one line saying why.</summary>
public sealed class UntrustedImageException(string message) : Exception(message);

/// <summary>
/// Checks an image that comes from outside Haven (a user's file to import) before any QEMU tool opens it as an
/// image, and opens it only in ways that follow nothing. A hostile image can name other files for QEMU to read
/// as part of it (a qcow2 backing file or external data file such as /etc/shadow, or a "json:"/"nbd:" name
/// that reaches the network), or be another format than it claims (a raw disk whose guest wrote a qcow2 header).
/// So: the header is read here first, and an image with a backing file or data file, or of a format other than
/// the one expected, is refused; qemu-img then opens it with the format and the "file" protocol spelled out
/// (<see cref="Spec"/>), so neither its name nor its content picks a driver.
/// </summary>
public static class UntrustedImage
{
    private const int HeaderBytes = 64 * 1024;

    /// <summary>
    /// The image's format, size and name, or <see cref="UntrustedImageException"/>. <paramref name="expected"/>
    /// null means "whatever the header says" (qcow2, vhdx, or raw when it has no known image header).
    /// </summary>
    public static async Task<ImageInfo> InspectAsync(string path, DiskFormat? expected, CancellationToken ct = default)
    {
        RefuseOptionSyntax(path);
        if (Directory.Exists(path)) throw new UntrustedImageException($"{path} is a folder, not a disk image");
        if (!File.Exists(path)) throw new UntrustedImageException($"disk image not found: {path}");

        var header = new byte[HeaderBytes];
        int read;
        long length;
        using (var file = File.OpenHandle(path, FileMode.Open, FileAccess.Read))
        {
            length = RandomAccess.GetLength(file);
            read = await RandomAccess.ReadAsync(file, header, 0, ct);
        }
        var found = Detect(header.AsSpan(0, read));
        var format = QemuImg.ParseFormat(found);
        if (expected is { } e && format != e)
            throw new UntrustedImageException($"{path} is a {found} image, not {QemuImg.FormatName(e)} as given");
        if (format is null) throw new UntrustedImageException($"{path} is a {found} image; Haven imports qcow2, raw and vhdx");
        if (format == DiskFormat.Qcow2) CheckQcow2(path, header.AsSpan(0, read));
        // Any file "is" a raw image to qemu-img (which rounds its size up to a sector), so judge by the real length.
        if (format == DiskFormat.Raw && (length == 0 || length % 512 != 0))
            throw new UntrustedImageException($"{path} is not a disk image (no qcow2/vhdx header, and {length} bytes is not a whole number of 512-byte sectors)");

        ProcessResult r;
        try { r = await ProcessRunner.RunAsync(QemuImg.Tool, ["info", "--output=json", "-U", Spec(path, format.Value)], ct); }
        catch (ToolFailedException ex) { throw new UntrustedImageException($"{path} is not a usable {found} image: {ex.Message}"); }
        using var doc = JsonDocument.Parse(r.StandardOutput);
        var root = doc.RootElement;
        // Belt and braces: what qemu-img itself saw must agree with the header check.
        foreach (var key in new[] { "backing-filename", "full-backing-filename" })
            if (root.TryGetProperty(key, out _)) throw new UntrustedImageException($"{path} has a backing file; Haven imports only standalone images");
        if (root.TryGetProperty("format-specific", out var fs) && fs.TryGetProperty("data", out var data) && data.ValueKind == JsonValueKind.Object
            && data.TryGetProperty("data-file", out _))
            throw new UntrustedImageException($"{path} has an external data file; Haven imports only standalone images");
        var reported = root.GetProperty("format").GetString();
        if (reported != found) throw new UntrustedImageException($"{path}: qemu-img reads it as {reported}, not {found}");
        return new ImageInfo(path, format, found, root.GetProperty("virtual-size").GetInt64(),
            root.TryGetProperty("actual-size", out var a) ? a.GetInt64() : 0, null, null);
    }

    /// <summary>
    /// The image as a qemu-img/qemu-nbd filename that names its format driver and the "file" protocol
    /// explicitly: the path is taken literally (no protocol prefix, no option syntax) and no format is probed.
    /// </summary>
    public static string Spec(string path, DiskFormat format) =>
        "json:" + new JsonObject
        {
            ["driver"] = QemuImg.FormatName(format),
            ["file"] = new JsonObject { ["driver"] = "file", ["filename"] = path },
        }.ToJsonString();

    /// <summary>
    /// Refuses names QEMU tools might read as something other than a file name: relative names (nbd:host,
    /// json:{...}, file:x), and ':' or ',' anywhere (protocol prefixes, option strings), control characters.
    /// </summary>
    public static void RefuseOptionSyntax(string path)
    {
        if (!Path.IsPathFullyQualified(path)) throw new UntrustedImageException($"disk image path must be absolute: {Printable(path)}");
        foreach (var c in path)
        {
            if (c is ':' or ',') throw new UntrustedImageException($"disk image path contains '{c}', which QEMU tools may read as a protocol or option: {Printable(path)}; rename the file");
            if (char.IsControl(c)) throw new UntrustedImageException($"disk image path contains a control character: {Printable(path)}");
        }
    }

    /// <summary>The format a header shows: qemu-img's name for it, or "raw" when it is none it knows.</summary>
    public static string Detect(ReadOnlySpan<byte> h)
    {
        if (h.StartsWith((ReadOnlySpan<byte>)[(byte)'Q', (byte)'F', (byte)'I', 0xfb]))
            return h.Length >= 8 && BinaryPrimitives.ReadUInt32BigEndian(h[4..]) >= 2 ? "qcow2" : "qcow";
        if (h.StartsWith("vhdxfile"u8)) return "vhdx";
        if (h.StartsWith("QED\0"u8)) return "qed";
        if (h.StartsWith("KDMV"u8) || h.StartsWith("COWD"u8) || h.StartsWith("# Disk DescriptorFile"u8)) return "vmdk";
        if (h.StartsWith("conectix"u8)) return "vpc";
        if (h.Length >= 0x44 && BinaryPrimitives.ReadUInt32LittleEndian(h[0x40..]) == 0xbeda107f) return "vdi";
        if (h.StartsWith((ReadOnlySpan<byte>)[(byte)'L', (byte)'U', (byte)'K', (byte)'S', 0xba, 0xbe])) return "luks";
        if (h.StartsWith("WithoutFreeSpace"u8) || h.StartsWith("WithouFreSpacExt"u8)) return "parallels";
        if (h.StartsWith("Bochs Virtual HD Image"u8)) return "bochs";
        if (h.StartsWith("#!/bin/sh\n#V2.0 Format"u8)) return "cloop";
        return "raw";
    }

    /// <summary>qcow2 header (docs/interop/qcow2.txt): refuses a backing file and an external data file.</summary>
    private static void CheckQcow2(string path, ReadOnlySpan<byte> h)
    {
        if (h.Length < 72) throw new UntrustedImageException($"{path} is a truncated qcow2 image");
        var version = BinaryPrimitives.ReadUInt32BigEndian(h[4..]);
        var backingOffset = BinaryPrimitives.ReadUInt64BigEndian(h[8..]);
        var backingSize = BinaryPrimitives.ReadUInt32BigEndian(h[16..]);
        if (backingOffset != 0 || backingSize != 0)
        {
            var name = backingOffset + backingSize <= (ulong)h.Length ? Encoding.UTF8.GetString(h.Slice((int)backingOffset, (int)backingSize)) : "";
            throw new UntrustedImageException($"{path} has a backing file{(name.Length > 0 ? $" ({Printable(name)})" : "")}; Haven imports only standalone images");
        }
        if (version < 3) return; // version 2 has neither feature bits nor a data file
        if (h.Length < 104) throw new UntrustedImageException($"{path} is a truncated qcow2 image");
        const ulong ExternalDataFile = 1 << 2;
        if ((BinaryPrimitives.ReadUInt64BigEndian(h[72..]) & ExternalDataFile) != 0)
            throw new UntrustedImageException($"{path} has an external data file; Haven imports only standalone images");
        // Header extensions: a data file name (0x44415441) without the feature bit is refused too.
        var at = (long)BinaryPrimitives.ReadUInt32BigEndian(h[100..]);
        while (at + 8 <= h.Length)
        {
            var type = BinaryPrimitives.ReadUInt32BigEndian(h[(int)at..]);
            var len = BinaryPrimitives.ReadUInt32BigEndian(h[(int)(at + 4)..]);
            if (type == 0) break;
            if (type == 0x44415441) throw new UntrustedImageException($"{path} names an external data file; Haven imports only standalone images");
            at += 8 + ((len + 7L) & ~7L);
        }
    }

    /// <summary>A name from a file or user for a one-line message: control characters shown as '?', at most 200 characters.</summary>
    private static string Printable(string s)
    {
        var chars = s.Select(c => char.IsControl(c) ? '?' : c).Take(200).ToArray();
        return new string(chars) + (s.Length > 200 ? "..." : "");
    }
}
