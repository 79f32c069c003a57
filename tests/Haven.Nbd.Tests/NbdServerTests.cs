using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text.Json;
using Haven.Qemu.Images;
using Haven.TestSupport;
using Xunit;

namespace Haven.Nbd.Tests;

/// <summary>
/// The read-only NBD server against real clients (qemu-img, nbdinfo from libnbd) and Haven's own client, and
/// against a client that breaks the protocol. The export is a byte array with holes: a model to compare with.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class NbdServerTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;
    private const int Block = 64 * 1024;

    /// <summary>A disk of <c>blocks</c> 64 KiB blocks: random bytes where stored, holes (zeros) where not.</summary>
    private sealed class MemoryExport(string name, bool[] stored) : INbdExport
    {
        public readonly byte[] Bytes = MakeBytes(stored);
        public int Reads;
        public Func<long, Exception?>? FailAt;

        private static byte[] MakeBytes(bool[] stored)
        {
            var bytes = new byte[stored.Length * Block];
            for (var i = 0; i < stored.Length; i++)
                if (stored[i]) Random.Shared.NextBytes(bytes.AsSpan(i * Block, Block));
            return bytes;
        }

        public string Name => name;
        public long Size => Bytes.Length;

        public async ValueTask ReadAsync(long offset, Memory<byte> into, CancellationToken ct)
        {
            Interlocked.Increment(ref Reads);
            await Task.Yield();
            if (FailAt?.Invoke(offset) is { } e) throw e;
            Bytes.AsMemory((int)offset, into.Length).CopyTo(into);
        }

        public IEnumerable<NbdExtent> GetAllocation(long offset, long length)
        {
            var end = Math.Min(Size, offset + length);
            while (offset < end)
            {
                var next = Math.Min(end, (offset / Block + 1) * Block);
                yield return new NbdExtent(offset, next - offset, stored[offset / Block] ? 0 : NbdFlags.Hole | NbdFlags.Zero);
                offset = next;
            }
        }
    }

    private static readonly bool[] Layout = [true, true, false, false, true, false, true, true, true, false, false, false, true, true, false, true];

    private static string Uri(NbdServer server, string export) => $"nbd+unix:///{export}?socket={((NbdEndpoint.Unix)server.Endpoint).Path}";

    [Fact]
    public async Task Qemu_img_and_nbdinfo_read_the_export_byte_for_byte_and_see_its_holes()
    {
        using var dir = new TempDir();
        var export = new MemoryExport("disk0", Layout);
        await using var server = NbdServer.ListenUnix(dir.File("s.nbd"), export);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(dir.File("s.nbd")));

        var info = await ProcessRunner.RunAsync("nbdinfo", ["--json", Uri(server, "disk0")], Ct);
        using (var doc = JsonDocument.Parse(info.StandardOutput))
        {
            var e = doc.RootElement.GetProperty("exports")[0];
            Assert.Equal(export.Size, e.GetProperty("export-size").GetInt64());
            Assert.True(e.GetProperty("is_read_only").GetBoolean());
            Assert.True(e.GetProperty("can_multi_conn").GetBoolean());
        }

        var map = await ProcessRunner.RunAsync("nbdinfo", ["--map", "--json", Uri(server, "disk0")], Ct);
        using (var doc = JsonDocument.Parse(map.StandardOutput))
        {
            var seen = doc.RootElement.EnumerateArray().Select(e => (e.GetProperty("offset").GetInt64(), e.GetProperty("length").GetInt64(), e.GetProperty("type").GetUInt32())).ToList();
            Assert.Equal(Runs(Layout), seen);
        }

        // qemu-img reads it through its own NBD client (pipelined, structured replies) into a raw file.
        var copy = dir.File("copy.raw");
        await ProcessRunner.RunAsync("qemu-img", ["convert", "-f", "raw", "-O", "raw", Uri(server, "disk0"), copy], Ct);
        Assert.Equal(export.Bytes, await File.ReadAllBytesAsync(copy, Ct));
        // The default export ("") is the same disk.
        await ProcessRunner.RunAsync("qemu-img", ["compare", "-f", "raw", "-F", "raw", Uri(server, ""), copy], Ct);
        // qemu-img skipped the holes: block status told it they read as zeros.
        Assert.True(export.Reads > 0);
    }

    [Fact]
    public async Task Havens_client_reads_maps_and_is_refused_writes_without_losing_the_connection()
    {
        using var dir = new TempDir();
        var export = new MemoryExport("disk0", Layout);
        await using var server = NbdServer.ListenUnix(dir.File("s.nbd"), export);
        await using var client = await NbdClient.ConnectAsync(server.Endpoint, "disk0", [NbdMetaContexts.BaseAllocation], Ct);
        Assert.True(client.IsReadOnly);
        Assert.Equal(export.Size, client.ExportSize);

        // Many reads in flight at once, across block boundaries, odd offsets.
        var reads = Enumerable.Range(0, 40).Select(async i =>
        {
            var offset = (long)Random.Shared.Next(0, (int)export.Size - 200_000);
            var buffer = new byte[Random.Shared.Next(1, 200_000)];
            await client.ReadAsync(offset, buffer, Ct);
            Assert.True(export.Bytes.AsSpan((int)offset, buffer.Length).SequenceEqual(buffer), $"read at {offset}+{buffer.Length} differs");
        });
        await Task.WhenAll(reads);

        var extents = new List<NbdExtent>();
        await foreach (var e in client.MapAsync(NbdMetaContexts.BaseAllocation, 0, export.Size, Ct)) extents.Add(e);
        Assert.Equal(Runs(Layout), extents.Select(e => (e.Offset, e.Length, e.Flags)));

        var before = export.Bytes.ToArray();
        var write = await Assert.ThrowsAsync<NbdServerErrorException>(() => client.WriteAsync(0, new byte[4096], Ct));
        Assert.Equal(1, write.ErrorCode); // EPERM
        var zeroes = await Assert.ThrowsAsync<NbdServerErrorException>(() => client.WriteZeroesAsync(0, 4096, Ct));
        Assert.Equal(1, zeroes.ErrorCode);
        var outside = await Assert.ThrowsAsync<NbdServerErrorException>(() => client.ReadAsync(export.Size - 10, new byte[20], Ct));
        Assert.Equal(22, outside.ErrorCode); // EINVAL
        Assert.Equal(before, export.Bytes); // nothing reached the export

        // A read the export fails is one EIO with its reason; the connection goes on.
        export.FailAt = o => o == 3 * Block ? new IOException("chunk 0123 is corrupt") : null;
        var failed = await Assert.ThrowsAsync<NbdServerErrorException>(() => client.ReadAsync(3 * Block, new byte[10], Ct));
        Assert.Equal(5, failed.ErrorCode);
        Assert.Contains("chunk 0123 is corrupt", failed.Message);
        var after = new byte[Block];
        await client.ReadAsync(Block, after, Ct);
        Assert.True(export.Bytes.AsSpan(Block, Block).SequenceEqual(after));
        Assert.False(client.IsBroken);
    }

    [Fact]
    public async Task A_client_that_breaks_the_protocol_is_dropped_and_others_are_served()
    {
        using var dir = new TempDir();
        var export = new MemoryExport("disk0", Layout);
        await using var server = NbdServer.ListenUnix(dir.File("s.nbd"), export);

        // Wrong option magic: dropped after the greeting.
        using (var raw = await RawAsync(server))
        {
            await raw.SendAsync(BigEndian(1u), Ct); // fixed newstyle
            await raw.SendAsync(new byte[16], Ct); // no IHAVEOPT
            Assert.Equal(0, await ReadToEndAsync(raw));
        }
        // An option claiming 1 GiB of data: dropped, nothing allocated for it.
        using (var raw = await RawAsync(server))
        {
            await raw.SendAsync(BigEndian(1u), Ct);
            var opt = new byte[16];
            BinaryPrimitives.WriteUInt64BigEndian(opt, 0x49484156454F5054);
            BinaryPrimitives.WriteUInt32BigEndian(opt.AsSpan(8), 7);
            BinaryPrimitives.WriteUInt32BigEndian(opt.AsSpan(12), 1u << 30);
            await raw.SendAsync(opt, Ct);
            Assert.Equal(0, await ReadToEndAsync(raw));
        }
        // A name the server does not have is refused by NBD_OPT_GO.
        await Assert.ThrowsAsync<NbdExportNotFoundException>(() => NbdClient.ConnectAsync(server.Endpoint, "nope", [], Ct));

        await using var good = await NbdClient.ConnectAsync(server.Endpoint, "disk0", [], Ct);
        var buffer = new byte[Block];
        await good.ReadAsync(0, buffer, Ct);
        Assert.True(export.Bytes.AsSpan(0, Block).SequenceEqual(buffer));
    }

    [Fact]
    public async Task Disposing_the_server_drops_its_clients_and_removes_the_socket()
    {
        using var dir = new TempDir();
        var server = NbdServer.ListenUnix(dir.File("s.nbd"), new MemoryExport("disk0", Layout));
        var client = await NbdClient.ConnectAsync(server.Endpoint, "disk0", [], Ct);
        Assert.Equal(1, server.ActiveConnections);
        await server.DisposeAsync();
        Assert.False(File.Exists(dir.File("s.nbd")));
        await Assert.ThrowsAnyAsync<Exception>(() => client.ReadAsync(0, new byte[512], Ct));
        await client.DisposeAsync();
    }

    /// <summary>The runs nbdinfo --map shows for a layout: merged stretches of stored (0) and hole|zero (3) blocks.</summary>
    private static List<(long, long, uint)> Runs(bool[] stored)
    {
        var runs = new List<(long, long, uint)>();
        for (var i = 0; i < stored.Length;)
        {
            var j = i;
            while (j < stored.Length && stored[j] == stored[i]) j++;
            runs.Add(((long)i * Block, (long)(j - i) * Block, stored[i] ? 0u : 3u));
            i = j;
        }
        return runs;
    }

    private static byte[] BigEndian(uint v)
    {
        var b = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(b, v);
        return b;
    }

    private static async Task<Socket> RawAsync(NbdServer server)
    {
        var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        await s.ConnectAsync(new UnixDomainSocketEndPoint(((NbdEndpoint.Unix)server.Endpoint).Path), Ct);
        var hello = new byte[18];
        var got = 0;
        while (got < 18) got += await s.ReceiveAsync(hello.AsMemory(got), Ct);
        Assert.Equal(0x4e42444d41474943ul, BinaryPrimitives.ReadUInt64BigEndian(hello));
        return s;
    }

    /// <summary>Bytes the server sends until it closes (0: it closed without a word).</summary>
    private static async Task<int> ReadToEndAsync(Socket s)
    {
        var total = 0;
        var buffer = new byte[4096];
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        timeout.CancelAfter(TimeSpan.FromSeconds(10));
        int n;
        while ((n = await s.ReceiveAsync(buffer, timeout.Token)) > 0) total += n;
        return total;
    }
}
