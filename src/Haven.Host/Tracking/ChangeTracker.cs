using Haven.Host.Checkpoints;
using Haven.Host.State;
using Haven.Qemu.Runtime;
using Microsoft.Extensions.Logging;

namespace Haven.Host.Tracking;

/// <summary>
/// Change tracking of VM disks, for every consumer (backups to a repository, replication of a VM): which dirty
/// bitmap on which layer holds the changes since which point, whether it can still be trusted, and dropping it.
/// The only reader and writer of the tracking_points table. Creating and handing over the bitmaps themselves is
/// part of taking a point in time (BackupService.ReadPointInTimeAsync, a failover's TrackFromHere).
/// <para>
/// Also notices writes to a disk that happened outside Haven while its VM was off (qemu-io, a mount through
/// qemu-nbd, a restore by hand): no bitmap saw them. When QEMU lets go of a disk, the size and mtime of its
/// writable layer are recorded (<see cref="RecordAfterStop"/>); if they differ at the next start
/// (<see cref="CheckBeforeStart"/>), the VM's tracking points are distrusted.
/// </para>
/// </summary>
public sealed class ChangeTracker(HavenHost host)
{
    private HostStore Store => host.Store;

    /// <summary>Every tracking point of the VM, of all consumers.</summary>
    public List<TrackingPoint> PointsOf(string vmId) => Store.ListTrackingPoints(vmId);

    public List<TrackingPoint> PointsOf(string vmId, TrackingConsumer consumer) => PointsOf(vmId).FindAll(p => p.Consumer == consumer);

    public TrackingPoint? Find(string vmId, int disk, TrackingConsumer consumer) => PointsOf(vmId, consumer).Find(p => p.DiskIndex == disk);

    /// <summary>Records (or replaces) points, in the caller's transaction: they land with whatever the point in time finished.</summary>
    public static void Record(HostStore.Writer w, IEnumerable<TrackingPoint> points)
    {
        foreach (var p in points) w.UpsertTrackingPoint(p);
    }

    public void Record(IEnumerable<TrackingPoint> points) => Store.Write(w => Record(w, points));

    public void Distrust(string vmId, int disk, TrackingConsumer consumer, string reason)
    {
        host.Log.LogWarning("change tracking of VM {Vm} disk {Disk} for {Consumer} is no longer trusted: {Reason}", vmId, disk, consumer, reason);
        Store.Write(w => w.DistrustTrackingPoint(vmId, disk, consumer, reason));
    }

    /// <summary>
    /// Why the consumer's tracking of <paramref name="disks"/> cannot give the changes since its last point, or null
    /// when it can as far as the table knows (the caller still checks that the bitmaps are there and consistent).
    /// Every doubt means reading everything: never a silently missed change.
    /// </summary>
    public string? Doubt(string vmId, TrackingConsumer consumer, List<DiskRecord> disks, bool vmOff)
    {
        var points = PointsOf(vmId, consumer);
        if (points.Count == 0) return "no change tracking yet";
        if (points.Count != disks.Count || points.Select(p => p.Mark).Distinct().Count() != 1) return "the tracking points of the disks disagree";
        var tree = new LayerTree(host.Paths, Store.ListLayers(vmId));
        foreach (var d in disks)
        {
            var p = points.Find(r => r.DiskIndex == d.Index);
            if (p is null) return "the tracking points of the disks disagree";
            if (p.UntrustedReason is { } why) return why;
            if (p.LayerId != d.ActiveLayerId) return $"disk {d.Index}'s layer chain changed since the last point (checkpoint taken, applied or removed)";
            if (vmOff && !StampHolds(p, tree.PathOf(tree[d.ActiveLayerId]))) return $"disk {d.Index} was changed outside Haven while the VM was off";
        }
        return null;
    }

    /// <summary>No stamp recorded, or the layer file still has it.</summary>
    public static bool StampHolds(TrackingPoint p, string layerFile) => p.FileStamp is null || p.FileStamp == FileStamp(layerFile);

