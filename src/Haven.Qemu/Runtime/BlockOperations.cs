using System.Text.Json;
using System.Text.Json.Nodes;
using Haven.Qemu.Qmp;

namespace Haven.Qemu.Runtime;

/// <summary>
/// Live changes to a running VM's layer chains over QMP. Layers are addressed by the node names
/// Haven gave them at launch (<see cref="QemuCommandLine"/>), so no step needs to guess at file names.
/// </summary>
public static class BlockOperations
{
    public sealed record SnapshotAction(string ActiveNode, LayerRef Overlay);

    /// <summary>
    /// Puts a new qcow2 overlay (an existing file, see <see cref="Images.QemuImg.CreateOverlayAsync"/>) on
    /// top of every listed disk in one transaction: all disks get the same point in time, or none changes.
    /// The overlays are added under Haven's node names first, so later live merges can address them.
    /// </summary>
    public static async Task SnapshotAsync(QmpClient qmp, IReadOnlyList<SnapshotAction> disks, CancellationToken ct = default)
    {
        var added = new List<string>();
        try
        {
            foreach (var d in disks)
            {
                await qmp.ExecuteAsync("blockdev-add", new JsonObject
                {
                    ["driver"] = "qcow2",
                    ["node-name"] = d.Overlay.NodeName,
                    ["discard"] = "unmap",
                    ["file"] = new JsonObject { ["driver"] = "file", ["filename"] = d.Overlay.Path, ["node-name"] = QemuCommandLine.FileNodeName(d.Overlay.NodeName), ["discard"] = "unmap" },
                    ["backing"] = null,
                }, ct);
                added.Add(d.Overlay.NodeName);
            }
            var actions = new JsonArray();
            foreach (var d in disks)
                actions.Add(new JsonObject
                {
                    ["type"] = "blockdev-snapshot",
                    ["data"] = new JsonObject { ["node"] = d.ActiveNode, ["overlay"] = d.Overlay.NodeName },
                });
            await qmp.ExecuteAsync("transaction", new JsonObject { ["actions"] = actions }, ct);
        }
        catch
        {
            foreach (var node in added) await DeleteLayerNodesAsync(qmp, node, CancellationToken.None);
            throw;
        }
    }

    /// <summary>
    /// Reopens a layer (its file and qcow2 nodes together) read-write or read-only. Backing layers run
    /// read-only so other tools may read them; a merge must make its target writable first.
    /// </summary>
    public static async Task ReopenAsync(QmpClient qmp, LayerRef layer, string? backingNode, bool readOnly, CancellationToken ct = default)
    {
        var fileNode = QemuCommandLine.FileNodeName(layer.NodeName);
        var format = new JsonObject { ["driver"] = "qcow2", ["node-name"] = layer.NodeName, ["file"] = fileNode, ["read-only"] = readOnly, ["discard"] = "unmap" };
        format["backing"] = backingNode is null ? null : JsonValue.Create(backingNode);
        var options = new JsonArray
        {
            new JsonObject { ["driver"] = "file", ["node-name"] = fileNode, ["filename"] = layer.Path, ["read-only"] = readOnly, ["discard"] = "unmap" },
            format,
        };
        await qmp.ExecuteAsync("blockdev-reopen", new JsonObject { ["options"] = options }, ct);
    }

    /// <summary>
    /// Merges <paramref name="topNode"/> into <paramref name="baseNode"/> (its backing layer) and waits for the job.
    /// When the top is the disk's active layer, the job mirrors until ready and is then completed,
    /// after which the device writes to the base node.
    /// </summary>
    public static async Task CommitAsync(QmpClient qmp, string jobId, string deviceRootNode, string topNode, string baseNode, CancellationToken ct = default)
    {
        var active = topNode == deviceRootNode;
        var args = new JsonObject { ["job-id"] = jobId, ["device"] = deviceRootNode, ["base-node"] = baseNode, ["auto-dismiss"] = true };
        if (!active) args["top-node"] = topNode;
        var ready = active ? qmp.WaitForEventAsync("BLOCK_JOB_READY", d => JobIs(d, jobId), JobTimeout, ct) : null;
        var completed = qmp.WaitForEventAsync("BLOCK_JOB_COMPLETED", d => JobIs(d, jobId), JobTimeout, ct);
        await qmp.ExecuteAsync("block-commit", args, ct);
        if (ready is not null)
        {
            await ready;
            await qmp.ExecuteAsync("block-job-complete", new JsonObject { ["device"] = jobId }, ct);
        }
        ThrowIfFailed(await completed, "commit");
    }

    /// <summary>Copies into <paramref name="node"/> the data of the layers between it and <paramref name="baseNode"/> (all of them when null), then drops those layers from its chain.</summary>
    public static async Task StreamAsync(QmpClient qmp, string jobId, string node, string? baseNode, CancellationToken ct = default)
    {
        var args = new JsonObject { ["job-id"] = jobId, ["device"] = node, ["auto-dismiss"] = true };
        if (baseNode is not null) args["base-node"] = baseNode;
        var completed = qmp.WaitForEventAsync("BLOCK_JOB_COMPLETED", d => JobIs(d, jobId), JobTimeout, ct);
        await qmp.ExecuteAsync("block-stream", args, ct);
        ThrowIfFailed(await completed, "stream");
    }

