using System.Diagnostics;
using System.Text.Json;
using Haven.Api;
using Haven.Backup;
using Haven.Host.Checkpoints;
using Haven.Host.State;
using Haven.Nbd;
using Haven.Qemu.Images;

namespace Haven.Host.Replication;

/// <summary>
/// Extended replication (Hyper-V's): a replica host replicates its replica VM on to a third host, at its own
/// frequency (5 or 15 minutes). One chain, not a fan-out from the primary. The replica VM is off and its
/// layers change with every cycle, so QEMU dirty bitmaps cannot track it: instead each cycle applied here
/// marks its blocks in a small file of its own (<c>vms/&lt;id&gt;/extended-changes.bin</c>, one bit per
/// 64 KiB block), written before the cycle commits (marking too much is harmless, missing a block is not).
/// An extended cycle sends the marked blocks of the latest recovery point and clears the marks once the
/// third host has committed them. docs/replication.md, "Extended replication".
/// </summary>
public sealed class ExtendedReplication(HavenHost host)
{
    private HostStore Store => host.Store;

    public string ChangesFile(string vmId) => Path.Combine(host.Paths.VmDir(vmId), "extended-changes.bin");

    /// <summary>Extends the replication of replica VM <paramref name="vmName"/> to a third host (the initial copy is the first cycle).</summary>
    public async Task<ReplicationRecord> EnableAsync(string vmName, string target, ReplicationSettings settings, IReplicaTarget third, CancellationToken ct)
    {
        settings.Validate(host.Time.GetUtcNow());
        if (settings.FrequencySeconds is not (300 or 900)) throw HavenException.Invalid("extended replication runs every 5 or 15 minutes (300 or 900 s)");
        var vm = host.Vms.Find(vmName);
        FailoverNetworkMap.Validate(settings.FailoverNetwork, vm.Hardware, vm.Name);
        await using var _ = await host.LockVmAsync(vm.Id, ct);
        var replica = Store.FindReplica(vm.Id) ?? throw HavenException.Conflict($"VM '{vm.Name}' is not a replica: extended replication continues a replica to a third host");
        if (Store.FindReplication(vm.Id) is not null) throw HavenException.Conflict($"replica VM '{vm.Name}' is already extended");
        await third.EnsureReplicaAsync(await ReplicationService.SpecOfAsync(host, vm, settings, ct), ct);
        var record = new ReplicationRecord(vm.Id, target, JsonSerializer.Serialize(settings with { Extended = true }, ApiJson.Options), 0);
        Store.Write(w => w.InsertReplication(record));
        return record;
    }

    /// <summary>Called by <see cref="ReplicaService"/> before a cycle commits: marks its blocks for the next extended cycle.</summary>
    internal void Mark(string vmId, List<DiskRecord> disks, List<(int Disk, long Offset, long Length)> ranges)
    {
        if (ranges.Count == 0 || Store.FindReplication(vmId) is null) return;
        var bits = Load(vmId, disks);
        foreach (var (disk, offset, length) in ranges)
            for (var b = offset / ReplicationService.BlockSize; b * ReplicationService.BlockSize < offset + length; b++)
                bits[disk][b >> 3] |= (byte)(1 << (int)(b & 7));
        Save(vmId, bits);
    }

