using Haven.Api;
using Haven.Backup;
using Haven.Nbd;
using Microsoft.Extensions.Logging;

namespace Haven.Host.Backups;

/// <summary>
/// Backup disks served as read-only NBD exports for external tools (like proxmox-backup-client map): each mount
/// holds its repository open and serves one disk on a unix socket in the run folder (run/mount-ID.nbd, 0600) until
/// it is unmounted or havend stops. Mounts live in memory only: after a havend restart they are gone and the
/// start-up sweep removes their dead sockets. A mount holds its backup in the repository (a reader lock that prune
/// honours), so the backup and its chunks stay while it is mounted.
/// </summary>
public sealed class BackupMounts(HavenHost host) : IAsyncDisposable
{
    private readonly Dictionary<string, Mount> _mounts = [];
    private readonly SemaphoreSlim _gate = new(1, 1);

    private sealed record Mount(MountInfo Info, Repository.Repository Repository, IAsyncDisposable Hold, BackupDiskExport Export, NbdServer Server);

    public async Task<MountInfo> MountAsync(BackupMountRequest req, CancellationToken ct)
    {
        var repo = await host.Repositories.OpenAsync(req, ct);
        IAsyncDisposable? hold = null;
        try
        {
            // Held before the backup is read: a prune that starts later keeps it (docs/backup.md "Mounting a backup").
            try { hold = await repo.HoldBackupsAsync([req.BackupId], "mount", Environment.MachineName, ct); }
            catch (Repository.RepositoryLockedException e) { throw HavenException.Conflict(e.Message); }
            Repository.BackupManifest manifest;
            try { manifest = await repo.ReadManifestAsync(req.BackupId, ct); }
            catch (Repository.BackupNotFoundException e) { throw HavenException.NotFound(e.Message); }
            if (req.Disk < 0 || req.Disk >= manifest.Disks.Count)
                throw HavenException.Invalid($"backup {req.BackupId} has no disk {req.Disk} (it has {manifest.Disks.Count}: 0..{manifest.Disks.Count - 1})");

            var id = HostPaths.NewId()[..8];
            var socket = host.Paths.MountSocket(id);
            var export = new BackupDiskExport(repo, manifest, req.Disk, log: host.Log);
            var server = NbdServer.ListenUnix(socket, export, new NbdServerOptions { Log = m => host.Log.LogWarning("mount {Mount}: {Message}", id, m) });
            var info = new MountInfo
            {
                Id = id, BackupId = manifest.Id, Vm = manifest.VmName, Disk = req.Disk, Export = export.Name, SizeBytes = export.Size,
                Socket = socket, Uri = $"nbd+unix:///{Uri.EscapeDataString(export.Name)}?socket={socket}", MountedAt = host.Time.GetUtcNow(),
                ChunksReferenced = export.ChunksReferenced,
            };
            await _gate.WaitAsync(ct);
            try { _mounts[id] = new Mount(info, repo, hold, export, server); }
            finally { _gate.Release(); }
            host.Log.LogInformation("mounted disk {Disk} ({Export}) of backup {Backup} from {Repository} as {Mount} at {Socket}",
                req.Disk, export.Name, manifest.Id, RepositoryAccess.Describe(req.Repository), id, socket);
            return info;
        }
        catch
        {
            if (hold is not null) await hold.DisposeAsync();
            await repo.DisposeAsync();
            throw;
        }
    }

    public async Task<List<MountInfo>> ListAsync(CancellationToken ct)
    {
        await _gate.WaitAsync(ct);
        try { return [.. _mounts.Values.OrderBy(m => m.Info.MountedAt).Select(Describe)]; }
        finally { _gate.Release(); }
    }

    private static MountInfo Describe(Mount m) => m.Info with
    {
        Clients = m.Server.ActiveConnections,
        ChunksFetched = m.Export.ChunksFetched,
        BytesFetched = m.Export.BytesFetched,
    };

    /// <summary>Ends a mount: its clients are dropped, its socket removed, its repository closed.</summary>
    public async Task<MountInfo> UnmountAsync(string id, CancellationToken ct)
    {
        Mount? mount;
        await _gate.WaitAsync(ct);
        try
        {
            if (!_mounts.Remove(id, out mount)) throw HavenException.NotFound($"no mount '{id}' (haven backups mounts lists them)");
        }
        finally { _gate.Release(); }
        var info = Describe(mount);
        await CloseAsync(mount);
        host.Log.LogInformation("unmounted {Mount} (backup {Backup} disk {Disk}): {Chunks} chunk(s), {Bytes} byte(s) fetched",
            id, info.BackupId, info.Disk, info.ChunksFetched, info.BytesFetched);
        return info;
    }

    private static async Task CloseAsync(Mount mount)
    {
        await mount.Server.DisposeAsync();
        await mount.Hold.DisposeAsync();
        await mount.Repository.DisposeAsync();
    }

    public async ValueTask DisposeAsync()
    {
        List<Mount> all;
        await _gate.WaitAsync();
        try
        {
            all = [.. _mounts.Values];
            _mounts.Clear();
        }
        finally { _gate.Release(); }
        foreach (var m in all)
        {
            await CloseAsync(m);
            host.Log.LogInformation("unmounted {Mount} (havend stops)", m.Info.Id);
        }
    }
}
