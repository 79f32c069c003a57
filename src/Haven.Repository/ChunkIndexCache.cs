using System.Buffers;
using System.Buffers.Binary;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging;

namespace Haven.Repository;

/// <summary>
/// A host-local cache of which chunks a repository holds, so a backup writer does not LIST <c>chunks/</c>
/// on every start (on S3 that is one request per 1000 chunks). One file per repository id under
/// <see cref="Directory"/>; the file layout and why using it is safe are in docs/repository-format.md,
/// "Chunk index cache". The file is never part of the repository: deleting it only costs one listing.
/// Thread-safe; several processes may share the directory (files are replaced atomically).
/// </summary>
public sealed class ChunkIndexCache
{
    public static readonly TimeSpan DefaultMaxAge = TimeSpan.FromDays(7);

    internal const int HeaderSize = 64;
    internal const int ChecksumSize = 32;
    internal const int EntrySize = ChunkId.Length + 8;
    internal const byte FileVersion = 1;
    internal const string FileSuffix = ".chunk-index";
    internal static ReadOnlySpan<byte> Magic => "HVCI"u8;

    private long _listingsAvoided;

    /// <param name="directory">Where the files live, e.g. the host's data directory + "/cache"; created on first save.</param>
    /// <param name="maxAge">A file whose listing is older than this is not used (default 7 days): bounds how long objects removed behind Haven's back can stay "known".</param>
    /// <summary>Where clean-up failures are reported; nothing by default.</summary>
    public ILogger Log { get; set; } = Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance;

    public ChunkIndexCache(string directory, TimeSpan? maxAge = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        if (maxAge is { } age && age <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(maxAge), age, "the maximum age must be positive");
        Directory = Path.GetFullPath(directory);
        MaxAge = maxAge ?? DefaultMaxAge;
    }

    public string Directory { get; }
    public TimeSpan MaxAge { get; }

    /// <summary>Listings of <c>chunks/</c> that writers skipped because this cache was valid (since construction).</summary>
    public long ListingsAvoided => Interlocked.Read(ref _listingsAvoided);

    /// <summary>The cache file of one repository: <c>&lt;directory&gt;/&lt;repository id&gt;.chunk-index</c>.</summary>
    public string PathFor(string repositoryId) => Path.Combine(Directory, IdBytes(repositoryId).Hex + FileSuffix);

    /// <summary>Drops the cache of one repository: the next writer lists <c>chunks/</c> again.</summary>
    public void Invalidate(string repositoryId)
    {
        try { File.Delete(PathFor(repositoryId)); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Log.LogWarning(e, "cleanup failed: drop the chunk-index cache {Path}: {Error}", PathFor(repositoryId), e.Message);
        }
    }

    internal void CountListingAvoided() => Interlocked.Increment(ref _listingsAvoided);

    /// <summary>What a cache file holds. <see cref="Chunks"/> maps id → retain-until (unix seconds, 0 = unknown).</summary>
    internal sealed record Snapshot(long Epoch, DateTimeOffset BuiltAt, Dictionary<ChunkId, long> Chunks);

