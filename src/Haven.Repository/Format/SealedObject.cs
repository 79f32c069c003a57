using System.Buffers;
using System.Collections.Concurrent;
using System.Security.Cryptography;
using ZstdSharp;

namespace Haven.Repository;

/// <summary>
/// The one binary envelope of encrypted objects (chunks and manifests):
/// <c>magic(4) | version(1)=1 | flags(1) | nonce(12) | AES-256-GCM ciphertext | tag(16)</c>.
/// flags: 0 = payload stored as is, 1 = payload is one zstd frame. The associated data is the first six
/// bytes followed by a binding that ties the object to its key (the chunk id, or the backup id), so a
/// flipped flag, a swapped object or a moved file fails the tag.
/// </summary>
internal static class SealedObject
{
    public const int HeaderSize = 18;
    public const int TagSize = 16;
    public const int Overhead = HeaderSize + TagSize;
    public const byte Version = 1;
    public const byte FlagRaw = 0;
    public const byte FlagZstd = 1;

    public static ReadOnlySpan<byte> ChunkMagic => "HVCK"u8;
    public static ReadOnlySpan<byte> ManifestMagic => "HVMF"u8;
    public static ReadOnlySpan<byte> SummaryMagic => "HVSM"u8;
    public static ReadOnlySpan<byte> IndexMagic => "HVIX"u8;

    /// <summary>zstd level 1: on disk images it compresses nearly as well as the default level 3 at about twice the speed (bench/Haven.Bench.Chunking).</summary>
    public const int CompressionLevel = 1;

    private static readonly ConcurrentBag<Compressor> Compressors = [];
    private static readonly ConcurrentBag<Decompressor> Decompressors = [];

    /// <summary>
    /// Seals <paramref name="plaintext"/> into <paramref name="output"/> (at least Overhead + plaintext
    /// length bytes); returns the object's length. The payload is compressed when that saves at least
    /// 1/32 of it, otherwise stored raw, so incompressible data costs no decompression later.
    /// </summary>
    public static int Seal(ReadOnlySpan<byte> magic, byte[] key, ReadOnlySpan<byte> binding, ReadOnlySpan<byte> plaintext, Span<byte> output, bool compress)
    {
        magic.CopyTo(output);
        output[4] = Version;
        var nonce = output.Slice(6, 12);
        RandomNumberGenerator.Fill(nonce);
        var body = output[HeaderSize..];
        var payloadLength = 0;
        var flags = FlagRaw;
        if (compress && plaintext.Length >= 64)
        {
            var compressor = Compressors.TryTake(out var c) ? c : new Compressor(CompressionLevel);
            try
            {
                if (!LooksIncompressible(compressor, plaintext, body)
                    && compressor.TryWrap(plaintext, body[..(plaintext.Length - plaintext.Length / 32)], out var written))
                {
                    payloadLength = written;
                    flags = FlagZstd;
                }
            }
            finally { Compressors.Add(compressor); }
        }
        output[5] = flags;
        using var aes = new AesGcm(key, TagSize);
        Span<byte> ad = stackalloc byte[6 + binding.Length];
        output[..6].CopyTo(ad);
        binding.CopyTo(ad[6..]);
        if (flags == FlagZstd)
        {
            var payload = body[..payloadLength];
            aes.Encrypt(nonce, payload, payload, body.Slice(payloadLength, TagSize), ad);
        }
        else
        {
            payloadLength = plaintext.Length;
            aes.Encrypt(nonce, plaintext, body[..payloadLength], body.Slice(payloadLength, TagSize), ad);
        }
        return HeaderSize + payloadLength + TagSize;
    }

    private const int SampleSize = 4 << 10, Samples = 8;

    /// <summary>
    /// True when <see cref="Samples"/> pieces spread over a large plaintext compress by less than 1/32 together:
    /// then the whole would almost surely miss the 1/32 threshold, and compressing it (about a third of the CPU
    /// of sealing a random chunk) is skipped. A writer's choice only: the object is still flags 0 or 1.
    /// <paramref name="scratch"/> (the output body) is free at this point.
    /// </summary>
    private static bool LooksIncompressible(Compressor compressor, ReadOnlySpan<byte> plaintext, Span<byte> scratch)
    {
        if (plaintext.Length < 4 * SampleSize * Samples) return false;
        var stride = plaintext.Length / Samples;
        long saved = 0;
        for (var i = 0; i < Samples; i++)
        {
            var sample = plaintext.Slice(i * stride, SampleSize);
            if (!compressor.TryWrap(sample, scratch[..SampleSize], out var written)) continue; // no gain at all
            saved += SampleSize - written;
        }
        return saved < SampleSize * Samples / 32;
    }

    /// <summary>
    /// Authenticates and opens <paramref name="sealedObject"/> into <paramref name="into"/>; the sealed
    /// buffer may be used as scratch space (compressed payloads are decrypted in place). Returns the plaintext length, or null with
    /// <paramref name="problem"/> set when the object is not what the key and binding say.
    /// Throws <see cref="ArgumentException"/> only when the plaintext is valid but does not fit.
    /// </summary>
    public static int? Open(ReadOnlySpan<byte> magic, byte[] key, ReadOnlySpan<byte> binding, Span<byte> sealedObject, Span<byte> into, int maxPlaintext, out string problem)
    {
        if (!TryDecrypt(magic, key, binding, sealedObject, into, maxPlaintext, out var flags, out var payloadLength, out problem)) return null;
        if (flags == FlagRaw) return payloadLength;
        return Decompress(sealedObject.Slice(HeaderSize, payloadLength), into, maxPlaintext, ref problem);
    }

