using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Xunit;
using static Haven.Repository.Tests.RepoFixture;

namespace Haven.Repository.Tests;

/// <summary>
/// An independent reader written from docs/repository-format.md alone (framework crypto, Blake3, zstd,
/// Konscious Argon2id; none of Haven.Repository's code): if the document and the implementation drift apart, this fails.
/// </summary>
public sealed class SecondReaderTests
{
    /// <summary>The key-encryption key as the document defines it, chosen by <c>kdf.algorithm</c>.</summary>
    internal static byte[] DocumentKek(JsonElement config, string passphrase)
    {
        var kdf = config.GetProperty("kdf");
        var salt = kdf.GetProperty("salt").GetBytesFromBase64();
        var password = Encoding.UTF8.GetBytes(passphrase);
        var iterations = kdf.GetProperty("iterations").GetInt32();
        switch (kdf.GetProperty("algorithm").GetString())
        {
            case "pbkdf2-hmac-sha256":
                return Rfc2898DeriveBytes.Pbkdf2(password, salt, iterations, HashAlgorithmName.SHA256, 32);
            case "argon2id":
                Assert.Equal(19, kdf.GetProperty("version").GetInt32());
                using (var argon2 = new Konscious.Security.Cryptography.Argon2id(password)
                {
                    Salt = salt, MemorySize = kdf.GetProperty("memoryKiB").GetInt32(), Iterations = iterations, DegreeOfParallelism = kdf.GetProperty("parallelism").GetInt32(),
                })
                    return argon2.GetBytes(32);
            default:
                throw new InvalidDataException("unknown kdf");
        }
    }

    /// <summary>What the document's "Writing a reader" steps 1 give: the subkeys, and the repository's folder.</summary>
    private sealed record DocumentKeys(string Root, int Version, byte[] IdKey, byte[] ChunkKey, byte[] ManifestKey, byte[] SummaryKey, byte[] IndexKey);

    // config → master key: the KDF, AES-256-GCM unwrap with associated data
    // "haven-backup-repository/<version>/<id>/<chunkSize>/<grace s>/<stale s>"; subkeys by HKDF-SHA256.
    private static async Task<DocumentKeys> OpenAsDocumentSaysAsync(string root)
    {
        var config = JsonDocument.Parse(await File.ReadAllBytesAsync(Path.Combine(root, "config"), Ct)).RootElement;
        Assert.Equal("haven-backup-repository", config.GetProperty("format").GetString());
        var version = config.GetProperty("version").GetInt32();
        var kek = DocumentKek(config, Passphrase);
        var wrapped = config.GetProperty("masterKey");
        var ad = Encoding.ASCII.GetBytes($"haven-backup-repository/{version}/{config.GetProperty("id").GetString()}/{config.GetProperty("chunkSize").GetInt32()}/{config.GetProperty("gcGracePeriodSeconds").GetInt64()}/{config.GetProperty("lockStaleSeconds").GetInt64()}");
        var master = new byte[32];
        using (var aes = new AesGcm(kek, 16))
            aes.Decrypt(wrapped.GetProperty("nonce").GetBytesFromBase64(), wrapped.GetProperty("ciphertext").GetBytesFromBase64(), wrapped.GetProperty("tag").GetBytesFromBase64(), master, ad);
        byte[] Subkey(string label) => HKDF.DeriveKey(HashAlgorithmName.SHA256, master, 32, [], Encoding.ASCII.GetBytes(label));
        return new DocumentKeys(root, version, Subkey("haven/v1/chunk-id"), Subkey("haven/v1/chunk-encryption"), Subkey("haven/v1/manifest-encryption"),
            Subkey("haven/v2/summary-encryption"), Subkey("haven/v2/index-encryption"));
    }

    // Envelope: magic(4) version(1) flags(1) nonce(12) ciphertext tag(16); AD = first 6 bytes + binding.
    private static byte[] Open(byte[] obj, string magic, byte[] key, byte[] binding)
    {
        Assert.Equal(magic, Encoding.ASCII.GetString(obj, 0, 4));
        Assert.Equal(1, obj[4]);
        var payload = new byte[obj.Length - 34];
        using var aes = new AesGcm(key, 16);
        aes.Decrypt(obj.AsSpan(6, 12), obj.AsSpan(18, payload.Length), obj.AsSpan(18 + payload.Length, 16), payload, [.. obj.AsSpan(0, 6), .. binding]);
        return obj[5] switch
        {
            0 => payload,
            1 => new ZstdSharp.Decompressor().Unwrap(payload).ToArray(),
            _ => throw new InvalidDataException("flags"),
        };
    }

