using System.Text.Json.Nodes;
using Haven.Qemu.Qmp;
using Microsoft.Extensions.Logging;

namespace Haven.Qemu.Runtime;

/// <summary>
/// A point-in-time view of a running VM's disk, exported over QEMU's NBD server, while the guest keeps
/// writing: a `blockdev-backup sync=none` job copies each old cluster into a temporary qcow2 (the
/// fleece, whose backing is the live disk) just before the guest overwrites it. The job start and the
/// hand-over of change tracking (disable the old reference bitmap, add the new one) happen in one
/// transaction, so the view and the new bitmap begin at the same instant. docs/backup.md has the steps.
/// </summary>
public static class Fleecing
{
    public sealed record Disk(string DiskNode, string FleeceNode, string FleeceFile, string JobId, string ExportName, string? OldBitmap, string NewBitmap, long BitmapGranularity);

    /// <summary>Adds the fleece nodes (files must exist: qcow2 overlays of the disk's size) and takes the point in time for all disks at once.</summary>
    public static async Task StartAsync(QmpClient qmp, IReadOnlyList<Disk> disks, CancellationToken ct = default)
    {
        foreach (var d in disks)
            await qmp.ExecuteAsync("blockdev-add", new JsonObject
            {
                ["driver"] = "qcow2",
                ["node-name"] = d.FleeceNode,
                ["file"] = new JsonObject { ["driver"] = "file", ["filename"] = d.FleeceFile, ["node-name"] = QemuCommandLine.FileNodeName(d.FleeceNode) },
                ["backing"] = d.DiskNode,
            }, ct);
        var actions = new JsonArray();
        foreach (var d in disks)
        {
            actions.Add(DirtyBitmaps.Action("blockdev-backup", new JsonObject { ["job-id"] = d.JobId, ["device"] = d.DiskNode, ["target"] = d.FleeceNode, ["sync"] = "none", ["auto-dismiss"] = false }));
            if (d.OldBitmap is not null)
                actions.Add(DirtyBitmaps.Action("block-dirty-bitmap-disable", new JsonObject { ["node"] = d.DiskNode, ["name"] = d.OldBitmap }));
            actions.Add(DirtyBitmaps.Action("block-dirty-bitmap-add", new JsonObject { ["node"] = d.DiskNode, ["name"] = d.NewBitmap, ["persistent"] = true, ["granularity"] = d.BitmapGranularity }));
        }
        await qmp.ExecuteAsync("transaction", new JsonObject { ["actions"] = actions }, ct);
    }

    /// <summary>Starts QEMU's NBD server on a unix socket (idempotent) and exports each fleece read-only, with the old bitmap as a meta context.</summary>
    public static async Task ExportAsync(QmpClient qmp, string socketPath, IReadOnlyList<Disk> disks, CancellationToken ct = default)
    {
        try
        {
            await qmp.ExecuteAsync("nbd-server-start", new JsonObject
            {
                ["addr"] = new JsonObject { ["type"] = "unix", ["data"] = new JsonObject { ["path"] = socketPath } },
                ["max-connections"] = 16,
            }, ct);
        }
        catch (QmpException e) when (e.Description.Contains("already running", StringComparison.OrdinalIgnoreCase)) { }
        OwnerOnly.Restrict(socketPath); // QEMU's umask is 027; the run folder is 0700 until then
        foreach (var d in disks)
        {
            var export = new JsonObject { ["type"] = "nbd", ["id"] = d.ExportName, ["node-name"] = d.FleeceNode, ["name"] = d.ExportName, ["writable"] = false };
            if (d.OldBitmap is not null) export["bitmaps"] = new JsonArray(d.OldBitmap);
            await qmp.ExecuteAsync("block-export-add", export, ct);
        }
    }

    /// <summary>Removes exports, jobs, nodes and files of a fleece; every step tolerates "already gone" so it can run after a crash.</summary>
    public static async Task TearDownAsync(QmpClient qmp, IReadOnlyList<Disk> disks, CancellationToken ct = default, ILogger? log = null)
    {
        foreach (var d in disks)
        {
            await CleanupSteps.QmpAsync(log, "remove NBD export " + d.ExportName, () => qmp.ExecuteAsync("block-export-del", new JsonObject { ["id"] = d.ExportName, ["mode"] = "hard" }, ct));
            if (await BlockOperations.HasJobAsync(qmp, d.JobId, ct))
            {
                var done = qmp.WaitForEventAsync("JOB_STATUS_CHANGE", e => e.GetProperty("id").GetString() == d.JobId && e.GetProperty("status").GetString() is "concluded" or "null", TimeSpan.FromSeconds(30), ct);
                await CleanupSteps.QmpAsync(log, "cancel fleecing job " + d.JobId, () => qmp.ExecuteAsync("block-job-cancel", new JsonObject { ["device"] = d.JobId, ["force"] = true }, ct));
                await done;
                await CleanupSteps.QmpAsync(log, "dismiss fleecing job " + d.JobId, () => qmp.ExecuteAsync("block-job-dismiss", new JsonObject { ["id"] = d.JobId }, ct));
            }
            // The export's removal is asynchronous until its clients are gone; retry the node removal briefly.
            for (var i = 0; i < 50; i++)
            {
                try { await qmp.ExecuteAsync("blockdev-del", new JsonObject { ["node-name"] = d.FleeceNode }, ct); break; }
                catch (QmpException e) when (e.Description.Contains("not found", StringComparison.OrdinalIgnoreCase) || e.ErrorClass == "DeviceNotFound") { break; }
                catch (QmpException) { await Task.Delay(100, ct); }
            }
            await CleanupSteps.QmpAsync(log, "remove fleece file node of " + d.FleeceNode, () => qmp.ExecuteAsync("blockdev-del", new JsonObject { ["node-name"] = QemuCommandLine.FileNodeName(d.FleeceNode) }, ct));
            File.Delete(d.FleeceFile);
        }
    }

    public static Task StopServerAsync(QmpClient qmp, CancellationToken ct = default, ILogger? log = null)
        => CleanupSteps.QmpAsync(log, "stop QEMU's NBD server", () => qmp.ExecuteAsync("nbd-server-stop", null, ct));
}
