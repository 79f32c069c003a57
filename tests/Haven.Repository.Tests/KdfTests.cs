using System.Diagnostics;
using System.Text.Json.Nodes;
using Haven.Storage;
using Haven.TestSupport;
using Xunit;
using static Haven.Repository.Tests.RepoFixture;

namespace Haven.Repository.Tests;

/// <summary>The passphrase KDF: Argon2id for new repositories, PBKDF2 ones still readable, and bounds on what a config may ask for.</summary>
public sealed class KdfTests
{
    [Fact]
    public async Task A_repository_written_before_argon2id_still_opens_and_restores()
    {
        // Written by Haven at 1e7af98 (PBKDF2-HMAC-SHA256, 600 000 iterations, default options) and kept as it was.
        using var dir = new TempDir();
        var root = dir.File("old");
        CopyTree(Path.Combine(AppContext.BaseDirectory, "Data", "repo-v1-pbkdf2"), root);
        var config = System.Text.Json.JsonDocument.Parse(await File.ReadAllBytesAsync(Path.Combine(root, "config"), Ct)).RootElement;
        Assert.Equal("pbkdf2-hmac-sha256", config.GetProperty("kdf").GetProperty("algorithm").GetString());
        Assert.False(config.GetProperty("kdf").TryGetProperty("memoryKiB", out _));

        await Assert.ThrowsAsync<WrongPassphraseException>(() => Repository.OpenAsync(new LocalDirectoryStore(root), "Old passphrase", Ct));
        await using var repo = await Repository.OpenAsync(new LocalDirectoryStore(root), "old passphrase", Ct);
        var backup = Assert.Single(await repo.ListBackupsAsync(Ct));
        Assert.Equal(("20261101-100000-bf684a37", "old-vm"), (backup.Id, backup.VmName));
        var disk = (await repo.ReadManifestAsync(backup.Id, Ct)).Disks[0];
        var buffer = new byte[repo.ChunkSize];
        Assert.Equal(repo.ChunkSize, await repo.ReadChunkAsync(disk.Chunks[0]!.Value, buffer, Ct));
        Assert.StartsWith("written before argon2id; ", System.Text.Encoding.ASCII.GetString(buffer));
        Assert.Null(disk.Chunks[1]);
        Assert.Equal(1000, await repo.ReadChunkAsync(disk.Chunks[2]!.Value, buffer, Ct));
        for (var i = 0; i < 1000; i++) Assert.Equal((byte)(i * 7 + 1), buffer[i]);
        Assert.True((await repo.VerifyAsync(readData: true, Ct)).IsHealthy);
        // The document's reader opens it too.
        SecondReaderTests.DocumentKek(config, "old passphrase");
    }

    public static TheoryData<string, string> HostileKdfs => new()
    {
        // Too costly: would take gigabytes or hours to open.
        { """{"algorithm":"argon2id","version":19,"memoryKiB":4194304,"iterations":3,"parallelism":1}""", "argon2id memory 4194304 KiB is outside 19456..1048576 KiB" },
        { """{"algorithm":"argon2id","version":19,"memoryKiB":1048577,"iterations":3,"parallelism":1}""", "argon2id memory 1048577 KiB is outside" },
        { """{"algorithm":"argon2id","version":19,"memoryKiB":19456,"iterations":1000000,"parallelism":1}""", "argon2id passes 1000000 are outside 2..10" },
        { """{"algorithm":"pbkdf2-hmac-sha256","iterations":2000000000}""", "pbkdf2-hmac-sha256 iterations 2000000000 are outside 100000..10000000" },
        // Too cheap: a passphrase behind them would be cheap to guess.
        { """{"algorithm":"argon2id","version":19,"memoryKiB":8,"iterations":3,"parallelism":1}""", "argon2id memory 8 KiB is outside" },
        { """{"algorithm":"argon2id","version":19,"memoryKiB":19456,"iterations":1,"parallelism":1}""", "argon2id passes 1 are outside" },
        { """{"algorithm":"pbkdf2-hmac-sha256","iterations":1000}""", "pbkdf2-hmac-sha256 iterations 1000 are outside" },
        // Not what this format defines.
        { """{"algorithm":"argon2id","version":16,"memoryKiB":19456,"iterations":2,"parallelism":1}""", "argon2id version 16 is not 19" },
        { """{"algorithm":"argon2id","memoryKiB":19456,"iterations":2,"parallelism":1}""", "argon2id version missing" },
        { """{"algorithm":"argon2id","version":19,"memoryKiB":19456,"iterations":2,"parallelism":64}""", "argon2id parallelism 64 is not 1" },
        { """{"algorithm":"pbkdf2-hmac-sha256","iterations":600000,"memoryKiB":19456}""", "pbkdf2-hmac-sha256 takes no memory" },
        { """{"algorithm":"scrypt","iterations":2}""", "unknown key derivation \"scrypt\"" },
    };

