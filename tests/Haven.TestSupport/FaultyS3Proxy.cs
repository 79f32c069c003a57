using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Haven.TestSupport;

/// <summary>
/// An HTTP/1.1 reverse proxy on 127.0.0.1 in front of an S3 endpoint, for fault tests. Requests are
/// forwarded byte for byte (Host header unchanged: the client signs the proxy's host:port, and RGW checks
/// the signature against the Host header it receives, so the signature stays valid). It can answer
/// requests with 503 SlowDown (<see cref="FailNext"/>, <see cref="FailAll"/>) and cut every connection
/// (<see cref="CutConnections"/>), counting every request it receives in <see cref="Requests"/>.
/// </summary>
public sealed class FaultyS3Proxy : IAsyncDisposable
{
    private const string SlowDownBody = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message><RequestId>proxy</RequestId></Error>";
    private readonly TcpListener _listener;
    private readonly IPEndPoint _upstream;
    private readonly CancellationTokenSource _stop = new();
    private readonly ConcurrentDictionary<Socket, byte> _open = new();
    private readonly Task _accepting;
    private int _failNext;
    private volatile bool _failAll;
    private volatile bool _refusing;
    private int _requests;
    private int _failed;

    public FaultyS3Proxy(string upstreamEndpoint)
    {
        var uri = new Uri(upstreamEndpoint);
        _upstream = new IPEndPoint(IPAddress.Parse(uri.Host == "localhost" ? "127.0.0.1" : uri.Host), uri.Port);
        _listener = new TcpListener(IPAddress.Loopback, 0);
        _listener.Start();
        Endpoint = $"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}";
        _accepting = AcceptLoopAsync();
    }

    public string Endpoint { get; }
    /// <summary>Requests received (forwarded or failed).</summary>
    public int Requests => Volatile.Read(ref _requests);
    /// <summary>Requests answered with 503.</summary>
    public int Failed => Volatile.Read(ref _failed);

    /// <summary>Answers the next <paramref name="count"/> requests with 503 SlowDown.</summary>
    public void FailNext(int count) => Volatile.Write(ref _failNext, count);

    /// <summary>While true, answers every request with 503 SlowDown.</summary>
    public bool FailAll { get => _failAll; set => _failAll = value; }

    public void ResetCounts()
    {
        Volatile.Write(ref _requests, 0);
        Volatile.Write(ref _failed, 0);
    }

    /// <summary>Cuts every open connection mid-stream and refuses (closes at once) new ones until <see cref="Reconnect"/>.</summary>
    public void CutConnections()
    {
        _refusing = true;
        foreach (var socket in _open.Keys) Abort(socket);
    }

