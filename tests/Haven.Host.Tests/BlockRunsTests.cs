using System.Security.Cryptography;
using Haven.Backup;
using Haven.Host.Replication;
using Haven.Nbd;
using Haven.Qemu.Images;
using Xunit;

namespace Haven.Host.Tests;

/// <summary>
/// The one run-grouping helper of replication (<see cref="BlockRuns"/>): against a block-by-block model on random plans
/// (small and larger than 4 GiB, a short last block, filters), and its pipelined reads against a real qemu-nbd.
/// </summary>
public sealed class BlockRunsTests
{
    private const int Block = ReplicationService.BlockSize;

    /// <summary>A random plan: each block data, known zero, or unchanged, in stretches so that runs hit their limits.</summary>
    private static ChunkPlan RandomPlan(Random rng, long diskSize)
    {
        var count = ChunkPlan.CountChunks(diskSize, Block);
        var read = new bool[count];
        var zero = new bool[count];
        var i = 0;
        while (i < count)
        {
            var kind = rng.Next(3);
            var length = rng.Next(4) == 0 ? rng.Next(1, 200) : rng.Next(1, 6);
            for (var end = Math.Min(count, i + length); i < end; i++)
            {
                read[i] = kind == 1;
                zero[i] = kind == 2;
            }
        }
        return ChunkPlan.FromMaps(Block, diskSize, read, zero);
    }

    /// <summary>
    /// Checks <paramref name="runs"/> against the model: every wanted data or zero block is in exactly one run, in disk
    /// order, of its kind; nothing else is; runs are no longer than their maximum and as long as they can be (a run ends
    /// only at the maximum, the end of the disk, or a block of another kind or not wanted); offsets and lengths are the
    /// blocks' bytes in 64 bits, the last block clipped to the disk.
    /// </summary>
    private static void AssertModel(ChunkPlan plan, Func<int, bool>? wanted, List<BlockRun> runs)
    {
        int KindOf(int b) => wanted is not null && !wanted(b) ? 0 : plan.Read[b] ? 1 : plan.Zero[b] ? 2 : 0;
        var covered = new int[plan.ChunkCount];
        BlockRun? previous = null;
        foreach (var r in runs)
        {
            Assert.True(r.Blocks >= 1);
            Assert.True(r.Blocks <= (r.IsData ? ReplicationService.MaxDataExtent : ReplicaService.MaxExtentBytes) / Block, $"run {r} is too long");
            Assert.Equal((long)r.FirstBlock * Block, r.Offset);
            Assert.Equal(Math.Min(plan.DiskSize, (long)r.EndBlock * Block) - r.Offset, r.Length);
            if (previous is { } p) Assert.True(p.EndBlock <= r.FirstBlock, $"run {r} is not after {p}");
            for (var b = r.FirstBlock; b < r.EndBlock; b++)
            {
                Assert.Equal(r.IsData ? 1 : 2, KindOf(b));
                covered[b]++;
            }
            // Maximal: the next block would have fitted, so it must be of another kind (or the run is full, or the disk ends).
            var full = r.Blocks == (r.IsData ? ReplicationService.MaxDataExtent : ReplicaService.MaxExtentBytes) / Block;
            if (!full && r.EndBlock < plan.ChunkCount) Assert.NotEqual(r.IsData ? 1 : 2, KindOf(r.EndBlock));
            previous = r;
        }
        for (var b = 0; b < plan.ChunkCount; b++) Assert.Equal(KindOf(b) == 0 ? 0 : 1, covered[b]);
    }

    [Fact]
    public void Random_plans_group_as_the_model_says()
    {
        for (var seed = 0; seed < 200; seed++)
        {
            var rng = new Random(seed);
            var size = (long)rng.Next(1, 3000) * Block - (rng.Next(2) == 0 ? 0 : rng.Next(1, Block));
            var plan = RandomPlan(rng, size);
            AssertModel(plan, null, BlockRuns.Of(plan).ToList());
            var holes = new bool[plan.ChunkCount];
            for (var b = 0; b < holes.Length; b++) holes[b] = rng.Next(5) == 0;
            bool Wanted(int b) => !holes[b];
            AssertModel(plan, Wanted, BlockRuns.Of(plan, Wanted).ToList());
        }
    }

