using Haven.Api;

namespace Haven.Cli;

// Backup disks served over NBD (docs/backup.md "Mounting a backup").
public sealed partial class HavenClient
{
    public Task<MountInfo> MountBackupAsync(BackupMountRequest request, CancellationToken ct) =>
        SendAsync<MountInfo>(HttpMethod.Post, "/v1/mounts", request, ct);

    public Task<List<MountInfo>> ListMountsAsync(CancellationToken ct) =>
        SendAsync<List<MountInfo>>(HttpMethod.Get, "/v1/mounts", null, ct);

    public Task<MountInfo> UnmountBackupAsync(string id, CancellationToken ct) =>
        SendAsync<MountInfo>(HttpMethod.Delete, "/v1/mounts/" + Uri.EscapeDataString(id), null, ct);
}
