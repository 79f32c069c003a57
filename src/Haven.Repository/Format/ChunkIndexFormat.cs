using System.Buffers.Binary;
using System.Security.Cryptography;

namespace Haven.Repository;

/// <summary>
/// The binary per-disk chunk index of format version 2 (docs/repository-format.md, "Chunk index objects"):
/// a 64-byte header (magic, version, chunk size, disk size, entry count, SHA-256 of the entries) followed by
/// one 32-byte entry per chunk: the chunk id, or 32 zero bytes where the disk reads as zeros. Fixed-size
/// entries: entry i is at 64 + 32·i, so a reader can seek to any chunk without parsing the others.
/// </summary>
internal static class ChunkIndexFormat
{
    public const int HeaderSize = 64;
    public const int EntrySize = ChunkId.Length;
    public const uint Version = 1;
    /// <summary>Largest index plaintext accepted: 33.5 million entries (32 TiB at 1 MiB chunks).</summary>
    public const int MaxBytes = 1 << 30;

    public static ReadOnlySpan<byte> Magic => "HVNINDEX"u8;

    public static long Length(long entries) => HeaderSize + entries * EntrySize;

    /// <summary>The index of <paramref name="disk"/> as bytes (header and entries).</summary>
    public static byte[] Write(DiskManifest disk)
    {
        var count = disk.Chunks.LongLength;
        if (Length(count) > MaxBytes) throw new ArgumentException($"disk {disk.Name}: {count} chunks is more than one index object holds", nameof(disk));
        var bytes = new byte[Length(count)];
        var entries = bytes.AsSpan(HeaderSize);
        for (var i = 0; i < disk.Chunks.Length; i++)
            if (disk.Chunks[i] is { } id) id.WriteTo(entries.Slice(i * EntrySize, EntrySize));
        Magic.CopyTo(bytes);
        BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(8), Version);
        BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(12), (uint)disk.ChunkSize);
        BinaryPrimitives.WriteInt64LittleEndian(bytes.AsSpan(16), disk.SizeBytes);
        BinaryPrimitives.WriteInt64LittleEndian(bytes.AsSpan(24), count);
        SHA256.HashData(entries, bytes.AsSpan(32, 32));
        return bytes;
    }

    /// <summary>
    /// Checks an index's header and entry checksum against what the summary says of the disk; returns the
    /// problem, or null. After it returns null, <see cref="Entry"/> is safe for 0..count-1.
    /// </summary>
    public static string? Check(ReadOnlySpan<byte> index, int chunkSize, long sizeBytes)
    {
        if (index.Length < HeaderSize) return $"index is {index.Length} bytes, shorter than its header";
        if (!index[..8].SequenceEqual(Magic)) return "index has wrong magic bytes";
        var version = BinaryPrimitives.ReadUInt32LittleEndian(index[8..]);
        if (version != Version) return $"index version {version} is not supported (this Haven reads {Version})";
        var size = BinaryPrimitives.ReadInt64LittleEndian(index[16..]);
        var count = BinaryPrimitives.ReadInt64LittleEndian(index[24..]);
        if (BinaryPrimitives.ReadUInt32LittleEndian(index[12..]) != (uint)chunkSize || size != sizeBytes || size < 0)
            return "index header does not match the disk's size and chunk size";
        if (count != DiskManifest.ChunkCount(sizeBytes, chunkSize) || index.Length != Length(count))
            return "index length does not match its chunk count";
        Span<byte> sum = stackalloc byte[32];
        SHA256.HashData(index[HeaderSize..], sum);
        return sum.SequenceEqual(index.Slice(32, 32)) ? null : "index entries do not match their checksum";
    }

    /// <summary>Entry <paramref name="i"/>: the chunk id, or null for a zero chunk.</summary>
    public static ChunkId? Entry(ReadOnlySpan<byte> index, long i)
    {
        var entry = index.Slice(checked((int)(HeaderSize + i * EntrySize)), EntrySize);
        return entry.IndexOfAnyExcept((byte)0) < 0 ? null : new ChunkId(entry);
    }

    public static long Count(ReadOnlySpan<byte> index) => (index.Length - HeaderSize) / EntrySize;
}
