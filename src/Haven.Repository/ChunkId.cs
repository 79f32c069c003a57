using System.Buffers.Binary;
using System.Diagnostics.CodeAnalysis;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Haven.Repository;

/// <summary>
/// The id of a chunk: keyed BLAKE3 of its plaintext under the repository's chunk-id key (32 bytes), so equal
/// data dedups while the id reveals nothing about the data to someone without the key. Printed and stored
/// as 64 lower-case hex digits. Held as four integers: cheap to compare and hash in large sets.
/// </summary>
[JsonConverter(typeof(ChunkIdJsonConverter))]
public readonly record struct ChunkId
{
    public const int Length = 32;

    private readonly ulong _a, _b, _c, _d;

    public ChunkId(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length != Length) throw new ArgumentException($"a chunk id is {Length} bytes, not {bytes.Length}", nameof(bytes));
        _a = BinaryPrimitives.ReadUInt64BigEndian(bytes);
        _b = BinaryPrimitives.ReadUInt64BigEndian(bytes[8..]);
        _c = BinaryPrimitives.ReadUInt64BigEndian(bytes[16..]);
        _d = BinaryPrimitives.ReadUInt64BigEndian(bytes[24..]);
    }

    public void WriteTo(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt64BigEndian(destination, _a);
        BinaryPrimitives.WriteUInt64BigEndian(destination[8..], _b);
        BinaryPrimitives.WriteUInt64BigEndian(destination[16..], _c);
        BinaryPrimitives.WriteUInt64BigEndian(destination[24..], _d);
    }

    public byte[] ToArray()
    {
        var bytes = new byte[Length];
        WriteTo(bytes);
        return bytes;
    }

    /// <summary>The first byte, which names the chunk's folder ("chunks/&lt;2 hex&gt;/").</summary>
    public byte FirstByte => (byte)(_a >> 56);

    /// <summary>
    /// The first 8 bytes. Garbage collection marks prefixes, not whole ids (8 bytes an entry instead of 32): two
    /// chunks sharing a prefix only make GC keep an unreferenced chunk, never delete a referenced one.
    /// </summary>
    public ulong Prefix => _a;

    public bool Equals(ChunkId other) => _a == other._a && _b == other._b && _c == other._c && _d == other._d;

    // The bytes are a keyed hash, uniformly distributed: any 32 of them make a good hash code.
    public override int GetHashCode() => (int)_b;

    /// <summary>Byte-wise (big-endian) order of the 32 id bytes: the order of the chunk index cache file.</summary>
    internal static int CompareBytes(ChunkId x, ChunkId y)
    {
        var c = x._a.CompareTo(y._a);
        if (c != 0) return c;
        c = x._b.CompareTo(y._b);
        if (c != 0) return c;
        c = x._c.CompareTo(y._c);
        return c != 0 ? c : x._d.CompareTo(y._d);
    }

    internal static readonly IComparer<ChunkId> ByteOrder = Comparer<ChunkId>.Create(CompareBytes);

    public override string ToString()
    {
        Span<byte> bytes = stackalloc byte[Length];
        WriteTo(bytes);
        return Convert.ToHexStringLower(bytes);
    }

    public static ChunkId Parse(string hex)
        => TryParse(hex, out var id) ? id : throw new FormatException($"not a chunk id (64 hex digits): \"{hex}\"");

    public static bool TryParse([NotNullWhen(true)] string? hex, out ChunkId id) => TryParse(hex.AsSpan(), out id);

    public static bool TryParse(ReadOnlySpan<char> hex, out ChunkId id)
    {
        id = default;
        if (hex.Length != Length * 2) return false;
        Span<byte> bytes = stackalloc byte[Length];
        if (Convert.FromHexString(hex, bytes, out _, out var written) != System.Buffers.OperationStatus.Done || written != Length) return false;
        id = new ChunkId(bytes);
        return true;
    }
}

internal sealed class ChunkIdJsonConverter : JsonConverter<ChunkId>
{
    public override ChunkId Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType != JsonTokenType.String) throw new JsonException("a chunk id must be a string");
        Span<char> hex = stackalloc char[ChunkId.Length * 2];
        if (reader.ValueIsEscaped || reader.ValueSpan.Length != hex.Length) throw new JsonException("a chunk id is 64 hex digits");
        for (var i = 0; i < hex.Length; i++) hex[i] = (char)reader.ValueSpan[i];
        return ChunkId.TryParse(hex, out var id) ? id : throw new JsonException("a chunk id is 64 hex digits");
    }

    public override void Write(Utf8JsonWriter writer, ChunkId value, JsonSerializerOptions options)
    {
        Span<byte> bytes = stackalloc byte[ChunkId.Length];
        value.WriteTo(bytes);
        Span<byte> hex = stackalloc byte[ChunkId.Length * 2];
        const string digits = "0123456789abcdef";
        for (var i = 0; i < bytes.Length; i++)
        {
            hex[2 * i] = (byte)digits[bytes[i] >> 4];
            hex[2 * i + 1] = (byte)digits[bytes[i] & 0xF];
        }
        writer.WriteStringValue(hex);
    }
}
