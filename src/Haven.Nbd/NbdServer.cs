using System.Net;
using System.Net.Sockets;

namespace Haven.Nbd;

/// <summary>
/// A read-only NBD server for one <see cref="INbdExport"/> (fixed newstyle; NBD_OPT_GO/INFO/EXPORT_NAME/LIST,
/// structured replies, the base:allocation metadata context). It listens on a unix socket or a TCP port and
/// serves every client on its own connection (<see cref="NbdServerConnection"/>); requests of one client are
/// served concurrently, as QEMU and qemu-img pipeline them. Writes are refused with EPERM.
/// </summary>
public sealed class NbdServer : IAsyncDisposable
{
    private readonly Socket _listener;
    private readonly INbdExport _export;
    private readonly NbdServerOptions _options;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _acceptLoop;
    private readonly List<Task> _connections = [];
    private readonly string? _unixPath;
    private int _active;

    private NbdServer(Socket listener, NbdEndpoint endpoint, INbdExport export, NbdServerOptions options, string? unixPath)
    {
        _listener = listener;
        Endpoint = endpoint;
        _export = export;
        _options = options;
        _unixPath = unixPath;
        _acceptLoop = Task.Run(AcceptLoopAsync);
    }

    public NbdEndpoint Endpoint { get; }

    /// <summary>Clients connected right now.</summary>
    public int ActiveConnections => Volatile.Read(ref _active);

    /// <summary>
    /// Serves <paramref name="export"/> on a new unix socket at <paramref name="path"/> (which must not exist),
    /// readable and writable by its owner only: whoever can connect reads the disk.
    /// </summary>
    public static NbdServer ListenUnix(string path, INbdExport export, NbdServerOptions? options = null)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            socket.Bind(new UnixDomainSocketEndPoint(path));
            if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            socket.Listen(16);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
        return new NbdServer(socket, new NbdEndpoint.Unix(path), export, options ?? new(), path);
    }

    /// <summary>Serves <paramref name="export"/> on TCP (port 0: any free port; <see cref="Endpoint"/> says which).</summary>
    public static NbdServer ListenTcp(IPAddress address, int port, INbdExport export, NbdServerOptions? options = null)
    {
        var socket = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            socket.Bind(new IPEndPoint(address, port));
            socket.Listen(16);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
        var bound = (IPEndPoint)socket.LocalEndPoint!;
        return new NbdServer(socket, new NbdEndpoint.Tcp(bound.Address.ToString(), bound.Port), export, options ?? new(), null);
    }

    private async Task AcceptLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket client;
            try { client = await _listener.AcceptAsync(_stop.Token); }
            catch (Exception) when (_stop.IsCancellationRequested) { return; }
            catch (SocketException e)
            {
                _options.Log?.Invoke($"NBD server {Endpoint}: accept failed: {e.Message}");
                continue;
            }
            if (client.AddressFamily != AddressFamily.Unix) client.NoDelay = true;
            Interlocked.Increment(ref _active);
            var connection = Task.Run(async () =>
            {
                try { await new NbdServerConnection(client, _export, _options).RunAsync(_stop.Token); }
                finally
                {
                    Interlocked.Decrement(ref _active);
                    client.Dispose();
                }
            });
            lock (_connections)
            {
                _connections.RemoveAll(t => t.IsCompleted);
                _connections.Add(connection);
            }
        }
    }

    /// <summary>Stops listening, drops every client and removes the unix socket.</summary>
    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        _listener.Dispose();
        await _acceptLoop;
        Task[] running;
        lock (_connections) running = [.. _connections];
        await Task.WhenAll(running);
        if (_unixPath is not null) File.Delete(_unixPath);
        _stop.Dispose();
    }
}

public sealed record NbdServerOptions
{
    /// <summary>Largest read one request may ask for (NBD_INFO_BLOCK_SIZE maximum); larger ones fail with EINVAL.</summary>
    public int MaxRequestBytes { get; init; } = 32 << 20;

    /// <summary>Requests of one client served at once; further ones wait to be read off the socket.</summary>
    public int MaxInFlight { get; init; } = 16;

    /// <summary>Where the server tells about clients it dropped and requests that failed.</summary>
    public Action<string>? Log { get; init; }
}
