using Haven.Nbd;
using Microsoft.Win32.SafeHandles;

namespace Haven.Backup;

/// <summary>Where a restore writes a disk: an NBD export (qcow2, VHDX, or a VM's disk) or a plain raw file.</summary>
public interface IBlockTarget
{
    Task WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken ct);
    Task WriteZeroesAsync(long offset, long length, CancellationToken ct);
    Task FlushAsync(CancellationToken ct);
}

public sealed class NbdBlockTarget(NbdClient client) : IBlockTarget
{
    public Task WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken ct) => client.WriteAsync(offset, data, ct);
    public Task WriteZeroesAsync(long offset, long length, CancellationToken ct) => client.WriteZeroesAsync(offset, length, ct);
    public Task FlushAsync(CancellationToken ct) => client.FlushAsync(ct);
}

/// <summary>
/// A raw image file written with positional writes: no extra process and no copy through a socket.
/// Zero ranges are punched by leaving them unwritten in a new sparse file, or written as zeros otherwise.
/// </summary>
public sealed class RawFileBlockTarget(SafeFileHandle file) : IBlockTarget
{
    private static readonly byte[] Zeros = new byte[1 << 20];

    public async Task WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken ct) => await RandomAccess.WriteAsync(file, data, offset, ct);

    public async Task WriteZeroesAsync(long offset, long length, CancellationToken ct)
    {
        for (long done = 0; done < length; done += Zeros.Length)
            await RandomAccess.WriteAsync(file, Zeros.AsMemory(0, (int)Math.Min(Zeros.Length, length - done)), offset + done, ct);
    }

    public Task FlushAsync(CancellationToken ct)
    {
        RandomAccess.FlushToDisk(file);
        return Task.CompletedTask;
    }
}