    /// <summary>
    /// One extended cycle: the marked blocks of the latest recovery point (all of it for the first cycle, or
    /// when the third host is not where this host left it) go to the third host as one cycle.
    /// </summary>
    public async Task<CycleResult> RunCycleAsync(string vmName, IReplicaTarget third, CancellationToken ct)
    {
        var clock = Stopwatch.StartNew();
        var vm = host.Vms.Find(vmName);
        // Held throughout: no cycle from the primary lands (nor any point is merged away) while we read the latest point.
        await using var _ = await host.LockVmAsync(vm.Id, ct);
        var record = Store.FindReplication(vm.Id) ?? throw HavenException.NotFound($"replica VM '{vm.Name}' is not extended");
        var points = Store.ListReplicaPoints(vm.Id);
        if (points.Count == 0) throw HavenException.Conflict($"replica VM '{vm.Name}' has no recovery point to send yet");
        var latest = points[^1];
        var disks = Store.ListDisks(vm.Id);
        var thirdLast = await third.LastCycleAsync(vm.Id, ct) ?? throw HavenException.Conflict($"the third host has no replica of '{vm.Name}'; extend again");
        var full = record.LastCycle == 0 || thirdLast != record.LastCycle;
        var bits = full ? null : Load(vm.Id, disks);
        var cycle = thirdLast + 1;
        var tree = new LayerTree(host.Paths, Store.ListLayers(vm.Id));
        long dataBytes = 0, zeroBytes = 0, extents = 0;
        var servers = new List<QemuNbdServer>();
        try
        {
            var sources = new List<(NbdEndpoint Endpoint, string Export)>();
            foreach (var d in disks)
            {
                var socket = Path.Combine(host.Paths.RunDir, $"{vm.Id}-extended{d.Index}.nbd");
                servers.Add(await QemuNbdServer.StartAsync(tree.PathOf(tree.LayerOf(latest.CheckpointId, d.Index)), DiskFormat.Qcow2, socket, "point", writable: false, ct: ct));
                sources.Add((new NbdEndpoint.Unix(socket), "point"));
            }
            var vars = host.Paths.CheckpointVarsFile(vm.Id, latest.CheckpointId);
            var header = new ReplicaCycleHeader(cycle, thirdLast, disks.ConvertAll(d => d.SizeBytes), latest.PointTime, latest.Consistency,
                File.Exists(vars) ? Vms.Firmware.ReadVars(vars) : null)
            {
                // The extended replication's own failover network (the third host's bridges), set on this host.
                FailoverNetwork = JsonSerializer.Deserialize<ReplicationSettings>(record.Settings, ApiJson.Options)!.FailoverNetwork ?? [],
            };
            var committed = await third.SendCycleAsync(vm.Id, header, ReadAsync(sources, bits, skipZeroes: thirdLast == 0, (d, z) =>
            {
                dataBytes += d;
                zeroBytes += z;
                extents++;
            }, ct), ct);
            if (committed != cycle) throw new InvalidDataException($"the third host acknowledged cycle {committed}, not {cycle}");
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            Store.Write(w => w.RecordCycleFailed(vm.Id, e.Message.ReplaceLineEndings(" "), host.Time.GetUtcNow()));
            throw;
        }
        finally
        {
            foreach (var s in servers) await host.CleanupAsync("stop qemu-nbd of the extended cycle", () => s.DisposeAsync().AsTask());
            foreach (var d in disks)
                host.Cleanup("delete the extended cycle's NBD socket", () => File.Delete(Path.Combine(host.Paths.RunDir, $"{vm.Id}-extended{d.Index}.nbd")));
        }
        // Sent and committed there: nothing is marked any more (no cycle could land meanwhile: we hold the lock).
        File.Delete(ChangesFile(vm.Id));
        Store.Write(w => w.RecordCycleSucceeded(vm.Id, cycle, dataBytes, clock.Elapsed, host.Time.GetUtcNow(), appConsistent: false));
        return new CycleResult(cycle, full, latest.Consistency, dataBytes, zeroBytes, extents, clock.Elapsed);
    }

    /// <summary>The blocks to send: marked ones (<paramref name="bits"/>), or, when null, every allocated block.</summary>
    private static async IAsyncEnumerable<ReplicaExtent> ReadAsync(List<(NbdEndpoint Endpoint, string Export)> sources, byte[][]? bits, bool skipZeroes,
        Action<long, long> sent, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct)
    {
        for (var disk = 0; disk < sources.Count; disk++)
        {
            await using var nbd = await NbdClient.ConnectAsync(sources[disk].Endpoint, sources[disk].Export, ["base:allocation"], ct);
            var plan = await ChunkPlan.BuildAsync(nbd, ReplicationService.BlockSize, null, ct);
            var marks = bits?[disk];
            bool Wanted(int i) => (marks is null || (marks[i >> 3] & (1 << (i & 7))) != 0) && !(skipZeroes && plan.Zero[i]);
            await foreach (var (run, data) in BlockRuns.ReadAsync(nbd, BlockRuns.Of(plan, Wanted), ct))
            {
                sent(run.IsData ? run.Length : 0, run.IsData ? 0 : run.Length);
                yield return new ReplicaExtent(disk, run.Offset, run.Length, run.IsData ? data : null);
            }
        }
    }

    private byte[][] Load(string vmId, List<DiskRecord> disks)
    {
        var bits = disks.ConvertAll(d => new byte[(ChunkPlan.CountChunks(d.SizeBytes, ReplicationService.BlockSize) + 7) / 8]).ToArray();
        var path = ChangesFile(vmId);
        if (!File.Exists(path)) return bits;
        var data = File.ReadAllBytes(path);
        var at = 0;
        foreach (var b in bits)
        {
            // A file that does not fit the disks (sizes changed) marks everything: a full resend, never a miss.
            if (at + b.Length > data.Length) { foreach (var all in bits) Array.Fill(all, (byte)0xFF); return bits; }
            data.AsSpan(at, b.Length).CopyTo(b);
            at += b.Length;
        }
        return bits;
    }

    private void Save(string vmId, byte[][] bits)
    {
        var path = ChangesFile(vmId);
        var temp = path + ".partial";
        using (var f = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            foreach (var b in bits) f.Write(b);
            f.Flush(flushToDisk: true);
        }
        File.Move(temp, path, overwrite: true);
    }
}
