using System.Collections.Concurrent;
using Haven.Qemu.Qmp;
using Haven.Qemu.Runtime;

namespace Haven.Host.Vms;

/// <summary>A VM whose QEMU is alive but does not answer on QMP, and why.</summary>
public sealed record UnresponsiveVm(int Pid, string Reason, DateTimeOffset Since);

/// <summary>
/// The QEMU processes this host currently runs, by VM id. A QEMU that is alive but does not answer (stopped,
/// hung, its QMP socket held by another client, a command timed out) is kept apart as unresponsive: every
/// operation on it is refused at once, and a background loop re-attaches with backoff. Once attached again
/// it repairs what the failed operation journaled (under the VM's lock, so after that operation let go).
/// </summary>
public sealed class VmRuntimes : IAsyncDisposable
{
    /// <summary>How long a (re-)attach waits for QEMU's QMP greeting.</summary>
    public static readonly TimeSpan AttachTimeout = TimeSpan.FromSeconds(5);
    /// <summary>First and longest wait between re-attach attempts (doubling in between).</summary>
    public static readonly TimeSpan FirstRetry = TimeSpan.FromSeconds(1), LongestRetry = TimeSpan.FromSeconds(15);

    private readonly HavenHost _host;
    private readonly TimeProvider _time;
    private readonly ConcurrentDictionary<string, QemuProcess> _running = new();
    private readonly ConcurrentDictionary<string, UnresponsiveVm> _unresponsive = new();
    private readonly ConcurrentDictionary<Task, byte> _loops = new();
    private readonly CancellationTokenSource _disposed = new();

    public VmRuntimes(HavenHost host, TimeProvider? time = null)
    {
        _host = host;
        _time = time ?? host.Time; // the host's one clock (HavenHostOptions.Time)
    }

    private HostPaths Paths => _host.Paths;

    /// <summary>
    /// The VM's QEMU if it is alive; null when the VM is off (a dead QEMU is forgotten). Throws a conflict
    /// for an unresponsive VM: it is neither usable nor off (its QEMU still holds the disks).
    /// </summary>
    public QemuProcess? Get(string vmId)
    {
        if (_unresponsive.TryGetValue(vmId, out var u))
            throw HavenException.Conflict($"VM '{NameOf(vmId)}' is unresponsive: {u.Reason}");
        if (!_running.TryGetValue(vmId, out var p)) return null;
        if (p.IsAlive) return p;
        Forget(vmId);
        return null;
    }

    /// <summary>Why the VM's QEMU does not answer, or null.</summary>
    public UnresponsiveVm? Unresponsive(string vmId) => _unresponsive.TryGetValue(vmId, out var u) ? u : null;

    public void Add(string vmId, QemuProcess p)
    {
        _running[vmId] = p;
        Watch(vmId, p);
    }

    /// <summary>Drops a VM whose QEMU is gone, however it ended (stop, guest power-off, crash).</summary>
    public void Forget(string vmId)
    {
        var known = _unresponsive.TryRemove(vmId, out _);
        if (_running.TryRemove(vmId, out var p))
        {
            _ = p.DisposeAsync().AsTask();
            known = true;
        }
        if (known) _host.Tracking.RecordAfterStop(vmId);
        HostNetwork.DeleteTapsOf(vmId);
        File.Delete(Paths.PidFile(vmId));
        File.Delete(Paths.QmpSocket(vmId));
        File.Delete(Paths.GuestAgentSocket(vmId));
        File.Delete(Paths.ConsoleSocket(vmId));
        File.Delete(Paths.VncSocket(vmId));
    }

    /// <summary>
    /// Finds a QEMU left running by an earlier daemon: the process, null when there is none, or (alive but
    /// not answering) null with the VM marked unresponsive and re-attached in the background.
    /// </summary>
    public async Task<QemuProcess?> AttachAsync(string vmId, CancellationToken ct)
    {
        try
        {
            var p = await QemuProcess.TryAttachAsync(Paths.PidFile(vmId), Paths.QmpSocket(vmId), AttachTimeout, ct);
            if (p is not null) Add(vmId, p);
            return p;
        }
        catch (QmpConnectionException e)
        {
            MarkUnresponsive(vmId, QemuProcess.ReadPid(Paths.PidFile(vmId)) ?? 0, e.Message);
            return null;
        }
    }

    /// <summary>
    /// An operation lost QEMU mid-way (<paramref name="e"/>: a command timed out or the connection closed).
    /// Marks the VM unresponsive when QEMU is still alive (a dead one is forgotten) and returns the error to
    /// report: the operation's journal stays and is finished or rolled back once QEMU answers again.
    /// </summary>
    public HavenException Lost(string vmId, QemuProcess p, QmpConnectionException e, string what)
    {
        var reason = e.Message;
        if (p.IsAlive)
        {
            MarkUnresponsive(vmId, p.Pid, reason, p);
            return new HavenException(ErrorCode.Failed,
                $"{what} on VM '{NameOf(vmId)}' failed: {reason}; it is finished or rolled back when QEMU answers again", e);
        }
        Forget(vmId);
        StartLoop(vmId, null); // repairs the journal without QEMU
        return new HavenException(ErrorCode.Failed, $"{what} on VM '{NameOf(vmId)}' failed: QEMU exited ({reason})", e);
    }

