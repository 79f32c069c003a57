using Haven.Host.Checkpoints;

namespace Haven.Host.Backups;

/// <summary>
/// Notices writes to a disk that happened outside Haven while its VM was off (qemu-io, a mount through
/// qemu-nbd, a restore by hand): no bitmap saw them. When QEMU lets go of a disk, the size and mtime of
/// its writable layer are recorded; if they differ at the next start, the reference points are distrusted.
/// </summary>
public sealed class ReferencePointStamps(HavenHost host)
{
    public void RecordAfterStop(string vmId)
    {
        var tree = new LayerTree(host.Paths, host.Store.ListLayers(vmId));
        host.Store.Write(w =>
        {
            foreach (var rp in host.Store.ListReferencePoints(vmId))
                if (host.Store.ListLayers(vmId).Exists(l => l.Id == rp.LayerId))
                    w.SetReferencePointStamp(vmId, rp.DiskIndex, rp.RepositoryId, BackupService.FileStamp(tree.PathOf(tree[rp.LayerId])));
        });
    }

    public void CheckBeforeStart(string vmId)
    {
        var tree = new LayerTree(host.Paths, host.Store.ListLayers(vmId));
        host.Store.Write(w =>
        {
            foreach (var rp in host.Store.ListReferencePoints(vmId))
            {
                if (rp.FileStamp is null || !host.Store.ListLayers(vmId).Exists(l => l.Id == rp.LayerId)) continue;
                if (BackupService.FileStamp(tree.PathOf(tree[rp.LayerId])) != rp.FileStamp)
                    w.DistrustReferencePoint(vmId, rp.DiskIndex, rp.RepositoryId, $"disk {rp.DiskIndex} was changed outside Haven while the VM was off");
            }
        });
    }
}
