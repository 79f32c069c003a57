using Haven.Qemu.Images;
using Haven.Qemu.Qmp;

namespace Haven.TestSupport;

/// <summary>
/// The expected content of a disk, kept as a sparse raw file that receives the same writes as the
/// VM's disk, so a test can `qemu-img compare` what Haven produced against what it should be.
/// </summary>
public sealed class DiskModel
{
    public DiskModel(string path, long size)
    {
        Path = path;
        using (var f = System.IO.File.Create(path)) f.SetLength(size);
    }

    private DiskModel(string path) { Path = path; }

    public string Path { get; }

    public async Task WriteAsync(byte pattern, long offset, long length)
        => await ProcessRunner.RunAsync("qemu-io", ["-f", "raw", "-c", $"write -P 0x{pattern:x2} {offset} {length}", Path]);

    /// <summary>A copy of the current expectation, to remember the content at a checkpoint.</summary>
    public async Task<DiskModel> SnapshotAsync(string path)
    {
        await ProcessRunner.RunAsync("cp", ["--sparse=always", Path, path]);
        return new DiskModel(path);
    }

    public Task<bool> EqualsImageAsync(string image, bool forceShare = false) => QemuImg.CompareAsync(Path, image, forceShare);
}

/// <summary>Writes the way a guest would: through QEMU's block layer (running VM) or qemu-io on the image (VM off).</summary>
public static class GuestWrites
{
    public static async Task WriteLiveAsync(QmpClient qmp, string deviceId, byte pattern, long offset, long length)
    {
        var cmd = $"qemu-io -d /machine/peripheral/{deviceId}/virtio-backend \"write -P 0x{pattern:x2} {offset} {length}\"";
        var r = await qmp.ExecuteAsync("human-monitor-command", new { command_line = cmd }.ToHmp());
        var text = r.GetString() ?? "";
        if (text.Contains("error", StringComparison.OrdinalIgnoreCase) || text.Contains("fail", StringComparison.OrdinalIgnoreCase))
            throw new InvalidOperationException("qemu-io failed: " + text);
    }

    /// <summary>Flushes the device so its qcow2 metadata is on disk and readable by qemu-img -U.</summary>
    public static async Task FlushLiveAsync(QmpClient qmp, string deviceId)
        => await qmp.ExecuteAsync("human-monitor-command", new { command_line = $"qemu-io -d /machine/peripheral/{deviceId}/virtio-backend \"flush\"" }.ToHmp());

    public static async Task WriteOfflineAsync(string qcow2, byte pattern, long offset, long length)
        => await ProcessRunner.RunAsync("qemu-io", ["-f", "qcow2", "-c", $"write -P 0x{pattern:x2} {offset} {length}", qcow2]);

    private static System.Text.Json.Nodes.JsonObject ToHmp(this object o)
        => new() { ["command-line"] = (string)o.GetType().GetProperty("command_line")!.GetValue(o)! };
}