    [Fact]
    public void A_disk_larger_than_4_GiB_has_64_bit_offsets_and_a_short_last_block()
    {
        // 5 GiB + 1000 bytes: blocks past 4 GiB (offsets beyond 32 bits), the last block 1000 bytes long.
        var size = (5L << 30) + 1000;
        var count = ChunkPlan.CountChunks(size, Block);
        var read = new bool[count];
        var zero = new bool[count];
        for (var b = count - 40; b < count; b++) read[b] = true; // the last 40 blocks: data, ending with the short one
        for (var b = (int)((4L << 30) / Block) - 3; b < (int)((4L << 30) / Block) + 100; b++) zero[b] = true; // zeroes across 4 GiB
        var plan = ChunkPlan.FromMaps(Block, size, read, zero);
        var runs = BlockRuns.Of(plan).ToList();
        AssertModel(plan, null, runs);
        var last = runs[^1];
        Assert.True(last.IsData);
        Assert.Equal(size - last.Offset, last.Length);
        Assert.Equal(7L * Block + 1000, last.Length); // 40 blocks = 16 + 16 + 8; the last run is 7 full blocks and the short one
        Assert.True(last.Offset > uint.MaxValue);
        var acrossFour = runs.Find(r => !r.IsData && r.Offset < 4L << 30 && r.Offset + r.Length > 4L << 30);
        Assert.Equal((4L << 30) - 3 * Block, acrossFour.Offset);
        Assert.Equal(64 * Block, acrossFour.Length);
        Assert.Equal(40 * Block - Block + 1000, runs.Where(r => r.IsData).Sum(r => (long)r.Length));
    }

    [Fact]
    public async Task Pipelined_reads_return_each_run_with_its_own_bytes()
    {
        var ct = TestContext.Current.CancellationToken;
        var dir = Directory.CreateTempSubdirectory("haven-blockruns-");
        try
        {
            var image = Path.Combine(dir.FullName, "disk.raw");
            var size = 40L * Block + 5120; // a short last block (disks are whole sectors)
            var bytes = new byte[size];
            RandomNumberGenerator.Fill(bytes);
            // A sparse file with holes, so that the plan has zero runs between data runs (more than ReadDepth of each).
            (int First, int Blocks)[] holes = [(3, 5), (12, 1), (20, 2), (30, 3)];
            foreach (var (first, blocks) in holes) Array.Clear(bytes, first * Block, blocks * Block);
            await using (var f = new FileStream(image, FileMode.CreateNew))
            {
                f.SetLength(size);
                for (var b = 0; b * (long)Block < size; b++)
                    if (!holes.Any(h => b >= h.First && b < h.First + h.Blocks))
                    {
                        f.Position = (long)b * Block;
                        await f.WriteAsync(bytes.AsMemory(b * Block, (int)Math.Min(Block, size - (long)b * Block)), ct);
                    }
            }
            var socket = Path.Combine(dir.FullName, "nbd.sock");
            await using var server = await QemuNbdServer.StartAsync(image, DiskFormat.Raw, socket, "disk", writable: false, connections: 1, ct: ct);
            await using var nbd = await NbdClient.ConnectAsync(new NbdEndpoint.Unix(socket), "disk", ["base:allocation"], ct);
            var plan = await ChunkPlan.BuildAsync(nbd, Block, null, ct);
            var runs = BlockRuns.Of(plan).ToList();
            Assert.Equal(holes.Length, runs.Count(r => !r.IsData));
            Assert.True(runs.Count(r => r.IsData) > BlockRuns.ReadDepth);
            var seen = new byte[size];
            var count = 0;
            await foreach (var (run, data) in BlockRuns.ReadAsync(nbd, runs, ct))
            {
                Assert.Equal(runs[count++], run);
                if (run.IsData)
                {
                    Assert.Equal(run.Length, data.Length);
                    data.Span.CopyTo(seen.AsSpan((int)run.Offset));
                }
                else Assert.True(data.IsEmpty);
            }
            Assert.Equal(runs.Count, count);
            Assert.Equal(bytes, seen); // the holes stayed zero in `seen`, as they are in the image
        }
        finally { dir.Delete(recursive: true); }
    }
}
