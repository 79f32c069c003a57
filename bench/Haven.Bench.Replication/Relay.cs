using System.Net;
using System.Net.Sockets;

namespace Haven.Bench.Replication;

/// <summary>
/// A TCP relay on 127.0.0.1 in front of the replica server's port that counts the bytes going each way: what
/// travels between the primary and the replica (TLS records, HTTP/2 frames, gRPC messages, handshakes), not what
/// Haven says it sent.
/// </summary>
public sealed class Relay : IAsyncDisposable
{
    private readonly TcpListener _listener;
    private readonly IPEndPoint _target;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _accepting;
    private long _up, _down, _connections;

    public Relay(IPEndPoint target)
    {
        _target = target;
        _listener = new TcpListener(IPAddress.Loopback, 0);
        _listener.Start();
        _accepting = AcceptAsync();
    }

    public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;

    /// <summary>Bytes primary → replica, replica → primary, and connections accepted so far.</summary>
    public (long Up, long Down, long Connections) Counters => (Interlocked.Read(ref _up), Interlocked.Read(ref _down), Interlocked.Read(ref _connections));

    private async Task AcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            TcpClient client;
            try { client = await _listener.AcceptTcpClientAsync(_stop.Token); }
            catch (Exception) when (_stop.IsCancellationRequested) { return; }
            Interlocked.Increment(ref _connections);
            _ = Task.Run(() => PipeAsync(client));
        }
    }

    private async Task PipeAsync(TcpClient client)
    {
        using var _ = client;
        using var server = new TcpClient();
        try
        {
            client.NoDelay = true;
            server.NoDelay = true;
            await server.ConnectAsync(_target, _stop.Token);
            using var a = client.GetStream();
            using var b = server.GetStream();
            var up = CopyAsync(a, b, true);
            var down = CopyAsync(b, a, false);
            await Task.WhenAny(up, down);
        }
        catch (Exception) { }
    }

    private async Task CopyAsync(NetworkStream from, NetworkStream to, bool up)
    {
        var buffer = new byte[256 << 10];
        try
        {
            while (true)
            {
                var n = await from.ReadAsync(buffer, _stop.Token);
                if (n == 0) break;
                if (up) Interlocked.Add(ref _up, n);
                else Interlocked.Add(ref _down, n);
                await to.WriteAsync(buffer.AsMemory(0, n), _stop.Token);
            }
            to.Socket.Shutdown(SocketShutdown.Send);
        }
        catch (Exception) { }
    }

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        _listener.Stop();
        try { await _accepting; } catch (Exception) { }
        _stop.Dispose();
    }
}