    /// <summary>As <see cref="Open"/>, into a new array of exactly the plaintext's length (manifests).</summary>
    public static byte[]? OpenToArray(ReadOnlySpan<byte> magic, byte[] key, ReadOnlySpan<byte> binding, Span<byte> sealedObject, int maxPlaintext, out string problem)
    {
        if (!TryDecrypt(magic, key, binding, sealedObject, [], maxPlaintext, out var flags, out var payloadLength, out problem)) return null;
        var payload = sealedObject.Slice(HeaderSize, payloadLength);
        if (flags == FlagRaw) return payload.ToArray();
        if (DeclaredSize(payload, maxPlaintext, ref problem) is not { } size) return null;
        var plaintext = new byte[size];
        return Decompress(payload, plaintext, maxPlaintext, ref problem) is null ? null : plaintext;
    }

    /// <summary>
    /// As <see cref="OpenToArray"/>, but a raw payload is decrypted in place and returned as a slice of
    /// <paramref name="sealedObject"/> (no copy of a large index object).
    /// </summary>
    public static ArraySegment<byte>? OpenInPlace(ReadOnlySpan<byte> magic, byte[] key, ReadOnlySpan<byte> binding, ArraySegment<byte> sealedObject, int maxPlaintext, out string problem)
    {
        if (!TryDecrypt(magic, key, binding, sealedObject, [], maxPlaintext, out var flags, out var payloadLength, out problem)) return null;
        if (flags == FlagRaw) return sealedObject.Slice(HeaderSize, payloadLength);
        var payload = sealedObject.AsSpan(HeaderSize, payloadLength);
        if (DeclaredSize(payload, maxPlaintext, ref problem) is not { } size) return null;
        var plaintext = new byte[size];
        if (Decompress(payload, plaintext, maxPlaintext, ref problem) is null) return null;
        return new ArraySegment<byte>(plaintext);
    }

    /// <summary>
    /// Checks the envelope and decrypts: a raw payload straight into <paramref name="rawInto"/> when it is
    /// large enough, otherwise (and always for zstd payloads) in place inside <paramref name="sealedObject"/>.
    /// </summary>
    private static bool TryDecrypt(ReadOnlySpan<byte> magic, byte[] key, ReadOnlySpan<byte> binding, Span<byte> sealedObject, Span<byte> rawInto, int maxPlaintext,
        out byte flags, out int payloadLength, out string problem)
    {
        problem = "";
        flags = 0;
        payloadLength = sealedObject.Length - Overhead;
        if (sealedObject.Length < Overhead) { problem = $"object is {sealedObject.Length} bytes, shorter than any sealed object"; return false; }
        if (!sealedObject[..4].SequenceEqual(magic)) { problem = "wrong magic bytes"; return false; }
        if (sealedObject[4] != Version) { problem = $"unknown envelope version {sealedObject[4]}"; return false; }
        flags = sealedObject[5];
        if (flags is not (FlagRaw or FlagZstd)) { problem = $"unknown flags {flags}"; return false; }
        if (payloadLength > maxPlaintext) { problem = $"payload of {payloadLength} bytes is larger than allowed ({maxPlaintext})"; return false; }
        var nonce = sealedObject.Slice(6, 12);
        var payload = sealedObject.Slice(HeaderSize, payloadLength);
        var tag = sealedObject.Slice(HeaderSize + payloadLength, TagSize);
        Span<byte> ad = stackalloc byte[6 + binding.Length];
        sealedObject[..6].CopyTo(ad);
        binding.CopyTo(ad[6..]);
        using var aes = new AesGcm(key, TagSize);
        try
        {
            if (flags == FlagRaw && !rawInto.IsEmpty)
            {
                if (payloadLength > rawInto.Length) throw new ArgumentException($"buffer of {rawInto.Length} bytes is too small for {payloadLength} bytes", "into");
                aes.Decrypt(nonce, payload, tag, rawInto[..payloadLength], ad);
            }
            else aes.Decrypt(nonce, payload, tag, payload, ad);
            return true;
        }
        catch (AuthenticationTagMismatchException) { problem = "authentication failed (AES-GCM tag mismatch)"; return false; }
    }

    private static int? DeclaredSize(ReadOnlySpan<byte> payload, int maxPlaintext, ref string problem)
    {
        ulong size;
        try { size = Decompressor.GetDecompressedSize(payload); }
        catch (ZstdException e) { problem = "compressed payload is invalid: " + e.Message; return null; }
        if (size > (ulong)maxPlaintext) { problem = "compressed payload does not declare a valid size"; return null; }
        return (int)size;
    }

    private static int? Decompress(ReadOnlySpan<byte> payload, Span<byte> into, int maxPlaintext, ref string problem)
    {
        if (DeclaredSize(payload, maxPlaintext, ref problem) is not { } size) return null;
        if (size > into.Length) throw new ArgumentException($"buffer of {into.Length} bytes is too small for {size} bytes", nameof(into));
        var decompressor = Decompressors.TryTake(out var d) ? d : new Decompressor();
        try
        {
            if (decompressor.TryUnwrap(payload, into[..size], out var written) && written == size) return written;
            problem = "compressed payload does not decompress to its declared size";
            return null;
        }
        catch (ZstdException e) { problem = "compressed payload is invalid: " + e.Message; return null; }
        finally { Decompressors.Add(decompressor); }
    }

    /// <summary>A pooled buffer big enough for a sealed object of <paramref name="plaintextLength"/> bytes.</summary>
    public static byte[] Rent(int plaintextLength) => ArrayPool<byte>.Shared.Rent(Overhead + plaintextLength);
}
