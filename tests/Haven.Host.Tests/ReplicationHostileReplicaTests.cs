using Haven.Host.Replication;
using Haven.TestSupport;
using Xunit;

namespace Haven.Host.Tests;

/// <summary>
/// What a replica can make the primary hold or do is bounded by the disks the primary knows: block hashes that do not
/// fit them (more than the disk has blocks, a disk out of range, a first block past the end) are refused with one
/// clear error, before anything is read or sent, and the next honest resync works.
/// </summary>
public sealed class ReplicationHostileReplicaTests
{
    private const long M = 1 << 20;
    private const int H = BlockHashes.HashSize;

    /// <summary>A replica that answers HashBlocks with what <paramref name="lie"/> makes of its true hashes; everything else is real.</summary>
    private sealed class LyingReplica(IReplicaTarget real, Func<byte[][], byte[][]> lie) : IReplicaTarget
    {
        public int CyclesSent;
        public Task<long> EnsureReplicaAsync(ReplicaCreateSpec spec, CancellationToken ct) => real.EnsureReplicaAsync(spec, ct);
        public Task<long?> LastCycleAsync(string primaryVmId, CancellationToken ct) => real.LastCycleAsync(primaryVmId, ct);
        public async Task<byte[][]> HashBlocksAsync(string primaryVmId, IReadOnlyList<long> diskSizes, CancellationToken ct)
            => lie(await real.HashBlocksAsync(primaryVmId, diskSizes, ct));
        public Task<long> SendCycleAsync(string primaryVmId, ReplicaCycleHeader header, IAsyncEnumerable<ReplicaExtent> extents, CancellationToken ct)
        {
            CyclesSent++;
            return real.SendCycleAsync(primaryVmId, header, extents, ct);
        }
        public Task FailoverAsync(string primaryVmId, bool start, CancellationToken ct) => real.FailoverAsync(primaryVmId, start, ct);
        public Task CheckFailoverAsync(string primaryVmId, IReadOnlyDictionary<string, string>? failoverNetwork, CancellationToken ct)
            => real.CheckFailoverAsync(primaryVmId, failoverNetwork, ct);
        public Task<string> ReverseAsync(string primaryVmId, string newReplicaHost, ReplicationSettings settings, CancellationToken ct)
            => real.ReverseAsync(primaryVmId, newReplicaHost, settings, ct);
    }

    public static TheoryData<string, string> Lies => new()
    {
        { "more-hashes", "the replica sent 513 block hashes of disk 0; it has 512 blocks" },
        { "fewer-hashes", "the replica sent 511 block hashes of disk 0; it has 512 blocks" },
        { "extra-disk", "the replica sent block hashes of 2 disk(s); this VM has 1" },
        { "no-disk", "the replica sent block hashes of 0 disk(s); this VM has 1" },
    };

    [Theory]
    [MemberData(nameof(Lies))]
    public async Task Block_hashes_that_do_not_fit_the_primarys_disks_fail_the_resync_before_anything_is_sent(string lie, string error)
    {
        await using var a = new TestHost();
        await using var b = new TestHost();
        await a.CreateVmAsync("web", size: 32 * M);
        var now = new DiskModel(a.Dir.File("now.raw"), 32 * M);
        await a.WriteAsync("web", now, 0xA1, 0, 4 * M);
        var honest = new LocalReplicaTarget(b.Host, "a.test", "g1");
        await a.Host.Replications.EnableAsync("web", "b.test", new ReplicationSettings(), honest, a.Ct);
        await a.Host.Replications.RunCycleAsync("web", honest, a.Ct);
        await a.WriteAsync("web", now, 0xA2, 8 * M, M);

        var liar = new LyingReplica(honest, theirs => lie switch
        {
            "more-hashes" => [[.. theirs[0], .. new byte[H]]],
            "fewer-hashes" => [theirs[0][..^H]],
            "extra-disk" => [theirs[0], new byte[H]],
            _ => [],
        });
        var refused = await Assert.ThrowsAsync<InvalidDataException>(() => a.Host.Replications.RunCycleAsync("web", liar, a.Ct, forceResync: true));
        Assert.Equal(error, refused.Message);
        Assert.Equal(0, liar.CyclesSent);
        Assert.Equal(1, b.Host.Replicas.FindByPrimary("a.test", a.Host.Vms.Find("web").Id)!.LastCycle);
        var status = await a.Host.Replications.StatusAsync("web", a.Ct);
        Assert.Equal((1L, 1L, error), (status.LastCycle, status.FailedCycles, status.LastError));

        // Nothing was lost: the honest replica's resync sends exactly the change.
        var resync = await a.Host.Replications.RunCycleAsync("web", honest, a.Ct, forceResync: true);
        Assert.Equal((2L, true, M), (resync.Cycle, resync.Resync, resync.DataBytes));
        await b.AssertCheckpointAsync("web", ReplicaService.PointName(2), now);
    }

