using Haven.Backup;
using Haven.Nbd;
using Haven.Qemu.Images;
using Haven.TestSupport;
using Xunit;
using static Haven.Repository.Tests.RepoFixture;

namespace Haven.Repository.Tests;

/// <summary>
/// A backup's disk served read-only over NBD straight from the repository: what qemu-img reads equals the disk
/// that was backed up, holes are holes, only the chunks a read touches are fetched, and a chunk that cannot be read
/// fails only the reads that need it (named), and reads again once it is back.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class BackupDiskExportTests
{
    private static byte[] Random(int length)
    {
        var b = new byte[length];
        System.Random.Shared.NextBytes(b);
        return b;
    }

    /// <summary>16 entries: random chunks, zero entries, one chunk twice, a short last chunk.</summary>
    private static byte[]?[] Layout(int chunkSize)
    {
        var repeated = Random(chunkSize);
        return [Random(chunkSize), Random(chunkSize), null, null, repeated, Random(chunkSize), null, repeated,
            Random(chunkSize), Random(chunkSize), Random(chunkSize), Random(chunkSize), null, Random(chunkSize), Random(chunkSize), Random(chunkSize / 2 + 512)];
    }

    private static string Uri(NbdServer server) => $"nbd+unix:///disk0?socket={((NbdEndpoint.Unix)server.Endpoint).Path}";

    [Fact]
    public async Task Qemu_img_reads_the_backed_up_disk_through_the_export_and_each_chunk_is_fetched_once()
    {
        await using var f = await CreateAsync();
        var chunks = Layout(ChunkSize);
        var made = await Backups.BackupAsync(f.Repo, "vm", f.Clock.GetUtcNow(), chunks);
        var manifest = await f.Repo.ReadManifestAsync(made.Id, Ct);
        var export = new BackupDiskExport(f.Repo, manifest, 0, new BackupDiskExportOptions { CacheChunks = 16, ReadAheadChunks = 2 });
        await using var server = NbdServer.ListenUnix(f.Dir.File("disk0.nbd"), export);

        var copy = f.Dir.File("copy.raw");
        await ProcessRunner.RunAsync("qemu-img", ["convert", "-f", "raw", "-O", "raw", Uri(server), copy], Ct);
        Assert.Equal(Backups.Concat(ChunkSize, chunks), await File.ReadAllBytesAsync(copy, Ct));
        // One pass with a cache that holds the disk: every stored chunk once (the repeated one is one chunk), zero entries never.
        var distinct = chunks.Where(c => c is not null).Distinct().Count();
        Assert.Equal(distinct, export.ChunksFetched);

        var map = await ProcessRunner.RunAsync("nbdinfo", ["--map", "--json", Uri(server)], Ct);
        using var doc = System.Text.Json.JsonDocument.Parse(map.StandardOutput);
        var holes = doc.RootElement.EnumerateArray().Where(e => e.GetProperty("type").GetInt32() == 3)
            .Select(e => (e.GetProperty("offset").GetInt64() / ChunkSize, e.GetProperty("length").GetInt64() / ChunkSize)).ToList();
        Assert.Equal([(2L, 2L), (6L, 1L), (12L, 1L)], holes); // the zero entries, and nothing else
    }

    [Fact]
    public async Task A_small_read_fetches_only_the_chunk_it_touches()
    {
        await using var s = await ServedAsync();
        var (f, chunks, made, export, client) = (s.Fixture, s.Chunks, s.Made, s.Export, s.Client);

        var buffer = new byte[4096];
        await client.ReadAsync(9L * ChunkSize + 100, buffer, Ct);
        Assert.True(chunks[9].AsSpan(100, 4096).SequenceEqual(buffer));
        Assert.Equal(1, export.ChunksFetched);
        await client.ReadAsync(9L * ChunkSize + 8000, buffer, Ct); // the same chunk: from the cache
        Assert.Equal(1, export.ChunksFetched);
        Assert.Equal(1, export.CacheHits);
        await client.ReadAsync(3L * ChunkSize, buffer, Ct); // a zero entry: nothing fetched
        Assert.True(buffer.All(b => b == 0));
        Assert.Equal(1, export.ChunksFetched);
    }

    [Fact]
    public async Task A_corrupt_chunk_fails_the_reads_that_need_it_naming_it_and_a_missing_one_reads_once_it_is_back()
    {
        await using var s = await ServedAsync();
        var (f, chunks, made, export, client) = (s.Fixture, s.Chunks, s.Made, s.Export, s.Client);

        var corrupt = made.Index[1]!.Value;
        var path = f.ChunkPath(corrupt);
        var bytes = await File.ReadAllBytesAsync(path, Ct);
        bytes[^5] ^= 0x40;
        await File.WriteAllBytesAsync(path, bytes, Ct);
        var buffer = new byte[ChunkSize];
        var e = await Assert.ThrowsAsync<NbdServerErrorException>(() => client.ReadAsync(ChunkSize, buffer, Ct));
        Assert.Equal(5, e.ErrorCode);
        Assert.Contains(corrupt.ToString(), e.Message);
        Assert.Contains(made.Id, e.Message);
        // Other chunks still read.
        await client.ReadAsync(0, buffer, Ct);
        Assert.True(chunks[0].AsSpan().SequenceEqual(buffer));

        // A chunk that is away (the store unreachable) fails, and reads once it is back: failures are not cached.
        var away = f.ChunkPath(made.Index[5]!.Value);
        File.Move(away, away + ".away");
        await Assert.ThrowsAsync<NbdServerErrorException>(() => client.ReadAsync(5L * ChunkSize, buffer, Ct));
        File.Move(away + ".away", away);
        await client.ReadAsync(5L * ChunkSize, buffer, Ct);
        Assert.True(chunks[5].AsSpan().SequenceEqual(buffer));
        Assert.False(client.IsBroken);
    }
    /// <summary>A backup of <see cref="Layout"/> in a new repository, its disk served, and a client connected to it.</summary>
    private sealed record Served(RepoFixture Fixture, byte[]?[] Chunks, Backups.Made Made, BackupDiskExport Export, NbdServer Server, NbdClient Client) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync()
        {
            await Client.DisposeAsync();
            await Server.DisposeAsync();
            await Fixture.DisposeAsync();
        }
    }

    private static async Task<Served> ServedAsync()
    {
        var f = await CreateAsync();
        var chunks = Layout(ChunkSize);
        var made = await Backups.BackupAsync(f.Repo, "vm", f.Clock.GetUtcNow(), chunks);
        var export = new BackupDiskExport(f.Repo, await f.Repo.ReadManifestAsync(made.Id, Ct), 0);
        var server = NbdServer.ListenUnix(f.Dir.File("disk0.nbd"), export);
        return new Served(f, chunks, made, export, server, await NbdClient.ConnectAsync(server.Endpoint, "disk0", [], Ct));
    }
}
