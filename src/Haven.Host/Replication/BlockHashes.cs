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

    /// <summary>Hashes every block of the export: allocated ones read in runs of up to 1 MiB (several in flight), holes as zero blocks.</summary>
    public static async Task<byte[]> OfAsync(NbdClient nbd, CancellationToken ct)
    {
        var plan = await ChunkPlan.BuildAsync(nbd, ReplicationService.BlockSize, null, ct);
        var hashes = new byte[ArrayLength(plan.ChunkCount)];
        await foreach (var (run, data) in BlockRuns.ReadAsync(nbd, BlockRuns.Of(plan), ct))
            for (var b = run.FirstBlock; b < run.EndBlock; b++)
            {
                var into = hashes.AsSpan(b * HashSize, HashSize);
                if (run.IsData) XxHash128.Hash(data.Span.Slice((b - run.FirstBlock) * ReplicationService.BlockSize, plan.ChunkLength(b)), into);
                else Zero(plan.ChunkLength(b)).CopyTo(into);
            }
        return hashes;
    }

    /// <summary>Bytes of hashes for <paramref name="blocks"/> blocks; one array holds them, so a disk has at most 8 TiB for a resync.</summary>
    private static int ArrayLength(long blocks) => blocks * HashSize <= Array.MaxLength
        ? (int)(blocks * HashSize)
        : throw new InvalidDataException($"a disk of {blocks} blocks of 64 KiB is too large for resynchronization (at most {Array.MaxLength / HashSize} blocks)");

    /// <summary>
    /// Throws unless <paramref name="theirs"/> holds exactly one hash per block of each of this VM's disks
    /// (<paramref name="diskSizes"/>, as the primary knows them): a replica's answer is checked before it is used.
    /// </summary>
    public static void Check(byte[][] theirs, IReadOnlyList<long> diskSizes)
    {
        if (theirs.Length != diskSizes.Count)
            throw new InvalidDataException($"the replica sent block hashes of {theirs.Length} disk(s); this VM has {diskSizes.Count}");
        for (var d = 0; d < theirs.Length; d++)
        {
            var blocks = ChunkPlan.CountChunks(diskSizes[d], ReplicationService.BlockSize);
            if (theirs[d].Length != (long)blocks * HashSize)
                throw new InvalidDataException($"the replica sent {theirs[d].Length / HashSize} block hashes of disk {d}; it has {blocks} blocks");
        }
    }

    /// <summary>
    /// Gathers a replica's block hashes as they stream in, bounded by what the primary knows: one hash per block of
    /// each of its disks, allocated up front. A part for a disk that does not exist, one not continuing where the
    /// previous one of its disk ended (first block out of order or past the end), or more hashes than the disk has
    /// blocks is refused at once, before anything more is held in memory.
    /// </summary>
    public sealed class Collector
    {
        private readonly byte[][] _hashes;
        private readonly int[] _filled;

        public Collector(IReadOnlyList<long> diskSizes)
        {
            _hashes = new byte[diskSizes.Count][];
            for (var d = 0; d < _hashes.Length; d++) _hashes[d] = new byte[ArrayLength(ChunkPlan.CountChunks(diskSizes[d], ReplicationService.BlockSize))];
            _filled = new int[_hashes.Length];
        }

        public void Add(ulong disk, ulong firstBlock, ReadOnlySpan<byte> hashes)
        {
            if (disk >= (ulong)_hashes.Length)
                throw new InvalidDataException($"the replica sent block hashes of disk {disk}; this VM has {_hashes.Length} disk(s)");
            var into = _hashes[(int)disk];
            var blocks = into.Length / HashSize;
            var expected = _filled[disk] / HashSize;
            if (firstBlock >= (ulong)blocks && hashes.Length > 0)
                throw new InvalidDataException($"the replica sent block hashes of disk {disk} from block {firstBlock}; the disk has {blocks} blocks");
            if (firstBlock != (ulong)expected)
                throw new InvalidDataException($"the replica's block hashes of disk {disk} arrived out of order (block {firstBlock}, expected {expected})");
            if (hashes.Length % HashSize != 0)
                throw new InvalidDataException($"the replica sent {hashes.Length} bytes of block hashes, not a multiple of {HashSize}");
            if (hashes.Length > into.Length - _filled[disk])
                throw new InvalidDataException($"the replica sent more block hashes of disk {disk} than its {blocks} blocks");
            hashes.CopyTo(into.AsSpan(_filled[disk]));
            _filled[disk] += hashes.Length;
        }

        /// <summary>Every disk's hashes; throws when the replica stopped before sending them all.</summary>
        public byte[][] Complete()
        {
            for (var d = 0; d < _hashes.Length; d++)
                if (_filled[d] != _hashes[d].Length)
                    throw new InvalidDataException($"the replica sent {_filled[d] / HashSize} block hashes of disk {d}; it has {_hashes[d].Length / HashSize} blocks");
            return _hashes;
        }
    }
}