    // The network target gathers hashes as they stream in (GrpcReplicaTarget): each part is checked against the primary's disks.

    [Fact]
    public void A_disk_index_out_of_range_is_refused_without_allocating_for_it()
    {
        var hashes = new BlockHashes.Collector([4 * M]);
        var e = Assert.Throws<InvalidDataException>(() => hashes.Add(4_000_000_000, 0, new byte[H]));
        Assert.Equal("the replica sent block hashes of disk 4000000000; this VM has 1 disk(s)", e.Message);
    }

    [Fact]
    public void A_first_block_past_the_end_is_refused()
    {
        var hashes = new BlockHashes.Collector([4 * M]); // 64 blocks
        var e = Assert.Throws<InvalidDataException>(() => hashes.Add(0, 64, new byte[H]));
        Assert.Equal("the replica sent block hashes of disk 0 from block 64; the disk has 64 blocks", e.Message);
        e = Assert.Throws<InvalidDataException>(() => hashes.Add(0, ulong.MaxValue, new byte[H]));
        Assert.Contains("from block 18446744073709551615", e.Message);
    }

    [Fact]
    public void More_hashes_than_the_disk_has_blocks_are_refused_also_across_parts()
    {
        var hashes = new BlockHashes.Collector([4 * M, 2 * M]);
        Assert.Equal("the replica sent more block hashes of disk 0 than its 64 blocks",
            Assert.Throws<InvalidDataException>(() => hashes.Add(0, 0, new byte[65 * H])).Message);
        hashes.Add(0, 0, new byte[60 * H]);
        Assert.Equal("the replica sent more block hashes of disk 0 than its 64 blocks",
            Assert.Throws<InvalidDataException>(() => hashes.Add(0, 60, new byte[5 * H])).Message);
        Assert.Equal("the replica's block hashes of disk 0 arrived out of order (block 3, expected 60)",
            Assert.Throws<InvalidDataException>(() => hashes.Add(0, 3, new byte[H])).Message);
        Assert.Contains("not a multiple of 16", Assert.Throws<InvalidDataException>(() => hashes.Add(0, 60, new byte[7])).Message);
    }

    [Fact]
    public void Hashes_that_stop_short_are_refused_and_complete_ones_are_returned_per_disk()
    {
        var hashes = new BlockHashes.Collector([4 * M, M + 1]); // 64 blocks, 17 blocks (the last one byte)
        var zero = new byte[64 * H];
        var one = Enumerable.Repeat((byte)1, 17 * H).ToArray();
        hashes.Add(0, 0, zero.AsSpan(0, 40 * H));
        hashes.Add(1, 0, one);
        Assert.Equal("the replica sent 40 block hashes of disk 0; it has 64 blocks", Assert.Throws<InvalidDataException>(() => hashes.Complete()).Message);
        hashes.Add(0, 40, zero.AsSpan(40 * H));
        var all = hashes.Complete();
        Assert.Equal((64 * H, 17 * H), (all[0].Length, all[1].Length));
        Assert.Equal(one, all[1]);
    }
}