    public void Reconnect() => _refusing = false;

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        _listener.Stop();
        foreach (var socket in _open.Keys) Abort(socket);
        try { await _accepting; } catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException) { }
        _stop.Dispose();
    }

    private static void Abort(Socket socket)
    {
        try { socket.LingerState = new LingerOption(true, 0); } catch (Exception e) when (e is SocketException or ObjectDisposedException) { }
        socket.Dispose();
    }

    private async Task AcceptLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            var client = await _listener.AcceptSocketAsync(_stop.Token);
            if (_refusing) { Abort(client); continue; }
            _ = Task.Run(() => ServeAsync(client));
        }
    }

    private async Task ServeAsync(Socket client)
    {
        _open.TryAdd(client, 0);
        Socket? upstream = null;
        try
        {
            var fromClient = new Reader(new NetworkStream(client, ownsSocket: false));
            var toClient = new NetworkStream(client, ownsSocket: false);
            Reader? fromUpstream = null;
            NetworkStream? toUpstream = null;
            while (true)
            {
                var head = await fromClient.ReadHeadAsync(_stop.Token);
                if (head is null) return;
                Interlocked.Increment(ref _requests);
                var (method, headers) = Parse(head);
                var expectContinue = headers.TryGetValue("expect", out var expect) && expect.Equals("100-continue", StringComparison.OrdinalIgnoreCase);
                var length = headers.TryGetValue("content-length", out var cl) ? long.Parse(cl) : 0;
                if (headers.ContainsKey("transfer-encoding")) throw new NotSupportedException("chunked request bodies are not supported by FaultyS3Proxy");

                if (ShouldFail())
                {
                    Interlocked.Increment(ref _failed);
                    // With Expect: 100-continue the body never comes: answer and close.
                    if (!expectContinue) await fromClient.CopyAsync(length, Stream.Null, _stop.Token);
                    var body = Encoding.UTF8.GetBytes(SlowDownBody);
                    var response = $"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {body.Length}\r\n" +
                                   $"x-amz-request-id: proxy\r\n{(expectContinue ? "Connection: close\r\n" : "")}\r\n";
                    await toClient.WriteAsync(Encoding.ASCII.GetBytes(response), _stop.Token);
                    await toClient.WriteAsync(body, _stop.Token);
                    if (expectContinue) return;
                    continue;
                }

                if (upstream is null)
                {
                    upstream = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                    _open.TryAdd(upstream, 0);
                    await upstream.ConnectAsync(_upstream, _stop.Token);
                    fromUpstream = new Reader(new NetworkStream(upstream, ownsSocket: false));
                    toUpstream = new NetworkStream(upstream, ownsSocket: false);
                }
                if (expectContinue)
                {
                    head = RemoveHeader(head, "expect");
                    await toClient.WriteAsync("HTTP/1.1 100 Continue\r\n\r\n"u8.ToArray(), _stop.Token);
                }
                await toUpstream!.WriteAsync(Encoding.Latin1.GetBytes(head), _stop.Token);
                await fromClient.CopyAsync(length, toUpstream, _stop.Token);

                var responseHead = await fromUpstream!.ReadHeadAsync(_stop.Token) ?? throw new IOException("upstream closed");
                await toClient.WriteAsync(Encoding.Latin1.GetBytes(responseHead), _stop.Token);
                var status = int.Parse(responseHead.AsSpan(9, 3));
                var (_, responseHeaders) = Parse(responseHead);
                if (method == "HEAD" || status is 204 or 304 || status < 200) { }
                else if (responseHeaders.TryGetValue("content-length", out var rl)) await fromUpstream.CopyAsync(long.Parse(rl), toClient, _stop.Token);
                else if (responseHeaders.TryGetValue("transfer-encoding", out var te) && te.Contains("chunked", StringComparison.OrdinalIgnoreCase)) await fromUpstream.CopyChunkedAsync(toClient, _stop.Token);
                else { await fromUpstream.CopyToEndAsync(toClient, _stop.Token); return; }
                if (responseHeaders.TryGetValue("connection", out var conn) && conn.Equals("close", StringComparison.OrdinalIgnoreCase)) return;
            }
        }
        catch (Exception e) when (e is IOException or SocketException or OperationCanceledException or ObjectDisposedException) { }
        finally
        {
            _open.TryRemove(client, out _);
            client.Dispose();
            if (upstream is not null) { _open.TryRemove(upstream, out _); upstream.Dispose(); }
        }
    }

    private bool ShouldFail()
    {
        if (_failAll) return true;
        while (true)
        {
            var n = Volatile.Read(ref _failNext);
            if (n <= 0) return false;
            if (Interlocked.CompareExchange(ref _failNext, n - 1, n) == n) return true;
        }
    }

    private static (string Method, Dictionary<string, string> Headers) Parse(string head)
    {
        var lines = head.Split("\r\n");
        var headers = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        for (var i = 1; i < lines.Length; i++)
        {
            var colon = lines[i].IndexOf(':');
            if (colon > 0) headers[lines[i][..colon].Trim()] = lines[i][(colon + 1)..].Trim();
        }
        return (lines[0].Split(' ')[0], headers);
    }

    private static string RemoveHeader(string head, string name)
    {
        var lines = head.Split("\r\n").Where(l => !l.StartsWith(name + ":", StringComparison.OrdinalIgnoreCase));
        return string.Join("\r\n", lines);
    }

    /// <summary>A buffered reader of HTTP/1.1 framing.</summary>
    private sealed class Reader(Stream stream)
    {
        private readonly byte[] _buffer = new byte[64 * 1024];
        private int _start, _end;

        /// <summary>Everything up to and including the blank line; null at a clean end of stream.</summary>
        public async Task<string?> ReadHeadAsync(CancellationToken ct)
        {
            var head = new StringBuilder();
            while (true)
            {
                var line = await ReadLineAsync(ct);
                if (line is null) return head.Length == 0 ? null : throw new IOException("truncated head");
                head.Append(line).Append("\r\n");
                if (line.Length == 0) return head.ToString();
            }
        }

        private async Task<string?> ReadLineAsync(CancellationToken ct)
        {
            var line = new StringBuilder();
            while (true)
            {
                if (_start == _end && !await FillAsync(ct)) return line.Length == 0 ? null : throw new IOException("truncated line");
                var span = _buffer.AsSpan(_start, _end - _start);
                var nl = span.IndexOf((byte)'\n');
                if (nl < 0) { line.Append(Encoding.Latin1.GetString(span)); _start = _end; continue; }
                line.Append(Encoding.Latin1.GetString(span[..nl]));
                _start += nl + 1;
                if (line.Length > 0 && line[^1] == '\r') line.Length--;
                return line.ToString();
            }
        }

        public async Task CopyAsync(long count, Stream to, CancellationToken ct)
        {
            while (count > 0)
            {
                if (_start == _end && !await FillAsync(ct)) throw new IOException("truncated body");
                var n = (int)Math.Min(count, _end - _start);
                await to.WriteAsync(_buffer.AsMemory(_start, n), ct);
                _start += n;
                count -= n;
            }
        }

        public async Task CopyChunkedAsync(Stream to, CancellationToken ct)
        {
            while (true)
            {
                var sizeLine = await ReadLineAsync(ct) ?? throw new IOException("truncated chunk");
                await to.WriteAsync(Encoding.Latin1.GetBytes(sizeLine + "\r\n"), ct);
                var size = Convert.ToInt64(sizeLine.Split(';')[0].Trim(), 16);
                if (size == 0)
                {
                    while (true) // trailers, then the blank line
                    {
                        var trailer = await ReadLineAsync(ct) ?? throw new IOException("truncated trailer");
                        await to.WriteAsync(Encoding.Latin1.GetBytes(trailer + "\r\n"), ct);
                        if (trailer.Length == 0) return;
                    }
                }
                await CopyAsync(size + 2, to, ct);
            }
        }

        public async Task CopyToEndAsync(Stream to, CancellationToken ct)
        {
            while (_start < _end || await FillAsync(ct))
            {
                await to.WriteAsync(_buffer.AsMemory(_start, _end - _start), ct);
                _start = _end;
            }
        }

        private async Task<bool> FillAsync(CancellationToken ct)
        {
            _start = 0;
            _end = await stream.ReadAsync(_buffer, ct);
            return _end > 0;
        }
    }
}
