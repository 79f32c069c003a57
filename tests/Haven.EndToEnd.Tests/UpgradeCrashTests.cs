using System.Security.Cryptography;
using Haven.Api;
using Haven.Repository;
using Haven.Storage;
using Haven.TestSupport;

namespace Haven.EndToEnd.Tests;

/// <summary>One havend for the upgrade crash tests; each test makes its own version-1 repository.</summary>
public sealed class UpgradeWorld : IAsyncLifetime
{
    public HavenWorld W { get; } = new();
    public string Pass => W.Dir.File("pass");

    public async ValueTask InitializeAsync()
    {
        await W.StartDaemonAsync();
        await File.WriteAllTextAsync(Pass, "a passphrase\n");
    }

    public async ValueTask DisposeAsync() => await W.DisposeAsync();
}

/// <summary>
/// kill -9 of havend at every step of <c>haven repo upgrade</c> (docs/repository-format.md, "Upgrading from version 1"):
/// in between, every backup lists and restores byte-exact; the rerun finishes, verify is healthy, restores are
/// byte-exact and the repository takes writes again. Before the upgrade, GC into the version-1 repository is refused.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class UpgradeCrashTests(UpgradeWorld f) : IClassFixture<UpgradeWorld>
{
    private HavenWorld W => f.W;
    private const int ChunkSize = 64 * 1024;

    /// <summary>
    /// A version-1 repository made in-process through the old writer path (Haven writes version 2 only), with three
    /// backups of a 5-chunk disk (random, repeated and zero chunks, a short tail). Returns backup id → disk bytes.
    /// </summary>
    private static async Task<Dictionary<string, byte[]>> MakeVersion1Async(string path)
    {
        Directory.CreateDirectory(path);
        var options = new RepositoryOptions { ChunkSize = ChunkSize, Kdf = RepositoryKdf.Cheapest, FormatVersion = 1 };
        await using var repo = await Repository.Repository.InitAsync(new LocalDirectoryStore(path), "a passphrase", options);
        repo.WriteVersion1ForTests = true;
        var expected = new Dictionary<string, byte[]>();
        var shared = RandomNumberGenerator.GetBytes(ChunkSize);
        for (var b = 0; b < 3; b++)
        {
            byte[]?[] chunks = [shared, RandomNumberGenerator.GetBytes(ChunkSize), null, shared, RandomNumberGenerator.GetBytes(1000)];
            await using var writer = await repo.BeginBackupAsync("old-host");
            var index = new ChunkId?[chunks.Length];
            for (var i = 0; i < chunks.Length; i++)
            {
                if (chunks[i] is not { } data) continue;
                index[i] = writer.ComputeId(data);
                await writer.PutChunkAsync(index[i]!.Value, data);
            }
            var size = 4L * ChunkSize + 1000;
            var id = await writer.CommitAsync(new BackupManifest
            {
                VmName = "old-vm",
                CreatedAt = DateTimeOffset.UtcNow.AddMinutes(b - 10),
                Disks = [new DiskManifest { Name = "disk0", SizeBytes = size, ChunkSize = ChunkSize, Chunks = index }],
            });
            expected[id] = [.. chunks.SelectMany(c => c ?? new byte[ChunkSize])];
        }
        return expected;
    }

    [Theory]
    [InlineData("upgrade.after-lock")]
    [InlineData("upgrade.after-summary")]
    [InlineData("upgrade.after-staged-config")]
    [InlineData("upgrade.after-config")]
    [InlineData("upgrade.after-delete")]
    public async Task Upgrade_killed_at_a_step_leaves_a_readable_repository_and_the_rerun_finishes_it(string point)
    {
        var repo = W.Dir.File("repo-" + point);
        var expected = await MakeVersion1Async(repo);
        string[] upgrade = ["repo", "upgrade", "--repo", repo, "--passphrase-file", f.Pass];

        // Read-only until upgraded: one clear error naming the command.
        var refused = await W.Cli("repo", "gc", "--repo", repo, "--passphrase-file", f.Pass);
        Assert.True(refused.ExitCode == 4 && refused.Stderr.Contains("haven repo upgrade"), refused.ToString());

        var report = await W.CrashDuringAsync(point, async () =>
        {
            var r = await W.Cli(upgrade);
            Assert.True(r.ExitCode != 0 && r.Stdout == "", $"upgrade should fail when havend dies under it\n{r}");
        });
        TestContext.Current.TestOutputHelper?.WriteLine(report);

        await AssertEveryBackupRestoresAsync(repo, expected);
        await W.OkAsync(upgrade);
        Assert.False(File.Exists(Path.Combine(repo, "config.v2")));
        Assert.Empty(Directory.Exists(Path.Combine(repo, "backups")) ? Directory.GetFiles(Path.Combine(repo, "backups")) : []);
        Assert.Equal(3, Directory.GetFiles(Path.Combine(repo, "summaries")).Length);
        var verify = await W.Cli("repo", "verify", "--repo", repo, "--passphrase-file", f.Pass, "--read-data");
        Assert.True(verify.ExitCode == 0, $"the upgraded repository does not verify\n{verify}");
        await AssertEveryBackupRestoresAsync(repo, expected);
        // Writable again: GC runs (and keeps every chunk the upgraded backups use: the restores above still hold).
        await W.OkAsync("repo", "gc", "--repo", repo, "--passphrase-file", f.Pass);
        await AssertEveryBackupRestoresAsync(repo, expected);
        Assert.Empty(Directory.GetFiles(Path.Combine(repo, "locks"), "*", SearchOption.AllDirectories));
    }

    private async Task AssertEveryBackupRestoresAsync(string repo, Dictionary<string, byte[]> expected)
    {
        var list = await W.JsonAsync<List<BackupInfo>>("backups", "list", "--repo", repo, "--passphrase-file", f.Pass);
        Assert.Equal(expected.Keys.Order(StringComparer.Ordinal), list.Select(b => b.Id).Order(StringComparer.Ordinal));
        foreach (var (id, bytes) in expected)
        {
            var target = W.Dir.File($"r-{Guid.NewGuid():N}.raw");
            await W.OkAsync("restore", id, "--repo", repo, "--passphrase-file", f.Pass, "--disk", "0", "--to", target, "--format", "raw");
            var restored = await File.ReadAllBytesAsync(target);
            Assert.True(bytes.SequenceEqual(restored), $"backup {id} does not restore byte-exact");
            File.Delete(target);
        }
    }
}