    /// <summary>The file of <paramref name="repositoryId"/>, or null when there is none or it is unreadable, corrupt or another repository's.</summary>
    internal Snapshot? TryLoad(string repositoryId)
    {
        var (raw, _) = IdBytes(repositoryId);
        byte[] bytes;
        try { bytes = File.ReadAllBytes(PathFor(repositoryId)); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
        return Parse(bytes, raw);
    }

    internal static Snapshot? Parse(ReadOnlySpan<byte> file, ReadOnlySpan<byte> repositoryId)
    {
        if (file.Length < HeaderSize + ChecksumSize) return null;
        Span<byte> sum = stackalloc byte[ChecksumSize];
        SHA256.HashData(file[..^ChecksumSize], sum);
        if (!sum.SequenceEqual(file[^ChecksumSize..])) return null;
        if (!file[..4].SequenceEqual(Magic) || file[4] != FileVersion || file[5..8].ContainsAnyExcept((byte)0)) return null;
        if (!file.Slice(8, 32).SequenceEqual(repositoryId)) return null;
        var epoch = BinaryPrimitives.ReadInt64LittleEndian(file[40..]);
        var builtAt = BinaryPrimitives.ReadInt64LittleEndian(file[48..]);
        var count = BinaryPrimitives.ReadInt64LittleEndian(file[56..]);
        if (epoch < 0 || count < 0 || count > (file.Length - HeaderSize - ChecksumSize) / EntrySize
            || HeaderSize + count * EntrySize + ChecksumSize != file.Length) return null;
        if (builtAt < DateTimeOffset.MinValue.ToUnixTimeSeconds() || builtAt > DateTimeOffset.MaxValue.ToUnixTimeSeconds()) return null;
        var n = (int)count;
        var ids = file.Slice(HeaderSize, n * ChunkId.Length);
        var retain = file.Slice(HeaderSize + n * ChunkId.Length, n * 8);
        var chunks = new Dictionary<ChunkId, long>(n);
        var previous = default(ChunkId);
        for (var i = 0; i < n; i++)
        {
            var id = new ChunkId(ids.Slice(i * ChunkId.Length, ChunkId.Length));
            // Strictly ascending: a writer bug or a file from elsewhere is refused, not half-used.
            if (i > 0 && ChunkId.CompareBytes(previous, id) >= 0) return null;
            chunks.Add(id, Math.Max(0, BinaryPrimitives.ReadInt64LittleEndian(retain[(i * 8)..])));
            previous = id;
        }
        return new Snapshot(epoch, DateTimeOffset.FromUnixTimeSeconds(builtAt), chunks);
    }

    /// <summary>
    /// Writes the file atomically (temp file, fsync, rename). With <paramref name="mergeExisting"/>, ids of a
    /// file already there for the same epoch are kept too (another writer on this host added them; both
    /// sets are valid at that epoch) and built-at becomes the older of the two; <paramref name="chunks"/>
    /// may then be modified. Returns false when the file could not be written (the cache is an
    /// optimisation: failing to save never fails a backup).
    /// </summary>
    internal bool Save(string repositoryId, long epoch, DateTimeOffset builtAt, Dictionary<ChunkId, long> chunks, bool mergeExisting)
    {
        if (epoch < 0) return false;
        var existing = TryLoad(repositoryId);
        // A writer that started before a GC must not replace a listing taken after it (still valid, ours is not).
        if (existing is { } newer && newer.Epoch > epoch) return false;
        if (mergeExisting && existing is { } old && old.Epoch == epoch)
        {
            foreach (var (id, until) in old.Chunks)
                if (!chunks.TryGetValue(id, out var mine) || mine < until) chunks[id] = until;
            if (old.BuiltAt < builtAt) builtAt = old.BuiltAt;
        }
        var path = PathFor(repositoryId);
        var temp = path + ".tmp-" + Guid.NewGuid().ToString("N");
        try
        {
            System.IO.Directory.CreateDirectory(Directory);
            var ids = new ChunkId[chunks.Count];
            chunks.Keys.CopyTo(ids, 0);
            Array.Sort(ids, ChunkId.ByteOrder);
            using (var file = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, bufferSize: 0))
            using (var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256))
            {
                var block = ArrayPool<byte>.Shared.Rent(64 * 1024);
                try
                {
                    var span = block.AsSpan();
                    Magic.CopyTo(span);
                    span[4..8].Clear();
                    span[4] = FileVersion;
                    IdBytes(repositoryId).Raw.CopyTo(span[8..]);
                    BinaryPrimitives.WriteInt64LittleEndian(span[40..], epoch);
                    BinaryPrimitives.WriteInt64LittleEndian(span[48..], builtAt.ToUnixTimeSeconds());
                    BinaryPrimitives.WriteInt64LittleEndian(span[56..], ids.Length);
                    var used = HeaderSize;
                    void Flush(ref int used)
                    {
                        hash.AppendData(block, 0, used);
                        file.Write(block, 0, used);
                        used = 0;
                    }
                    foreach (var id in ids)
                    {
                        if (used + ChunkId.Length > block.Length) Flush(ref used);
                        id.WriteTo(block.AsSpan(used));
                        used += ChunkId.Length;
                    }
                    foreach (var id in ids)
                    {
                        if (used + 8 > block.Length) Flush(ref used);
                        BinaryPrimitives.WriteInt64LittleEndian(block.AsSpan(used), chunks[id]);
                        used += 8;
                    }
                    Flush(ref used);
                    file.Write(hash.GetHashAndReset());
                    file.Flush(flushToDisk: true);
                }
                finally { ArrayPool<byte>.Shared.Return(block); }
            }
            // No directory fsync: after a crash the old file (valid at its own epoch) or none is equally safe.
            File.Move(temp, path, overwrite: true);
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            try { File.Delete(temp); }
            catch (Exception e2) when (e2 is IOException or UnauthorizedAccessException)
            {
                Log.LogWarning(e2, "cleanup failed: delete {Path}: {Error}", temp, e2.Message);
            }
            return false;
        }
    }

    private static (byte[] Raw, string Hex) IdBytes(string repositoryId)
    {
        ArgumentNullException.ThrowIfNull(repositoryId);
        if (repositoryId.Length != 64 || repositoryId.AsSpan().ContainsAnyExcept("0123456789abcdef"))
            throw new ArgumentException("a repository id is 64 lower-case hex digits", nameof(repositoryId));
        return (Convert.FromHexString(repositoryId), repositoryId);
    }
}