    [Theory]
    [MemberData(nameof(HostileKdfs))]
    public async Task A_config_asking_for_a_kdf_cost_outside_the_bounds_is_refused_before_deriving(string kdf, string why)
    {
        await using var f = await CreateAsync();
        var path = Path.Combine(f.StorePath, "config");
        var config = JsonNode.Parse(await File.ReadAllTextAsync(path, Ct))!;
        var edited = JsonNode.Parse(kdf)!;
        edited["salt"] = config["kdf"]!["salt"]!.GetValue<string>();
        config["kdf"] = edited;
        await File.WriteAllTextAsync(path, config.ToJsonString(), Ct);

        var clock = Stopwatch.StartNew();
        var e = await Assert.ThrowsAsync<NotARepositoryException>(() => f.OpenAgainAsync());
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"refusing took {clock.Elapsed}: was the key derived?");
        Assert.Contains("refusing the repository config's key derivation: " + why, e.Message);
        Assert.Contains(f.StorePath, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public async Task A_config_object_larger_than_any_config_is_refused_unread()
    {
        await using var f = await CreateAsync();
        var path = Path.Combine(f.StorePath, "config");
        await File.WriteAllTextAsync(path, (await File.ReadAllTextAsync(path, Ct)).Replace("{", "{" + new string(' ', 100_000)), Ct);
        var e = await Assert.ThrowsAsync<NotARepositoryException>(() => f.OpenAgainAsync());
        Assert.Contains("larger than any Haven repository config", e.Message);
    }

    [Fact]
    public async Task Init_refuses_a_kdf_outside_the_bounds_and_writes_nothing_and_can_still_make_a_pbkdf2_repository()
    {
        using var dir = new TempDir();
        var store = new LocalDirectoryStore(dir.File("repo"));
        foreach (var kdf in new[] { RepositoryKdf.Argon2id(memoryKiB: 8), RepositoryKdf.Argon2id(memoryKiB: 4 << 20), RepositoryKdf.Argon2id(passes: 1), RepositoryKdf.Pbkdf2(1000) })
        {
            var e = await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => Repository.InitAsync(store, "p", new RepositoryOptions { Kdf = kdf }, Ct));
            Assert.Contains("key derivation out of bounds", e.Message);
            Assert.Null(await store.StatAsync("config", Ct));
        }
        Assert.Equal(RepositoryKdf.Argon2idAlgorithm, new RepositoryOptions().Kdf.Algorithm);
        Assert.Equal((64 * 1024, 3), (RepositoryKdf.Default.MemoryKiB, RepositoryKdf.Default.Iterations));

        // PBKDF2 may still be chosen (e.g. where only FIPS-approved primitives are allowed).
        await (await Repository.InitAsync(store, "p", new RepositoryOptions { Kdf = RepositoryKdf.Pbkdf2(RepositoryKdf.MinPbkdf2Iterations) }, Ct)).DisposeAsync();
        await using var reopened = await Repository.OpenAsync(new LocalDirectoryStore(dir.File("repo")), "p", Ct);
        var kdfJson = JsonNode.Parse(await File.ReadAllTextAsync(Path.Combine(dir.File("repo"), "config"), Ct))!["kdf"]!;
        Assert.Equal(("pbkdf2-hmac-sha256", 100_000, 32), (kdfJson["algorithm"]!.GetValue<string>(), kdfJson["iterations"]!.GetValue<int>(), Convert.FromBase64String(kdfJson["salt"]!.GetValue<string>()).Length));
    }

    private static void CopyTree(string from, string to)
    {
        foreach (var file in Directory.GetFiles(from, "*", SearchOption.AllDirectories))
        {
            var target = Path.Combine(to, Path.GetRelativePath(from, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }
    }
}
