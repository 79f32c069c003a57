using System.Collections.Concurrent;
using Haven.Qemu.Runtime;

namespace Haven.Host.Vms;

/// <summary>The QEMU processes this host currently runs, by VM id.</summary>
public sealed class VmRuntimes(HostPaths paths, Action<string> stopped)
{
    private readonly ConcurrentDictionary<string, QemuProcess> _running = new();

    /// <summary>The VM's QEMU if it is alive; a dead one is forgotten.</summary>
    public QemuProcess? Get(string vmId)
    {
        if (!_running.TryGetValue(vmId, out var p)) return null;
        if (p.IsAlive) return p;
        Forget(vmId);
        return null;
    }

    public void Add(string vmId, QemuProcess p) => _running[vmId] = p;

    /// <summary>Drops a VM whose QEMU is gone, however it ended (stop, guest power-off, crash).</summary>
    public void Forget(string vmId)
    {
        if (_running.TryRemove(vmId, out var p))
        {
            _ = p.DisposeAsync().AsTask();
            stopped(vmId);
        }
        File.Delete(paths.PidFile(vmId));
        File.Delete(paths.QmpSocket(vmId));
        File.Delete(paths.GuestAgentSocket(vmId));
    }

    /// <summary>Finds a QEMU left running by an earlier daemon.</summary>
    public async Task<QemuProcess?> AttachAsync(string vmId, CancellationToken ct)
    {
        var p = await QemuProcess.TryAttachAsync(paths.PidFile(vmId), paths.QmpSocket(vmId), ct);
        if (p is not null) _running[vmId] = p;
        return p;
    }

    public IEnumerable<string> RunningIds => _running.Keys;
}
