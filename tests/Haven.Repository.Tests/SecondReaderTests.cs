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

    [Fact]
    public async Task A_reader_following_the_format_document_restores_a_backup()
    {
        await using var f = await CreateAsync();
        var data = new[] { TextChunk("second reader"), RandomChunk(), RandomChunk(777) };
        var (backupId, _) = await f.BackupAsync("vm-x", data[0], data[1], null, data[2]);

        // config → master key: Argon2id(passphrase UTF-8, salt, memoryKiB, passes, 1 lane, 32), AES-256-GCM unwrap,
        // associated data "haven-backup-repository/1/<id>/<chunkSize>/<grace s>/<stale s>".
        var config = JsonDocument.Parse(await File.ReadAllBytesAsync(Path.Combine(f.StorePath, "config"), Ct)).RootElement;
        Assert.Equal("argon2id", config.GetProperty("kdf").GetProperty("algorithm").GetString());
        var kek = DocumentKek(config, Passphrase);
        var wrapped = config.GetProperty("masterKey");
        var ad = Encoding.ASCII.GetBytes($"haven-backup-repository/1/{config.GetProperty("id").GetString()}/{config.GetProperty("chunkSize").GetInt32()}/{config.GetProperty("gcGracePeriodSeconds").GetInt64()}/{config.GetProperty("lockStaleSeconds").GetInt64()}");
        var master = new byte[32];
        using (var aes = new AesGcm(kek, 16))
            aes.Decrypt(wrapped.GetProperty("nonce").GetBytesFromBase64(), wrapped.GetProperty("ciphertext").GetBytesFromBase64(), wrapped.GetProperty("tag").GetBytesFromBase64(), master, ad);
        byte[] Subkey(string label) => HKDF.DeriveKey(HashAlgorithmName.SHA256, master, 32, [], Encoding.ASCII.GetBytes(label));
        var idKey = Subkey("haven/v1/chunk-id");
        var chunkKey = Subkey("haven/v1/chunk-encryption");
        var manifestKey = Subkey("haven/v1/manifest-encryption");

        // Envelope: magic(4) version(1) flags(1) nonce(12) ciphertext tag(16); AD = first 6 bytes + binding.
        static byte[] Open(byte[] obj, string magic, byte[] key, byte[] binding)
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

        var manifestJson = Open(await File.ReadAllBytesAsync(Path.Combine(f.StorePath, "backups", backupId), Ct), "HVMF", manifestKey, Encoding.UTF8.GetBytes(backupId));
        var manifest = JsonDocument.Parse(manifestJson).RootElement;
        Assert.Equal(1, manifest.GetProperty("version").GetInt32());
        Assert.Equal(backupId, manifest.GetProperty("id").GetString());
        Assert.Equal("vm-x", manifest.GetProperty("vmName").GetString());
        var disk = manifest.GetProperty("disks")[0];
        var size = disk.GetProperty("sizeBytes").GetInt64();
        var chunkSize = disk.GetProperty("chunkSize").GetInt32();
        var restored = new MemoryStream();
        foreach (var entry in disk.GetProperty("chunks").EnumerateArray())
        {
            var want = (int)Math.Min(chunkSize, size - restored.Length);
            if (entry.ValueKind == JsonValueKind.Null) { restored.Write(new byte[want]); continue; }
            var hex = entry.GetString()!;
            var id = Convert.FromHexString(hex);
            var plain = Open(await File.ReadAllBytesAsync(Path.Combine(f.StorePath, "chunks", hex[..2], hex), Ct), "HVCK", chunkKey, id);
            using var hasher = Blake3.Hasher.NewKeyed(idKey);
            hasher.Update(plain);
            var mac = new byte[32];
            hasher.Finalize(mac);
            Assert.Equal(id, mac);
            Assert.Equal(want, plain.Length);
            restored.Write(plain);
        }
        Assert.Equal([.. data[0], .. data[1], .. new byte[ChunkSize], .. data[2]], restored.ToArray());
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
        var ad = Encoding.ASCII.GetBytes($"haven-backup-repository/1/{config.GetProperty("id").GetString()}/{config.GetProperty("chunkSize").GetInt32()}/{config.GetProperty("gcGracePeriodSeconds").GetInt64()}/{config.GetProperty("lockStaleSeconds").GetInt64()}"
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
