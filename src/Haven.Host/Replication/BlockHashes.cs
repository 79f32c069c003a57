using System.Buffers;
using System.IO.Hashing;
using Haven.Backup;
using Haven.Nbd;

namespace Haven.Host.Replication;

/// <summary>
/// Per-block hashes for resynchronization: XxHash128 of each <see cref="ReplicationService.BlockSize"/> block
/// (the last one may be shorter), 16 bytes each. Both sides compute them the same way, so equal hashes mean
/// equal blocks (a 128-bit non-cryptographic hash: both sides are our own hosts, authenticated by mTLS).
/// </summary>
public static class BlockHashes
{
    public const int HashSize = 16;

    private static readonly byte[] ZeroHash = XxHash128.Hash(new byte[ReplicationService.BlockSize]);

    /// <summary>The hash of an all-zero block of <paramref name="length"/> bytes (unallocated blocks are not read).</summary>
    public static ReadOnlySpan<byte> Zero(int length) => length == ReplicationService.BlockSize ? ZeroHash : XxHash128.Hash(new byte[length]);

    /// <summary>Hashes every block of the export: allocated ones read in runs of up to 1 MiB, holes as zero blocks.</summary>
    public static async Task<byte[]> OfAsync(NbdClient nbd, CancellationToken ct)
    {
        var plan = await ChunkPlan.BuildAsync(nbd, ReplicationService.BlockSize, null, ct);
        var hashes = new byte[plan.ChunkCount * HashSize];
        var buffer = ArrayPool<byte>.Shared.Rent(ReplicationService.MaxDataExtent);
        try
        {
            var perRead = ReplicationService.MaxDataExtent / ReplicationService.BlockSize;
            var i = 0;
            while (i < plan.ChunkCount)
            {
                if (!plan.Read[i])
                {
                    Zero(plan.ChunkLength(i)).CopyTo(hashes.AsSpan(i * HashSize, HashSize));
                    i++;
                    continue;
                }
                var first = i;
                while (i < plan.ChunkCount && plan.Read[i] && i - first < perRead) i++;
                var offset = (long)first * ReplicationService.BlockSize;
                var length = (int)(Math.Min(plan.DiskSize, (long)i * ReplicationService.BlockSize) - offset);
                await nbd.ReadAsync(offset, buffer.AsMemory(0, length), ct);
                for (var b = first; b < i; b++)
                    XxHash128.Hash(buffer.AsSpan((b - first) * ReplicationService.BlockSize, plan.ChunkLength(b)), hashes.AsSpan(b * HashSize, HashSize));
            }
            return hashes;
        }
        finally { ArrayPool<byte>.Shared.Return(buffer); }
    }
}
