using System.Net;
using System.Net.Sockets;

namespace Haven.TestSupport;

/// <summary>
/// A test-owned TCP relay on 127.0.0.1 in front of a server (TLS passes through untouched): counts the bytes it
/// forwards and can cut every connection once a number of bytes has gone through, to break a transfer mid-stream.
/// </summary>
public sealed class TcpRelay : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly int _upstreamPort;
    private readonly CancellationTokenSource _stop = new();
    private readonly List<TcpClient> _open = [];
    private readonly Task _accepting;
    private long _forwarded;
    private long _cutAt = long.MaxValue;

    public TcpRelay(int upstreamPort)
    {
        _upstreamPort = upstreamPort;
        _listener.Start();
        Port = ((IPEndPoint)_listener.LocalEndpoint).Port;
        _accepting = Task.Run(AcceptAsync);
    }

    public int Port { get; }
    public long Forwarded => Interlocked.Read(ref _forwarded);
    public int Cuts { get; private set; }

    /// <summary>Cuts every open connection once <paramref name="bytes"/> more bytes have been forwarded (once).</summary>
    public void CutAfter(long bytes) => Interlocked.Exchange(ref _cutAt, Forwarded + bytes);

    private async Task AcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            TcpClient client;
            try { client = await _listener.AcceptTcpClientAsync(_stop.Token); }
            catch (Exception) { return; }
            var upstream = new TcpClient();
            try { await upstream.ConnectAsync(IPAddress.Loopback, _upstreamPort, _stop.Token); }
            catch (Exception) { client.Dispose(); upstream.Dispose(); continue; }
            lock (_open) { _open.Add(client); _open.Add(upstream); }
            _ = PumpAsync(client.GetStream(), upstream.GetStream());
            _ = PumpAsync(upstream.GetStream(), client.GetStream());
        }
    }

    private async Task PumpAsync(NetworkStream from, NetworkStream to)
    {
        var buffer = new byte[64 * 1024];
        try
        {
            while (true)
            {
                var n = await from.ReadAsync(buffer, _stop.Token);
                if (n == 0) break;
                await to.WriteAsync(buffer.AsMemory(0, n), _stop.Token);
                if (Interlocked.Add(ref _forwarded, n) >= Interlocked.Read(ref _cutAt))
                {
                    Interlocked.Exchange(ref _cutAt, long.MaxValue);
                    CutAll();
                    return;
                }
            }
        }
        catch (Exception) { }
        finally { try { to.Socket.Shutdown(SocketShutdown.Send); } catch (Exception) { } }
    }

    private void CutAll()
    {
        Cuts++;
        lock (_open)
        {
            foreach (var c in _open)
            {
                try { c.Client.LingerState = new LingerOption(true, 0); } catch (Exception) { }
                c.Dispose();
            }
            _open.Clear();
        }
    }

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        _listener.Stop();
        CutAll();
        try { await _accepting; } catch (Exception) { }
    }
}
