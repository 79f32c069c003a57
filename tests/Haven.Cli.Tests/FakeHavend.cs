using System.Net.Sockets;
using System.Text;

namespace Haven.Cli.Tests;

/// <summary>
/// A minimal stand-in for havend: a unix socket in a temporary data folder (with a token file) that answers
/// every HTTP/1.1 request with one canned response and records what it was asked.
/// </summary>
public sealed class FakeHavend : IDisposable
{
    public sealed record Request(string Method, string Target, Dictionary<string, string> Headers, string Body);

    public const string TokenValue = "s3cret-token";

    readonly Socket listener;
    readonly CancellationTokenSource stop = new();
    readonly Task loop;
    readonly int status;
    readonly string reason;
    readonly string body;
    readonly string contentType;

    public string Folder { get; }
    public string SocketPath { get; }
    public List<Request> Requests { get; } = [];

    public FakeHavend(int status, string body, string reason = "", string contentType = "application/json; charset=utf-8")
    {
        this.status = status;
        this.body = body;
        this.reason = reason;
        this.contentType = contentType;
        Folder = Directory.CreateTempSubdirectory("haven-cli-").FullName;
        SocketPath = Path.Combine(Folder, "havend.sock");
        File.WriteAllText(Path.Combine(Folder, "token"), TokenValue + "\n");
        listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(SocketPath));
        listener.Listen();
        loop = AcceptLoopAsync();
    }

    /// <summary>Environment for the CLI that points it at this fake via HAVEN_HOME (a folder).</summary>
    public Dictionary<string, string> Env => new() { ["HAVEN_HOME"] = Folder, ["HOME"] = "/nonexistent-home" };

    async Task AcceptLoopAsync()
    {
        while (true)
        {
            Socket client;
            try
            {
                client = await listener.AcceptAsync(stop.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return;
            }
            using (client)
                await ServeAsync(client);
        }
    }

    async Task ServeAsync(Socket client)
    {
        await using var stream = new NetworkStream(client, ownsSocket: false);
        var buffer = new List<byte>();
        var chunk = new byte[4096];
        int headerEnd;
        while ((headerEnd = IndexOf(buffer, "\r\n\r\n"u8.ToArray())) < 0)
        {
            var n = await stream.ReadAsync(chunk, stop.Token);
            if (n == 0)
                return;
            buffer.AddRange(chunk.AsSpan(0, n));
        }
        var head = Encoding.ASCII.GetString(buffer.GetRange(0, headerEnd).ToArray()).Split("\r\n");
        var requestLine = head[0].Split(' ');
        var headers = head.Skip(1)
            .Select(l => l.Split(':', 2))
            .ToDictionary(p => p[0].Trim(), p => p[1].Trim(), StringComparer.OrdinalIgnoreCase);
        var length = headers.TryGetValue("Content-Length", out var cl) ? int.Parse(cl) : 0;
        var bodyStart = headerEnd + 4;
        while (buffer.Count < bodyStart + length)
        {
            var n = await stream.ReadAsync(chunk, stop.Token);
            if (n == 0)
                break;
            buffer.AddRange(chunk.AsSpan(0, n));
        }
        var requestBody = Encoding.UTF8.GetString(buffer.Skip(bodyStart).Take(length).ToArray());
        lock (Requests)
            Requests.Add(new Request(requestLine[0], requestLine[1], headers, requestBody));

        var payload = Encoding.UTF8.GetBytes(body);
        var response = $"HTTP/1.1 {status} {reason}\r\n"
            + (payload.Length > 0 ? $"Content-Type: {contentType}\r\n" : "")
            + $"Content-Length: {payload.Length}\r\nConnection: close\r\n\r\n";
        await stream.WriteAsync(Encoding.ASCII.GetBytes(response), stop.Token);
        await stream.WriteAsync(payload, stop.Token);
    }

    static int IndexOf(List<byte> haystack, byte[] needle)
    {
        for (var i = 0; i + needle.Length <= haystack.Count; i++)
        {
            var match = true;
            for (var j = 0; j < needle.Length && match; j++)
                match = haystack[i + j] == needle[j];
            if (match)
                return i;
        }
        return -1;
    }

    public void Dispose()
    {
        stop.Cancel();
        listener.Dispose();
        try
        {
            loop.Wait(TimeSpan.FromSeconds(5));
        }
        catch (AggregateException)
        {
            // The loop ends by cancellation.
        }
        Directory.Delete(Folder, recursive: true);
    }
}
