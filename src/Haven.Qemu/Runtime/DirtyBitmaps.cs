using System.Text.Json;
using System.Text.Json.Nodes;
using Haven.Qemu.Images;
using Haven.Qemu.Qmp;

namespace Haven.Qemu.Runtime;

public sealed record BitmapInfo(string Name, bool Recording, bool Persistent, bool Inconsistent, long Granularity, long DirtyBytes);

/// <summary>
/// QEMU dirty bitmaps: Haven's changed-block tracking (the analog of Hyper-V RCT). Persistent bitmaps
/// live inside a qcow2 layer and survive clean shutdowns; QEMU marks them inconsistent when it did not
/// close the image cleanly, and then they must not be trusted.
/// </summary>
public static class DirtyBitmaps
{
    /// <summary>Bitmaps of a node of a running VM.</summary>
    public static async Task<List<BitmapInfo>> ListAsync(QmpClient qmp, string node, CancellationToken ct = default)
    {
        var list = new List<BitmapInfo>();
        foreach (var n in (await qmp.ExecuteAsync("query-named-block-nodes", new JsonObject { ["flat"] = true }, ct)).EnumerateArray())
        {
            if (n.GetProperty("node-name").GetString() != node || !n.TryGetProperty("dirty-bitmaps", out var bitmaps)) continue;
            // A running block job (a backup's fleecing copy-before-write) adds anonymous bitmaps of its own: not ours.
            foreach (var b in bitmaps.EnumerateArray())
                if (b.TryGetProperty("name", out var name) && name.GetString() is { Length: > 0 }) list.Add(Parse(b));
        }
        return list;
    }

    private static BitmapInfo Parse(JsonElement b) => new(
        b.GetProperty("name").GetString() ?? "",
        b.TryGetProperty("recording", out var r) && r.GetBoolean(),
        b.TryGetProperty("persistent", out var p) && p.GetBoolean(),
        b.TryGetProperty("inconsistent", out var i) && i.GetBoolean(),
        b.TryGetProperty("granularity", out var g) ? g.GetInt64() : 0,
        b.TryGetProperty("count", out var c) ? c.GetInt64() : 0);

    public static Task RemoveAsync(QmpClient qmp, string node, string name, CancellationToken ct = default)
        => qmp.ExecuteAsync("block-dirty-bitmap-remove", new JsonObject { ["node"] = node, ["name"] = name }, ct);

    /// <summary>Folds <paramref name="source"/> into <paramref name="target"/>, re-enables the target and drops the source: undoes a hand-over after a failed backup.</summary>
    public static async Task MergeBackAsync(QmpClient qmp, string node, string target, string source, CancellationToken ct = default)
    {
        var actions = new JsonArray
        {
            Action("block-dirty-bitmap-merge", new JsonObject { ["node"] = node, ["target"] = target, ["bitmaps"] = new JsonArray(source) }),
            Action("block-dirty-bitmap-enable", new JsonObject { ["node"] = node, ["name"] = target }),
            Action("block-dirty-bitmap-remove", new JsonObject { ["node"] = node, ["name"] = source }),
        };
        await qmp.ExecuteAsync("transaction", new JsonObject { ["actions"] = actions }, ct);
    }

    internal static JsonObject Action(string type, JsonObject data) => new() { ["type"] = type, ["data"] = data };

    // ---- images no QEMU has open (VM off) ----

    /// <summary>Bitmaps stored in a qcow2 file, from its header.</summary>
    public static async Task<List<BitmapInfo>> ListOfflineAsync(string qcow2, CancellationToken ct = default)
    {
        var r = await ProcessRunner.RunAsync(QemuImg.Tool, ["info", "--output=json", "-U", qcow2], ct);
        using var doc = JsonDocument.Parse(r.StandardOutput);
        var list = new List<BitmapInfo>();
        if (doc.RootElement.TryGetProperty("format-specific", out var fs) && fs.TryGetProperty("data", out var data) && data.TryGetProperty("bitmaps", out var bitmaps))
            foreach (var b in bitmaps.EnumerateArray())
            {
                var flags = new List<string>();
                foreach (var f in b.GetProperty("flags").EnumerateArray()) flags.Add(f.GetString() ?? "");
                // "in-use" left set means QEMU did not close the image cleanly: the bitmap missed writes.
                list.Add(new BitmapInfo(b.GetProperty("name").GetString() ?? "", flags.Contains("auto"), true, flags.Contains("in-use"), b.GetProperty("granularity").GetInt64(), -1));
            }
        return list;
    }

    /// <summary>Runs `qemu-img bitmap` operations on an image no QEMU has open, e.g. ["--add", "--granularity", "1M"] for a new bitmap.</summary>
    public static Task EditOfflineAsync(string qcow2, string name, IEnumerable<string> operations, CancellationToken ct = default)
    {
        var args = new List<string> { "bitmap" };
        args.AddRange(operations);
        args.Add(qcow2);
        args.Add(name);
        return ProcessRunner.RunAsync(QemuImg.Tool, args, ct);
    }
}
