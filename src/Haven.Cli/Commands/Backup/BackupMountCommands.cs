using System.CommandLine;
using System.Globalization;
using Haven.Api;
using Haven.Cli.Commands.Repo;
using Spectre.Console;

namespace Haven.Cli.Commands.Backup;

/// <summary>haven backups mount ID: POST /v1/mounts — one disk of a backup served read-only over NBD.</summary>
public sealed class BackupMountCommand : Command
{
    public Argument<string> BackupId { get; } = new("BACKUP") { Description = "Id of the backup (haven backups list)" };

    public Option<int> Disk { get; } = new("--disk")
    {
        Description = "Which disk of the backup, 0 for the first",
        HelpName = "N",
        DefaultValueFactory = _ => 0,
    };

    public RepoOptions Repo { get; }

    public BackupMountCommand(CliContext ctx) : base("mount", "Serve a backup's disk as a read-only NBD export (prints its nbd+unix:// URI for qemu-img, nbdfuse, guestfish...)")
    {
        Add(BackupId);
        Add(Disk);
        Repo = new RepoOptions(this, ctx);
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var mount = await client.MountBackupAsync(new BackupMountRequest
            {
                Repository = Repo.Repository(parseResult),
                Passphrase = Repo.Passphrase(parseResult),
                S3 = Repo.S3(parseResult),
                BackupId = parseResult.GetRequiredValue(BackupId),
                Disk = parseResult.GetValue(Disk),
            }, ct);
            output.Result(mount, console =>
            {
                console.Line($"Mounted disk {mount.Disk} ({mount.Export}, {SizeParser.Format(mount.SizeBytes)}) of backup {mount.BackupId} as {mount.Id}:");
                console.Line(mount.Uri);
                console.Line($"It stays until 'haven backups unmount {mount.Id}' or havend stops.");
            });
        });
    }
}

/// <summary>haven backups unmount MOUNT: DELETE /v1/mounts/{id}.</summary>
public sealed class BackupUnmountCommand : Command
{
    public Argument<string> MountId { get; } = new("MOUNT") { Description = "Id of the mount (haven backups mounts)" };

    public BackupUnmountCommand(CliContext ctx) : base("unmount", "End a mount: its clients are dropped and its socket removed")
    {
        Add(MountId);
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var mount = await client.UnmountBackupAsync(parseResult.GetRequiredValue(MountId), ct);
            output.Result(mount, console => console.Line(string.Create(CultureInfo.InvariantCulture,
                $"Unmounted {mount.Id} (backup {mount.BackupId} disk {mount.Disk}); {mount.ChunksFetched} of {mount.ChunksReferenced} chunks were fetched.")));
        });
    }
}

/// <summary>haven backups mounts: GET /v1/mounts.</summary>
public sealed class BackupMountsCommand : Command
{
    public BackupMountsCommand(CliContext ctx) : base("mounts", "List the backup disks havend serves over NBD")
    {
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var mounts = await client.ListMountsAsync(ct);
            output.Result(mounts, console =>
            {
                if (mounts.Count == 0)
                {
                    console.Line("No mounts.");
                    return;
                }
                var table = Human.Table("ID", "BACKUP", "VM", "DISK", "SIZE", "CLIENTS", "FETCHED", "URI");
                foreach (var m in mounts)
                    table.AddTextRow(m.Id, m.BackupId, m.Vm, m.Disk.ToString(CultureInfo.InvariantCulture), SizeParser.Format(m.SizeBytes),
                        m.Clients.ToString(CultureInfo.InvariantCulture), $"{m.ChunksFetched}/{m.ChunksReferenced} chunks", m.Uri);
                console.Write(table);
            });
        });
    }
}
