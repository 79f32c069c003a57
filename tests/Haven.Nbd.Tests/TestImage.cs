using Haven.Qemu.Images;

namespace Haven.Nbd.Tests;

/// <summary>One qemu-io step applied to a test image and to its expected content.</summary>
public abstract record ImageOp(long Offset, long Length)
{
    /// <summary>Data written as a pattern byte (0 writes allocated zero data).</summary>
    public sealed record Write(byte Pattern, long Offset, long Length) : ImageOp(Offset, Length);
    /// <summary>`write -z`: a qcow2 zero cluster.</summary>
    public sealed record Zero(long Offset, long Length) : ImageOp(Offset, Length);
    /// <summary>`discard`: unallocated again.</summary>
    public sealed record Discard(long Offset, long Length) : ImageOp(Offset, Length);

    public string Command => this switch
    {
        Write w => $"write -P 0x{w.Pattern:x2} {Offset} {Length}",
        Zero => $"write -z {Offset} {Length}",
        Discard => $"discard {Offset} {Length}",
        _ => throw new InvalidOperationException(),
    };
}

/// <summary>A qcow2 image made with qemu-img/qemu-io, and the bytes it should read as.</summary>
public sealed class TestImage
{
    private TestImage(string path, byte[] expected) { Path = path; Expected = expected; }

    public string Path { get; }
    public byte[] Expected { get; }

    public static async Task<TestImage> CreateAsync(string path, long size, IReadOnlyList<ImageOp> ops, CancellationToken ct = default)
    {
        await QemuImg.CreateAsync(path, DiskFormat.Qcow2, size, ct);
        var image = new TestImage(path, new byte[size]);
        await image.ApplyAsync(ops, ct);
        return image;
    }

    /// <summary>Runs the steps offline with qemu-io (one process) and mirrors them in <see cref="Expected"/>.</summary>
    public async Task ApplyAsync(IReadOnlyList<ImageOp> ops, CancellationToken ct = default)
    {
        if (ops.Count == 0) return;
        List<string> args = ["-f", "qcow2"];
        foreach (var op in ops)
        {
            args.Add("-c");
            args.Add(op.Command);
            Expected.AsSpan((int)op.Offset, (int)op.Length).Fill(op is ImageOp.Write w ? w.Pattern : (byte)0);
        }
        args.Add(Path);
        await ProcessRunner.RunAsync("qemu-io", args, ct);
    }
}