    /// <summary>One index entry: null for a zero chunk, else the chunk's plaintext, checked against its id.</summary>
    private static async Task<byte[]?> ChunkAsync(DocumentKeys keys, byte[]? id)
    {
        if (id is null) return null;
        var hex = Convert.ToHexStringLower(id);
        var plain = Open(await File.ReadAllBytesAsync(Path.Combine(keys.Root, "chunks", hex[..2], hex), Ct), "HVCK", keys.ChunkKey, id);
        using var hasher = Blake3.Hasher.NewKeyed(keys.IdKey);
        hasher.Update(plain);
        var mac = new byte[32];
        hasher.Finalize(mac);
        Assert.Equal(id, mac);
        return plain;
    }

    private static async Task<byte[]> RestoreAsync(DocumentKeys keys, long size, int chunkSize, IEnumerable<byte[]?> entries)
    {
        var restored = new MemoryStream();
        foreach (var id in entries)
        {
            var want = (int)Math.Min(chunkSize, size - restored.Length);
            var plain = await ChunkAsync(keys, id) ?? new byte[want];
            Assert.Equal(want, plain.Length);
            restored.Write(plain);
        }
        Assert.Equal(size, restored.Length);
        return restored.ToArray();
    }

    [Fact]
    public async Task A_reader_following_the_format_document_restores_a_version_1_backup()
    {
        await using var f = await CreateAsync(formatVersion: 1);
        var data = new[] { TextChunk("second reader"), RandomChunk(), RandomChunk(777) };
        var (backupId, _) = await f.BackupAsync("vm-x", data[0], data[1], null, data[2]);
        var keys = await OpenAsDocumentSaysAsync(f.StorePath);
        Assert.Equal(1, keys.Version);

        var manifestJson = Open(await File.ReadAllBytesAsync(Path.Combine(f.StorePath, "backups", backupId), Ct), "HVMF", keys.ManifestKey, Encoding.UTF8.GetBytes(backupId));
        var manifest = JsonDocument.Parse(manifestJson).RootElement;
        Assert.Equal(1, manifest.GetProperty("version").GetInt32());
        Assert.Equal(backupId, manifest.GetProperty("id").GetString());
        Assert.Equal("vm-x", manifest.GetProperty("vmName").GetString());
        var disk = manifest.GetProperty("disks")[0];
        var entries = disk.GetProperty("chunks").EnumerateArray().Select(e => e.ValueKind == JsonValueKind.Null ? null : Convert.FromHexString(e.GetString()!));
        var restored = await RestoreAsync(keys, disk.GetProperty("sizeBytes").GetInt64(), disk.GetProperty("chunkSize").GetInt32(), entries);
        Assert.Equal([.. data[0], .. data[1], .. new byte[ChunkSize], .. data[2]], restored);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)] // a version-1 repository after `repo upgrade`
    public async Task A_reader_following_the_format_document_restores_a_version_2_backup(bool upgraded)
    {
        await using var f = await CreateAsync(formatVersion: upgraded ? 1 : 2);
        var data = new[] { TextChunk("second reader"), RandomChunk(), RandomChunk(777) };
        var (backupId, _) = await f.BackupAsync("vm-x", data[0], data[1], null, data[2]);
        if (upgraded) await f.Repo.UpgradeAsync(Passphrase, Ct);
        var keys = await OpenAsDocumentSaysAsync(f.StorePath);
        Assert.Equal(2, keys.Version);
        Assert.False(Directory.Exists(Path.Combine(f.StorePath, "backups")) && Directory.EnumerateFiles(Path.Combine(f.StorePath, "backups")).Any());

        // Listing: summaries/<id>, sealed "HVSM" under the summary key, binding = the backup id.
        var summaryIds = Directory.GetFiles(Path.Combine(f.StorePath, "summaries")).Select(Path.GetFileName).ToList();
        Assert.Equal([backupId], summaryIds);
        var summary = JsonDocument.Parse(Open(await File.ReadAllBytesAsync(Path.Combine(f.StorePath, "summaries", backupId), Ct), "HVSM", keys.SummaryKey, Encoding.UTF8.GetBytes(backupId))).RootElement;
        Assert.Equal(2, summary.GetProperty("version").GetInt32());
        Assert.Equal(backupId, summary.GetProperty("id").GetString());
        Assert.Equal("vm-x", summary.GetProperty("vmName").GetString());
        var disk = summary.GetProperty("disks")[0];
        var size = disk.GetProperty("sizeBytes").GetInt64();
        var chunkSize = disk.GetProperty("chunkSize").GetInt32();

        // The index: indexes/<name>, sealed "HVIX" under the index key, binding = the name; its plaintext's SHA-256 is in the summary.
        var name = disk.GetProperty("index").GetString()!;
        var index = Open(await File.ReadAllBytesAsync(Path.Combine(f.StorePath, "indexes", name), Ct), "HVIX", keys.IndexKey, Encoding.UTF8.GetBytes(name));
        Assert.Equal(disk.GetProperty("indexSha256").GetString(), Convert.ToHexStringLower(SHA256.HashData(index)));
        // Header: "HVNINDEX", u32 version 1, u32 chunk size, i64 disk size, i64 count, SHA-256 of the entries; little-endian.
        Assert.Equal("HVNINDEX", Encoding.ASCII.GetString(index, 0, 8));
        Assert.Equal(1u, BitConverter.ToUInt32(index, 8));
        Assert.Equal((uint)chunkSize, BitConverter.ToUInt32(index, 12));
        Assert.Equal(size, BitConverter.ToInt64(index, 16));
        var count = BitConverter.ToInt64(index, 24);
        Assert.Equal((size + chunkSize - 1) / chunkSize, count);
        Assert.Equal(64 + 32 * count, index.Length);
        Assert.Equal(index[32..64], SHA256.HashData(index.AsSpan(64)));
        var entries = Enumerable.Range(0, (int)count).Select(i => index.AsSpan(64 + 32 * i, 32).ToArray()).Select(e => e.All(b => b == 0) ? null : e);
        var restored = await RestoreAsync(keys, size, chunkSize, entries);
        Assert.Equal([.. data[0], .. data[1], .. new byte[ChunkSize], .. data[2]], restored);
    }

    [Fact]
    public async Task An_immutable_repositorys_key_wrap_covers_its_immutability_as_documented()
    {
        var clock = new ManualClock(new DateTimeOffset(2025, 3, 1, 12, 0, 0, TimeSpan.Zero));
        var store = new FakeLockStore(clock);
        var options = new RepositoryOptions { ChunkSize = ChunkSize, Kdf = RepositoryKdf.Cheapest, Immutability = new RepositoryImmutability { Mode = Haven.Storage.RetentionMode.Compliance, Days = 30 } };
        await (await Repository.InitAsync(store, Passphrase, options, clock, Ct)).DisposeAsync();
        var config = JsonDocument.Parse((await store.GetAsync("config", Ct))!).RootElement;
        var immutability = config.GetProperty("immutability");
        var kek = DocumentKek(config, Passphrase);
        var ad = Encoding.ASCII.GetBytes($"haven-backup-repository/{config.GetProperty("version").GetInt32()}/{config.GetProperty("id").GetString()}/{config.GetProperty("chunkSize").GetInt32()}/{config.GetProperty("gcGracePeriodSeconds").GetInt64()}/{config.GetProperty("lockStaleSeconds").GetInt64()}"
            + $"/immutability/{immutability.GetProperty("mode").GetString()}/{immutability.GetProperty("days").GetInt32()}");
        Assert.EndsWith("/immutability/compliance/30", Encoding.ASCII.GetString(ad));
        var wrapped = config.GetProperty("masterKey");
        using var aes = new AesGcm(kek, 16);
        aes.Decrypt(wrapped.GetProperty("nonce").GetBytesFromBase64(), wrapped.GetProperty("ciphertext").GetBytesFromBase64(), wrapped.GetProperty("tag").GetBytesFromBase64(), new byte[32], ad);
    }

    [Fact]
    public void Chunk_ids_are_keyed_blake3_as_published()
    {
        // BLAKE3 reference test vector: keyed_hash of the empty input under "whats the Elvish word for friend".
        var id = KeySet.KeyedHash(Encoding.ASCII.GetBytes("whats the Elvish word for friend"), []);
        Assert.Equal("92b2b75604ed3c761f9d6f62392c8a9227ad0ea3f09573e783f1498a4ed60d26", id.ToString());
        Assert.Equal(id, ChunkId.Parse(id.ToString()));
        Assert.False(ChunkId.TryParse("92B2", out _));
    }
}