    /// <summary>Finishes a job a previous daemon started: waits for it, completing it once ready (active commit).</summary>
    public static async Task FinishJobIfPresentAsync(QmpClient qmp, string jobId, CancellationToken ct = default)
    {
        var ready = qmp.WaitForEventAsync("BLOCK_JOB_READY", d => JobIs(d, jobId), JobTimeout, ct);
        var completed = qmp.WaitForEventAsync("BLOCK_JOB_COMPLETED", d => JobIs(d, jobId), JobTimeout, ct);
        JsonElement? job = null;
        foreach (var j in (await qmp.ExecuteAsync("query-block-jobs", null, ct)).EnumerateArray())
            if (j.GetProperty("device").GetString() == jobId) job = j;
        if (job is null) return;
        var isReady = job.Value.TryGetProperty("ready", out var r) && r.GetBoolean();
        if (!isReady && await Task.WhenAny(ready, completed) == ready) isReady = true;
        if (isReady && !completed.IsCompleted)
            await qmp.ExecuteAsync("block-job-complete", new JsonObject { ["device"] = jobId }, ct);
        ThrowIfFailed(await completed, "resumed job");
    }

    /// <summary>Removes a layer's nodes that Haven added with -blockdev or a snapshot; missing nodes are ignored.</summary>
    public static async Task DeleteLayerNodesAsync(QmpClient qmp, string formatNode, CancellationToken ct = default, Microsoft.Extensions.Logging.ILogger? log = null)
    {
        // Not present (snapshot file nodes get automatic names) or already gone is fine; anything else is logged.
        foreach (var node in new[] { formatNode, QemuCommandLine.FileNodeName(formatNode) })
            await CleanupSteps.QmpAsync(log, "remove block node " + node, () => qmp.ExecuteAsync("blockdev-del", new JsonObject { ["node-name"] = node }, ct));
    }

    /// <summary>Node names of a device's chain from its top (the root the device writes to) down to its base.</summary>
    public static async Task<List<string>> GetChainAsync(QmpClient qmp, string deviceId, CancellationToken ct = default)
    {
        string? root = null;
        foreach (var b in (await qmp.ExecuteAsync("query-block", null, ct)).EnumerateArray())
        {
            // virtio-blk shows /machine/peripheral/disk0/virtio-backend, scsi-hd just its id (disk0).
            var path = (b.TryGetProperty("qdev", out var qdev) ? qdev.GetString() : null) ?? "";
            if (path != deviceId && !path.Contains("/" + deviceId + "/", StringComparison.Ordinal)) continue;
            if (b.TryGetProperty("inserted", out var ins)) root = ins.GetProperty("node-name").GetString();
        }
        if (root is null) return [];
        var graph = await qmp.ExecuteAsync("x-debug-query-block-graph", null, ct);
        var names = new Dictionary<long, string>();
        foreach (var n in graph.GetProperty("nodes").EnumerateArray()) names[n.GetProperty("id").GetInt64()] = n.GetProperty("name").GetString() ?? "";
        var backingOf = new Dictionary<string, string>();
        foreach (var e in graph.GetProperty("edges").EnumerateArray())
            if (e.GetProperty("name").GetString() == "backing")
                backingOf[names[e.GetProperty("parent").GetInt64()]] = names[e.GetProperty("child").GetInt64()];
        var chain = new List<string> { root };
        while (backingOf.TryGetValue(chain[^1], out var next) && chain.Count < 10_000) chain.Add(next);
        return chain;
    }

    public static async Task<bool> HasJobAsync(QmpClient qmp, string jobId, CancellationToken ct = default)
    {
        foreach (var job in (await qmp.ExecuteAsync("query-block-jobs", null, ct)).EnumerateArray())
            if (job.GetProperty("device").GetString() == jobId) return true;
        return false;
    }

    /// <summary>Whether any block job (commit, stream, backup) runs on the VM.</summary>
    public static async Task<bool> HasAnyJobAsync(QmpClient qmp, CancellationToken ct = default)
        => (await qmp.ExecuteAsync("query-block-jobs", null, ct)).GetArrayLength() > 0;

    /// <summary>The names of every named block node of the VM (format, file and filter nodes alike).</summary>
    public static async Task<List<string>> ListNodeNamesAsync(QmpClient qmp, CancellationToken ct = default)
    {
        var names = new List<string>();
        foreach (var n in (await qmp.ExecuteAsync("query-named-block-nodes", new JsonObject { ["flat"] = true }, ct)).EnumerateArray())
            names.Add(n.GetProperty("node-name").GetString() ?? "");
        return names;
    }

    private static readonly TimeSpan JobTimeout = TimeSpan.FromHours(6);

    private static bool JobIs(JsonElement data, string jobId) => data.TryGetProperty("device", out var d) && d.GetString() == jobId;

    private static void ThrowIfFailed(JsonElement completed, string what)
    {
        if (completed.TryGetProperty("error", out var err))
            throw new QmpException("block-" + what, "JobFailed", err.GetString() ?? "job failed");
    }
}
