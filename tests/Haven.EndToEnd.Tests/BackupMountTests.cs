using Haven.Api;
using Haven.Qemu.Images;
using Xunit;

namespace Haven.EndToEnd.Tests;

/// <summary>
/// `haven backups mount`: a backup's disk served read-only over NBD by havend, read by qemu-img as the disk that was
/// backed up; bad input refused with nothing served; unmount and a havend restart leave no socket behind.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class BackupMountTests
{
    private const long M = 1 << 20;

    [Fact]
    public async Task A_mounted_backup_reads_as_the_backed_up_disk_and_unmount_and_restart_leave_nothing()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var w = new HavenWorld(ct);
        await w.StartDaemonAsync();
        await w.CreateVmAsync("vm");
        var repo = w.Dir.File("repo");
        var pass = w.Dir.File("pass");
        await File.WriteAllTextAsync(pass, "a passphrase\n", ct);
        string[] r = ["--repo", repo, "--passphrase-file", pass];
        await w.OkAsync(["repo", "init", .. r]);
        var model = w.NewModel("now");
        await w.WriteAsync("vm", model, new W(0x51, 0, 3 * M), new W(0x6c, 17 * M + 4096, 2 * M));
        var backup = await w.JsonAsync<BackupResult>(["backup", "vm", .. r]);

        var mount = await w.JsonAsync<MountInfo>(["backups", "mount", backup.BackupId, .. r]);
        Assert.Equal((backup.BackupId, "vm", 0, HavenWorld.DiskSize), (mount.BackupId, mount.Vm, mount.Disk, mount.SizeBytes));
        Assert.Equal(w.Paths.MountSocket(mount.Id), mount.Socket);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(mount.Socket));

        // qemu-img reads the export as the disk the VM had; the empty areas are holes it never fetched.
        await ProcessRunner.RunAsync("qemu-img", ["compare", "-f", "raw", "-F", "raw", mount.Uri, model.Path], ct);
        var listed = Assert.Single(await w.JsonAsync<List<MountInfo>>("backups", "mounts"));
        Assert.Equal(mount.Id, listed.Id);
        Assert.True(listed.ChunksFetched > 0 && listed.ChunksFetched <= listed.ChunksReferenced, $"{listed.ChunksFetched} of {listed.ChunksReferenced}");
        Assert.True(listed.BytesFetched < HavenWorld.DiskSize, "the holes were fetched too");

        // Bad input: one line, non-zero, and no second socket.
        var unknown = await w.Cli(["backups", "mount", "20250101-000000-deadbeef", .. r]);
        Assert.NotEqual(0, unknown.ExitCode);
        Assert.Contains("20250101-000000-deadbeef", Assert.Single(unknown.StderrLines));
        var noDisk = await w.Cli(["backups", "mount", backup.BackupId, "--disk", "3", .. r]);
        Assert.NotEqual(0, noDisk.ExitCode);
        Assert.Contains("has no disk 3", Assert.Single(noDisk.StderrLines));
        Assert.Single(Directory.GetFiles(w.Paths.RunDir, "mount-*"));

        var unmounted = await w.JsonAsync<MountInfo>("backups", "unmount", mount.Id);
        Assert.Equal(mount.Id, unmounted.Id);
        Assert.False(File.Exists(mount.Socket));
        Assert.Empty(await w.JsonAsync<List<MountInfo>>("backups", "mounts"));
        var again = await w.Cli("backups", "unmount", mount.Id);
        Assert.NotEqual(0, again.ExitCode);
        Assert.Contains($"no mount '{mount.Id}'", Assert.Single(again.StderrLines));

        // kill -9 of havend while a disk is mounted: the next havend serves nothing and removes the dead socket.
        var second = await w.JsonAsync<MountInfo>(["backups", "mount", backup.BackupId, .. r]);
        Assert.True(File.Exists(second.Socket));
        await w.KillDaemonAsync();
        await w.StartDaemonAsync();
        Assert.False(File.Exists(second.Socket));
        Assert.Empty(await w.JsonAsync<List<MountInfo>>("backups", "mounts"));
    }
}