    /// <summary>
    /// Ends an unresponsive VM's QEMU with SIGKILL (works on a stopped process too) and repairs its journal
    /// without QEMU. False when the VM is not unresponsive. The caller holds the VM's lock.
    /// </summary>
    public async Task<bool> KillUnresponsiveAsync(string vmId, CancellationToken ct)
    {
        if (!_unresponsive.TryGetValue(vmId, out var u)) return false;
        var pidFile = Paths.PidFile(vmId);
        QemuProcess.Kill(u.Pid, pidFile);
        for (var i = 0; i < 200 && QemuProcess.IsProcessAlive(u.Pid, pidFile); i++) await Task.Delay(50, ct);
        if (QemuProcess.IsProcessAlive(u.Pid, pidFile)) throw new HavenException(ErrorCode.Failed, $"QEMU (pid {u.Pid}) of VM '{NameOf(vmId)}' did not exit after SIGKILL");
        Forget(vmId);
        await new Reconciler(_host).RepairVmAsync(vmId, ct);
        return true;
    }

    /// <summary>
    /// A lost connection to a QEMU that is still alive (a command timed out) makes the VM unresponsive. A QEMU
    /// that exits closes the connection a moment before it is gone, hence the grace; <see cref="Get"/> forgets it.
    /// </summary>
    private void Watch(string vmId, QemuProcess p) => _ = Task.Run(async () =>
    {
        await p.Qmp.Closed;
        if (p.Ending || await p.WaitForExitAsync(TimeSpan.FromSeconds(1))) return;
        if (_disposed.IsCancellationRequested || p.Ending) return;
        MarkUnresponsive(vmId, p.Pid, p.Qmp.Failure?.Message ?? "QEMU closed the QMP connection", p);
    });

    private void MarkUnresponsive(string vmId, int pid, string reason, QemuProcess? lost = null)
    {
        if (lost is not null)
        {
            if (!_running.TryRemove(new KeyValuePair<string, QemuProcess>(vmId, lost))) return; // already handled
            _ = lost.DisposeAsync().AsTask();
        }
        var u = new UnresponsiveVm(pid, reason, _time.GetUtcNow());
        if (!_unresponsive.TryAdd(vmId, u)) return;
        StartLoop(vmId, u);
    }

    private void StartLoop(string vmId, UnresponsiveVm? u)
    {
        if (_disposed.IsCancellationRequested) return;
        var loop = Task.Run(() => ReattachLoopAsync(vmId, u, _disposed.Token));
        _loops[loop] = 0;
        _ = loop.ContinueWith(t => _loops.TryRemove(t, out _), TaskScheduler.Default);
    }

    /// <summary>
    /// Retries until QEMU answers (then repairs the VM's journal with it) or exits (then repairs without it);
    /// ends when something else settled the VM (stopped, forgotten) or the host shuts down.
    /// </summary>
    private async Task ReattachLoopAsync(string vmId, UnresponsiveVm? u, CancellationToken ct)
    {
        var wait = FirstRetry;
        try
        {
            while (u is not null)
            {
                await Task.Delay(wait, _time, ct);
                wait = TimeSpan.FromTicks(Math.Min(wait.Ticks * 2, LongestRetry.Ticks));
                if (!Current(vmId, u)) return;
                QemuProcess? p;
                try { p = await QemuProcess.TryAttachAsync(Paths.PidFile(vmId), Paths.QmpSocket(vmId), AttachTimeout, ct); }
                catch (QmpConnectionException e)
                {
                    if (!Current(vmId, u)) return;
                    var next = u with { Reason = e.Message };
                    if (!_unresponsive.TryUpdate(vmId, next, u)) return;
                    u = next;
                    continue;
                }
                // Wait for the operation that lost QEMU to let go of the VM before touching its journal.
                await using var vmLock = await _host.LockVmAsync(vmId, ct);
                if (!Current(vmId, u))
                {
                    if (p is not null) await p.DisposeAsync();
                    return;
                }
                _unresponsive.TryRemove(vmId, out _);
                if (p is null) { Forget(vmId); break; }
                Add(vmId, p);
                await RepairAsync(vmId, ct);
                return;
            }
            await using (await _host.LockVmAsync(vmId, ct)) await RepairAsync(vmId, ct);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested) { }
    }

    private bool Current(string vmId, UnresponsiveVm u) => _unresponsive.TryGetValue(vmId, out var now) && now == u;

    /// <summary>Finishes or rolls back the VM's journaled operations; a failure leaves them for the next start.</summary>
    private async Task RepairAsync(string vmId, CancellationToken ct)
    {
        try { await new Reconciler(_host).RepairVmAsync(vmId, ct); }
        catch (QmpConnectionException) { } // lost again: the watch marks it unresponsive and the loop comes back
        catch (Exception e) when (e is not OperationCanceledException)
        {
            Console.Error.WriteLine($"havend: repairing VM {vmId} after re-attaching failed: {e.Message.ReplaceLineEndings(" ")}");
        }
    }

    private string NameOf(string vmId) => _host.Store.FindVm(vmId)?.Name ?? vmId;

    public IEnumerable<string> RunningIds => _running.Keys;

    /// <summary>Stops the re-attach loops; VMs keep running.</summary>
    public async ValueTask DisposeAsync()
    {
        _disposed.Cancel();
        await Task.WhenAll(_loops.Keys).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
    }
}
