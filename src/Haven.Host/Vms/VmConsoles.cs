using System.Collections.Concurrent;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;

namespace Haven.Host.Vms;

/// <summary>
/// The serial consoles of running VMs (`haven vm console`), and their screenshots. QEMU serves the console on
/// run/&lt;vm&gt;.console to one client at a time; havend is that client for whoever attached through the API, and
/// refuses a second attach with a conflict rather than letting it wait unseen in the socket's backlog.
/// </summary>
public sealed class VmConsoles(HavenHost host)
{
    private readonly ConcurrentDictionary<string, byte> _attached = new();

    /// <summary>
    /// Connects to the VM's console. The session's stream carries the guest's serial bytes both ways; disposing it
    /// detaches (another client may attach then). Conflict when the VM is off or someone is attached already.
    /// </summary>
    public async Task<ConsoleSession> AttachAsync(string name, CancellationToken ct)
    {
        var vm = host.Vms.Find(name);
        if (host.Runtimes.Get(vm.Id) is null) throw HavenException.Conflict($"VM '{name}' is not running");
        var path = host.Paths.ConsoleSocket(vm.Id);
        // A QEMU started by an older havend writes its serial port to the log only.
        if (!File.Exists(path)) throw HavenException.Conflict($"VM '{name}' has no console socket (started by an older havend); restart the VM to get one");
        if (!_attached.TryAdd(vm.Id, 0)) throw HavenException.Conflict($"the console of VM '{name}' is already attached by another client");
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(path), ct);
        }
        catch (Exception e) when (e is SocketException or OperationCanceledException)
        {
            socket.Dispose();
            _attached.TryRemove(vm.Id, out _);
            if (e is SocketException s) throw new HavenException(ErrorCode.Failed, $"cannot connect to the console of VM '{name}': {s.Message}", s);
            throw;
        }
        host.Log.LogInformation("console of VM {Vm} ({VmId}) attached", name, vm.Id);
        return new ConsoleSession(new NetworkStream(socket, ownsSocket: true), () =>
        {
            _attached.TryRemove(vm.Id, out _);
            host.Log.LogInformation("console of VM {Vm} ({VmId}) detached", name, vm.Id);
        });
    }

    /// <summary>The VM's display as PNG bytes (QMP screendump into the owner-only run folder, read, deleted).</summary>
    public async Task<byte[]> ScreenshotAsync(string name, CancellationToken ct)
    {
        var vm = host.Vms.Find(name);
        await using var _ = await host.LockVmAsync(vm.Id, ct);
        var p = host.Runtimes.Get(vm.Id) ?? throw HavenException.Conflict($"VM '{name}' is not running");
        if (!File.Exists(host.Paths.VncSocket(vm.Id))) throw HavenException.Conflict($"VM '{name}' has no display (started by an older havend); restart the VM to get one");
        var file = host.Paths.Screendump(vm.Id);
        try
        {
            await p.ScreendumpAsync(file, ct);
            return await File.ReadAllBytesAsync(file, ct);
        }
        catch (Qemu.Qmp.QmpException e) { throw new HavenException(ErrorCode.Failed, $"QEMU could not take a screenshot of VM '{name}': {e.Message}", e); }
        finally { host.Cleanup("delete the screenshot file", () => File.Delete(file)); }
    }
}

/// <summary>An attached console: <see cref="Stream"/> to and from the guest's serial port; dispose to detach.</summary>
public sealed class ConsoleSession(Stream stream, Action detached) : IAsyncDisposable
{
    private int _disposed;
    public Stream Stream { get; } = stream;

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        await Stream.DisposeAsync();
        detached();
    }
}
