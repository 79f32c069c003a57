using Haven.Qemu.Images;
using Haven.TestSupport;
using Xunit;

namespace Haven.Nbd.Tests;

/// <summary>The NBD client against real qemu-nbd servers, checked against nbdinfo and qemu-img.</summary>
public sealed class NbdClientTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;
    private const int KiB = 1024;
    private const int MiB = 1024 * 1024;
    private const string Bitmap = "bm0";
    private static readonly string Allocation = NbdMetaContexts.BaseAllocation;
    private static readonly string Dirty = NbdMetaContexts.DirtyBitmap(Bitmap);

    // 80 MiB: data, a zero cluster inside data, data across the 32 MiB request limit, a discarded hole
    // inside data, data that is all zero bytes, data at the very end.
    private static readonly ImageOp[] Layout =
    [
        new ImageOp.Write(0xab, 1 * MiB, 64 * KiB),
        new ImageOp.Write(0xcd, 5 * MiB + 512, 3 * MiB),
        new ImageOp.Zero(6 * MiB, 256 * KiB),
        new ImageOp.Write(0x11, 32 * MiB - 96 * KiB, 192 * KiB),
        new ImageOp.Write(0x77, 40 * MiB, 1 * MiB),
        new ImageOp.Discard(40 * MiB + 256 * KiB, 256 * KiB),
        new ImageOp.Write(0x00, 60 * MiB, 128 * KiB),
        new ImageOp.Write(0x5a, 76 * MiB, 4 * MiB),
    ];

    private static Task<TestImage> LayoutImageAsync(TempDir dir) => TestImage.CreateAsync(dir.File("a.qcow2"), 80 * MiB, Layout, Ct);

    private static Task<NbdClient> ConnectAsync(TestNbdServer server, params string[] contexts)
        => NbdClient.ConnectAsync(server.Endpoint, server.ExportName, contexts, Ct);

    [Fact]
    public async Task Handshake_reports_what_nbdinfo_sees_and_refuses_contexts_the_server_does_not_offer()
    {
        using var dir = new TempDir();
        var image = await TestImage.CreateAsync(dir.File("a.qcow2"), 64 * MiB, [], Ct);
        await ProcessRunner.RunAsync("qemu-img", ["bitmap", "--add", image.Path, Bitmap], Ct);

        await using (var server = await TestNbdServer.StartAsync(dir, image.Path, readOnly: true, bitmap: Bitmap, ct: Ct))
        {
            var info = await server.NbdInfoAsync(Ct);
            await using var client = await ConnectAsync(server, Allocation, Dirty);
            Assert.Equal(64L * MiB, client.ExportSize);
            Assert.Equal(info.GetProperty("export-size").GetInt64(), client.ExportSize);
            Assert.True(client.IsReadOnly);
            Assert.Equal(info.GetProperty("is_read_only").GetBoolean(), client.IsReadOnly);
            Assert.Equal(info.GetProperty("can_multi_conn").GetBoolean(), client.CanMultiConn);
            Assert.Equal(info.GetProperty("block_size_minimum").GetInt32(), client.MinBlockSize);
            Assert.Equal(info.GetProperty("block_size_maximum").GetInt32(), client.MaxRequestBytes);
            Assert.True(client.StructuredReplies);
            Assert.Equal([Allocation, Dirty], client.MetaContexts.Order(StringComparer.Ordinal));

            await using var plain = await ConnectAsync(server);
            Assert.Empty(plain.MetaContexts);
            await Assert.ThrowsAsync<ArgumentException>(() => plain.GetBlockStatusAsync(Allocation, 0, 4096, Ct));

            var refused = await Assert.ThrowsAsync<NbdOptionRefusedException>(() => ConnectAsync(server, Allocation, "qemu:dirty-bitmap:nope"));
            Assert.Contains("'qemu:dirty-bitmap:nope'", refused.Message);
            Assert.Equal("NBD_OPT_SET_META_CONTEXT", refused.Option);
        }

        await using (var server = await TestNbdServer.StartAsync(dir, image.Path, ct: Ct))
        {
            var info = await server.NbdInfoAsync(Ct);
            await using var client = await ConnectAsync(server);
            Assert.False(client.IsReadOnly);
            Assert.True(client.CanFlush);
            Assert.True(client.CanWriteZeroes);
            Assert.Equal(info.GetProperty("can_multi_conn").GetBoolean(), client.CanMultiConn);
        }
    }

    [Fact]
    public async Task Reads_return_written_patterns_and_holes_as_zeroes_across_the_request_limit_and_concurrently()
    {
        using var dir = new TempDir();
        var image = await LayoutImageAsync(dir);
        await using var server = await TestNbdServer.StartAsync(dir, image.Path, readOnly: true, ct: Ct);
        await using var client = await ConnectAsync(server);
        Assert.Equal(32 * MiB, client.MaxRequestBytes);

        // The whole export in one call (32 + 32 + 16 MiB requests) into a buffer of garbage: holes must become zeroes.
        var all = Garbage(80 * MiB);
        await client.ReadAsync(0, all, Ct);
        AssertContent(image.Expected, 0, all);

        var small = Garbage(10);
        await client.ReadAsync(1 * MiB - 3, small, Ct);
        AssertContent(image.Expected, 1 * MiB - 3, small);

        var random = new Random(7);
        var ranges = Enumerable.Range(0, 16).Select(i => i switch
        {
            0 => (Offset: 30L * MiB, Length: 40 * MiB),          // split in two, crossing 32 MiB
            1 => (Offset: 32L * MiB - 1000, Length: 2000),        // tiny, across the boundary
            2 => (Offset: 40L * MiB, Length: 2 * MiB),            // data, hole, data
            3 => (Offset: 6L * MiB - 4096, Length: 512 * KiB),    // zero cluster inside data
            _ => RandomRange(random, 80 * MiB, 6 * MiB),
        }).ToList();
        var reads = ranges.Select(async r =>
        {
            var buffer = Garbage(r.Length);
            await client.ReadAsync(r.Offset, buffer, Ct);
            return (r.Offset, buffer);
        }).ToList();
        foreach (var (offset, buffer) in await Task.WhenAll(reads))
            AssertContent(image.Expected, offset, buffer);
        Assert.Equal(0, client.RequestsInFlight);
    }

    [Fact]
    public async Task Allocation_map_matches_nbdinfo_and_is_clipped_to_the_range()
    {
        using var dir = new TempDir();
        var image = await LayoutImageAsync(dir);
        await using var server = await TestNbdServer.StartAsync(dir, image.Path, readOnly: true, ct: Ct);
        var expected = await server.NbdInfoMapAsync(null, Ct);
        await using var client = await ConnectAsync(server, Allocation);

        var map = await client.MapAsync(Allocation, 0, client.ExportSize, Ct).ToListAsync(Ct);
        Assert.Equal(expected, map);
        Assert.Contains(map, e => e.Offset <= 1 * MiB && e.End >= 1 * MiB + 64 * KiB && e.Flags == 0);
        Assert.Contains(map, e => e.Offset <= 10 * MiB && e.End >= 11 * MiB && e.Flags == (NbdFlags.Hole | NbdFlags.Zero));

        var part = await client.MapAsync(Allocation, 1 * MiB + 4096, 8 * MiB, Ct).ToListAsync(Ct);
        Assert.Equal(1 * MiB + 4096, part[0].Offset);
        Assert.Equal(9 * MiB + 4096, part[^1].End);
        for (var i = 1; i < part.Count; i++)
        {
            Assert.Equal(part[i - 1].End, part[i].Offset);
            Assert.NotEqual(part[i - 1].Flags, part[i].Flags);
        }

        var one = await client.GetBlockStatusAsync(Allocation, 1 * MiB, 64 * KiB, Ct);
        Assert.Equal([new NbdExtent(1 * MiB, 64 * KiB, 0)], one);
    }

    [Fact]
    public async Task Map_of_an_export_beyond_one_request_loops_and_merges_across_requests()
    {
        using var dir = new TempDir();
        const long GiB = 1L << 30;
        var path = dir.File("big.qcow2");
        await QemuImg.CreateAsync(path, DiskFormat.Qcow2, 9 * GiB, Ct);
        // One block status request covers at most 4 GiB - 64 KiB; data straddles that point and the 4 GiB line.
        await ProcessRunner.RunAsync("qemu-io", ["-f", "qcow2",
            "-c", $"write -P 0x42 {1 * MiB} {64 * KiB}",
            "-c", $"write -P 0x43 {4 * GiB - 128 * KiB} {256 * KiB}",
            "-c", $"write -P 0x44 {8 * GiB} {1 * MiB}", path], Ct);
        await using var server = await TestNbdServer.StartAsync(dir, path, readOnly: true, ct: Ct);
        await using var client = await ConnectAsync(server, Allocation);

        var first = await client.GetBlockStatusAsync(Allocation, 0, client.ExportSize, Ct);
        Assert.True(first[^1].End <= 0xFFFF_0000L);
        var map = await client.MapAsync(Allocation, 0, client.ExportSize, Ct).ToListAsync(Ct);
        Assert.Equal(await server.NbdInfoMapAsync(null, Ct), map);
        Assert.Contains(new NbdExtent(4 * GiB - 128 * KiB, 256 * KiB, 0), map);

        var buffer = Garbage(1 * MiB);
        await client.ReadAsync(4 * GiB - 512 * KiB, buffer, Ct);
        Assert.True(buffer.AsSpan(0, 384 * KiB).IndexOfAnyExcept((byte)0) < 0);
        Assert.True(buffer.AsSpan(384 * KiB, 256 * KiB).IndexOfAnyExcept((byte)0x43) < 0);
        Assert.True(buffer.AsSpan(640 * KiB).IndexOfAnyExcept((byte)0) < 0);
    }

    [Fact]
    public async Task Dirty_bitmap_map_matches_nbdinfo_and_the_writes_made_after_the_bitmap()
    {
        using var dir = new TempDir();
        var image = await TestImage.CreateAsync(dir.File("a.qcow2"), 64 * MiB, [new ImageOp.Write(0x01, 0, 4 * MiB)], Ct);
        // An offline qemu-io write does set the bits of an enabled persistent bitmap (granularity 64 KiB here).
        await ProcessRunner.RunAsync("qemu-img", ["bitmap", "--add", "-g", "65536", image.Path, Bitmap], Ct);
        await image.ApplyAsync(
        [
            new ImageOp.Write(0xab, 1 * MiB, 64 * KiB),
            new ImageOp.Write(0xcd, 10 * MiB + 4 * KiB, 8 * KiB),
            new ImageOp.Write(0xef, 20 * MiB, 1 * MiB + 512),
        ], Ct);
        NbdExtent[] dirty =
        [
            new(1 * MiB, 64 * KiB, NbdFlags.Dirty),
            new(10 * MiB, 64 * KiB, NbdFlags.Dirty),
            new(20 * MiB, 1 * MiB + 64 * KiB, NbdFlags.Dirty),
        ];

        await using var server = await TestNbdServer.StartAsync(dir, image.Path, readOnly: true, bitmap: Bitmap, ct: Ct);
        await using var client = await ConnectAsync(server, Allocation, Dirty);
        var map = await client.MapAsync(Dirty, 0, client.ExportSize, Ct).ToListAsync(Ct);
        Assert.Equal(await server.NbdInfoMapAsync(Dirty, Ct), map);
        Assert.Equal(dirty, map.Where(e => e.Flags == NbdFlags.Dirty));
        Assert.Equal(client.ExportSize, map.Sum(e => e.Length));

        // Both contexts answer every block status request; the client keeps the one asked for.
        Assert.Equal(await server.NbdInfoMapAsync(null, Ct), await client.MapAsync(Allocation, 0, client.ExportSize, Ct).ToListAsync(Ct));
    }

    [Fact]
    public async Task Writes_zeroes_and_flush_land_in_the_image()
    {
        using var dir = new TempDir();
        var image = await TestImage.CreateAsync(dir.File("a.qcow2"), 48 * MiB, [new ImageOp.Write(0x33, 0, 48 * MiB)], Ct);
        var expected = image.Expected;
        await using (var server = await TestNbdServer.StartAsync(dir, image.Path, ct: Ct))
        {
            await using var client = await ConnectAsync(server);
            var big = new byte[40 * MiB];
            new Random(11).NextBytes(big);
            var writes = new List<Task> { client.WriteAsync(4 * MiB, big, Ct) };  // split in two requests
            big.CopyTo(expected, 4 * MiB);
            for (var i = 0; i < 64; i++)
            {
                var block = new byte[4 * KiB];
                Array.Fill(block, (byte)(i + 1));
                writes.Add(client.WriteAsync(44L * MiB + i * 8 * KiB + 512, block, Ct));
                block.CopyTo(expected, 44 * MiB + i * 8 * KiB + 512);
            }
            await Task.WhenAll(writes);

            await client.WriteZeroesAsync(10 * MiB + 512, 3 * MiB, Ct);
            expected.AsSpan(10 * MiB + 512, 3 * MiB).Clear();
            await client.FlushAsync(Ct);

            var back = Garbage(48 * MiB);
            await client.ReadAsync(0, back, Ct);
            AssertContent(expected, 0, back);
        }
        var raw = dir.File("expected.raw");
        await File.WriteAllBytesAsync(raw, expected, Ct);
        Assert.True(await QemuImg.CompareAsync(raw, image.Path, ct: Ct));
    }

    [Fact]
    public async Task Unknown_export_is_reported_by_name()
    {
        using var dir = new TempDir();
        var image = await TestImage.CreateAsync(dir.File("a.qcow2"), 1 * MiB, [], Ct);
        await using var server = await TestNbdServer.StartAsync(dir, image.Path, ct: Ct);
        var e = await Assert.ThrowsAsync<NbdExportNotFoundException>(() => NbdClient.ConnectAsync(server.Endpoint, "nope", [], Ct));
        Assert.Equal("nope", e.ExportName);
        Assert.Contains("no export named 'nope'", e.Message);
        Assert.Contains(server.Endpoint.ToString(), e.Message);

        // With contexts the export is named first by NBD_OPT_SET_META_CONTEXT: same answer.
        e = await Assert.ThrowsAsync<NbdExportNotFoundException>(() => NbdClient.ConnectAsync(server.Endpoint, "nope", [Allocation], Ct));
        Assert.Equal("NBD_OPT_SET_META_CONTEXT", e.Option);

        var missing = new NbdEndpoint.Unix(dir.File("missing.sock"));
        await Assert.ThrowsAsync<NbdConnectionException>(() => NbdClient.ConnectAsync(missing, "exp", [], Ct));
    }

    [Fact]
    public async Task A_server_error_fails_one_request_and_the_connection_stays_usable()
    {
        using var dir = new TempDir();
        var image = await LayoutImageAsync(dir);
        await using var server = await TestNbdServer.StartAsync(dir, image.Path, readOnly: true, ct: Ct);
        await using var client = await ConnectAsync(server, Allocation);

        var beyond = await Assert.ThrowsAsync<NbdServerErrorException>(() => client.ReadAsync(client.ExportSize - 512, new byte[4096], Ct));
        Assert.Equal(NbdServerErrorException.EINVAL, beyond.ErrorCode);
        Assert.Equal("NBD_CMD_READ", beyond.Command);
        Assert.NotEmpty(beyond.ServerMessage);

        var readOnly = await Assert.ThrowsAsync<NbdServerErrorException>(() => client.WriteAsync(0, new byte[4096], Ct));
        // qemu 7.2 answers EINVAL here, not the EPERM one might expect.
        Assert.Contains("read-only", readOnly.ServerMessage);

        await Assert.ThrowsAsync<NbdServerErrorException>(() => client.GetBlockStatusAsync(Allocation, client.ExportSize - 512, 4096, Ct));

        Assert.False(client.IsBroken);
        var buffer = Garbage(64 * KiB);
        await client.ReadAsync(1 * MiB, buffer, Ct);
        AssertContent(image.Expected, 1 * MiB, buffer);
    }

    [Fact]
    public async Task A_killed_server_fails_pending_reads_with_a_protocol_error_instead_of_hanging()
    {
        using var dir = new TempDir();
        var image = await LayoutImageAsync(dir);
        await using var server = await TestNbdServer.StartAsync(dir, image.Path, readOnly: true, ct: Ct);
        var client = await ConnectAsync(server);

        await server.PauseAsync(); // requests go out, no answer comes back
        var reads = Enumerable.Range(0, 8).Select(i => client.ReadAsync(i * 4L * MiB, new byte[4 * MiB], Ct)).ToList();
        await Task.Delay(200, Ct);
        Assert.All(reads, r => Assert.False(r.IsCompleted));
        Assert.Equal(8, client.RequestsInFlight);

        await server.KillAsync();
        foreach (var read in reads)
            await Assert.ThrowsAsync<NbdProtocolException>(() => read.WaitAsync(TimeSpan.FromSeconds(10), Ct));
        Assert.True(client.IsBroken);
        await Assert.ThrowsAsync<NbdProtocolException>(() => client.ReadAsync(0, new byte[512], Ct));
        await client.DisposeAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(10), Ct);
        await Assert.ThrowsAsync<NbdProtocolException>(() => client.ReadAsync(0, new byte[512], Ct));
    }

    [Fact]
    public async Task A_cancelled_read_is_drained_without_touching_its_buffer_and_the_stream_stays_in_step()
    {
        using var dir = new TempDir();
        var image = await LayoutImageAsync(dir);
        await using var server = await TestNbdServer.StartAsync(dir, image.Path, readOnly: true, ct: Ct);
        await using var client = await ConnectAsync(server);

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => client.ReadAsync(0, new byte[512], new CancellationToken(true)));
        Assert.Equal(0, client.RequestsInFlight);

        await server.PauseAsync();
        var abandoned = Garbage(8 * MiB);
        using (var cts = new CancellationTokenSource())
        {
            var read = client.ReadAsync(76 * MiB, abandoned, cts.Token);
            await Task.Delay(100, Ct);
            cts.Cancel();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => read.WaitAsync(TimeSpan.FromSeconds(5), Ct));
        }
        Assert.Equal(1, client.RequestsInFlight); // still owed a reply
        await server.ResumeAsync();

        var after = Garbage(4 * MiB);
        await client.ReadAsync(1 * MiB, after, Ct);
        AssertContent(image.Expected, 1 * MiB, after);
        for (var i = 0; i < 200 && client.RequestsInFlight > 0; i++) await Task.Delay(10, Ct);
        Assert.Equal(0, client.RequestsInFlight);
        Assert.True(abandoned.AsSpan().IndexOfAnyExcept((byte)0xEE) < 0, "the abandoned buffer was written after cancellation");
        Assert.False(client.IsBroken);
    }

    [Fact]
    public async Task Tcp_endpoints_work_like_unix_sockets()
    {
        using var dir = new TempDir();
        var image = await LayoutImageAsync(dir);
        await using var server = await TestNbdServer.StartAsync(dir, image.Path, readOnly: true, tcp: true, ct: Ct);
        await using var client = await ConnectAsync(server, Allocation);
        var buffer = Garbage(36 * MiB);
        await client.ReadAsync(4 * MiB, buffer, Ct);
        AssertContent(image.Expected, 4 * MiB, buffer);
        Assert.Equal(await server.NbdInfoMapAsync(null, Ct), await client.MapAsync(Allocation, 0, client.ExportSize, Ct).ToListAsync(Ct));
    }

    private static byte[] Garbage(int length)
    {
        var buffer = new byte[length];
        Array.Fill(buffer, (byte)0xEE);
        return buffer;
    }

    private static (long Offset, int Length) RandomRange(Random random, int size, int maxLength)
    {
        var length = random.Next(1, maxLength);
        return (random.NextInt64(0, size - length), length);
    }

    private static void AssertContent(byte[] expected, long offset, byte[] actual)
    {
        var want = expected.AsSpan((int)offset, actual.Length);
        var same = want.CommonPrefixLength(actual);
        if (same != actual.Length)
            Assert.Fail($"byte at offset {offset + same} is 0x{actual[same]:x2}, expected 0x{want[same]:x2}");
    }
}