    /// <summary>After Haven's own offline bitmap edit of a layer whose stamp held before it: the stamp follows the file.</summary>
    public void Restamp(string vmId, int disk, TrackingConsumer consumer, string layerFile)
        => Store.Write(w => w.SetTrackingStamp(vmId, disk, consumer, FileStamp(layerFile)));

    public static string? FileStamp(string path)
    {
        var fi = new FileInfo(path);
        return fi.Exists ? $"{fi.Length}:{fi.LastWriteTimeUtc.Ticks}" : null;
    }

    /// <summary>
    /// Ends a consumer's tracking of the VM: its rows go in one transaction with <paramref name="alongWith"/> (the change
    /// that ends the consumer), then its bitmaps are removed. A bitmap left by a crash in between is named by no row;
    /// removing it fails only to cost write overhead, so a failure is logged, not thrown. The caller holds the VM's lock.
    /// </summary>
    public async Task DropAsync(string vmId, TrackingConsumer consumer, Action<HostStore.Writer>? alongWith, CancellationToken ct)
    {
        var points = PointsOf(vmId, consumer);
        Store.Write(w =>
        {
            alongWith?.Invoke(w);
            w.DeleteTrackingPoints(vmId, consumer);
        });
        if (points.Count == 0) return;
        host.Log.LogInformation("dropping change tracking of VM {Vm} for {Consumer} ({Count} bitmaps)", vmId, consumer, points.Count);
        var qemu = host.Runtimes.Get(vmId);
        var layers = Store.ListLayers(vmId);
        var tree = new LayerTree(host.Paths, layers);
        foreach (var p in points)
        {
            if (!layers.Exists(l => l.Id == p.LayerId)) continue;
            try
            {
                if (qemu is not null)
                {
                    if ((await DirtyBitmaps.ListAsync(qemu.Qmp, "l" + p.LayerId, ct)).Exists(b => b.Name == p.Bitmap))
                        await DirtyBitmaps.RemoveAsync(qemu.Qmp, "l" + p.LayerId, p.Bitmap, ct);
                }
                else
                {
                    var file = tree.PathOf(tree[p.LayerId]);
                    if ((await DirtyBitmaps.ListOfflineAsync(file, ct)).Exists(b => b.Name == p.Bitmap))
                        await DirtyBitmaps.EditOfflineAsync(file, p.Bitmap, ["--remove"], ct);
                }
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                host.Log.LogWarning("could not remove bitmap {Bitmap} of VM {Vm} disk {Disk}: {Error}", p.Bitmap, vmId, p.DiskIndex, e.Message);
            }
        }
    }

    /// <summary>QEMU let go of the VM's disks: records each tracked layer file's size and mtime.</summary>
    public void RecordAfterStop(string vmId)
    {
        var layers = Store.ListLayers(vmId);
        var tree = new LayerTree(host.Paths, layers);
        Store.Write(w =>
        {
            foreach (var p in PointsOf(vmId))
                if (layers.Exists(l => l.Id == p.LayerId))
                    w.SetTrackingStamp(vmId, p.DiskIndex, p.Consumer, FileStamp(tree.PathOf(tree[p.LayerId])));
        });
    }

    /// <summary>Before QEMU opens the disks again: a tracked layer file changed since <see cref="RecordAfterStop"/> distrusts its points.</summary>
    public void CheckBeforeStart(string vmId)
    {
        var layers = Store.ListLayers(vmId);
        var tree = new LayerTree(host.Paths, layers);
        foreach (var p in PointsOf(vmId))
        {
            if (p.FileStamp is null || !layers.Exists(l => l.Id == p.LayerId)) continue;
            if (!StampHolds(p, tree.PathOf(tree[p.LayerId])))
                Distrust(vmId, p.DiskIndex, p.Consumer, $"disk {p.DiskIndex} was changed outside Haven while the VM was off");
        }
    }
}
