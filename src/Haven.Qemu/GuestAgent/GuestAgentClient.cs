using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Haven.Qemu.GuestAgent;

/// <summary>
/// Client for qemu-ga over the VM's virtio-serial channel (a unix socket served by QEMU).
/// qemu-ga keeps no framing of its own, so a session starts with guest-sync-delimited: the raw 0xFF
/// byte we send makes the agent drop any half-read input, and the 0xFF it sends back marks where
/// stale output ends. Requests go one at a time: qemu-ga breaks when requests overlap.
/// </summary>
public sealed class GuestAgentClient : IAsyncDisposable
{
    private const byte Sentinel = 0xFF;
    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly SemaphoreSlim _oneAtATime = new(1, 1);
    private readonly byte[] _buffer = new byte[64 * 1024];
    private int _start, _end;
    private bool _broken;

    private GuestAgentClient(Socket socket)
    {
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: true);
    }

    /// <summary>Connects and synchronises; throws <see cref="GuestAgentUnavailableException"/> when no agent answers in time.</summary>
    public static async Task<GuestAgentClient> ConnectAsync(string socketPath, TimeSpan timeout, CancellationToken ct = default)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        GuestAgentClient? client = null;
        try
        {
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), ct);
            client = new GuestAgentClient(socket);
            await client.SyncAsync(timeout, ct);
            return client;
        }
        catch (Exception e) when (e is SocketException or IOException or TimeoutException)
        {
            if (client is not null) await client.DisposeAsync(); else socket.Dispose();
            throw new GuestAgentUnavailableException($"guest agent did not answer on {socketPath}: {e.Message}", e);
        }
    }

    private async Task SyncAsync(TimeSpan timeout, CancellationToken ct)
    {
        var id = Random.Shared.Next(1, int.MaxValue);
        var request = Encoding.UTF8.GetBytes(new JsonObject { ["execute"] = "guest-sync-delimited", ["arguments"] = new JsonObject { ["id"] = id } }.ToJsonString() + "\n");
        var payload = new byte[request.Length + 1];
        payload[0] = Sentinel;
        request.CopyTo(payload, 1);
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cts.CancelAfter(timeout);
        try
        {
            await _stream.WriteAsync(payload, cts.Token);
            // Skip everything up to the agent's sentinel, then lines until our id comes back.
            while (true)
            {
                var line = await ReadLineAsync(cts.Token);
                var trimmed = line.AsSpan().TrimStart((char)Sentinel).Trim();
                if (trimmed.IsEmpty) continue;
                try
                {
                    using var doc = JsonDocument.Parse(trimmed.ToString());
                    if (doc.RootElement.TryGetProperty("return", out var r) && r.ValueKind == JsonValueKind.Number && r.GetInt64() == id) return;
                }
                catch (JsonException) { /* stale partial output from an earlier session */ }
            }
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            throw new TimeoutException($"no guest-sync answer within {timeout.TotalSeconds:0.#} s");
        }
    }

    /// <summary>Runs one agent command and returns its "return" value.</summary>
    public async Task<JsonElement> ExecuteAsync(string command, object? arguments, TimeSpan timeout, CancellationToken ct = default)
    {
        await _oneAtATime.WaitAsync(ct);
        try
        {
            if (_broken) throw new GuestAgentUnavailableException("guest agent connection is broken (an earlier request timed out)");
            var message = new JsonObject { ["execute"] = command };
            if (arguments is not null) message["arguments"] = JsonSerializer.SerializeToNode(arguments);
            using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
            cts.CancelAfter(timeout);
            try
            {
                await _stream.WriteAsync(Encoding.UTF8.GetBytes(message.ToJsonString() + "\n"), cts.Token);
                while (true)
                {
                    var line = await ReadLineAsync(cts.Token);
                    if (string.IsNullOrWhiteSpace(line)) continue;
                    using var doc = JsonDocument.Parse(line);
                    var root = doc.RootElement;
                    if (root.TryGetProperty("error", out var error))
                        throw new GuestAgentException(command, error.GetProperty("desc").GetString() ?? "unknown error");
                    return root.TryGetProperty("return", out var ret) ? ret.Clone() : default;
                }
            }
            catch (Exception e) when (e is OperationCanceledException or IOException or SocketException && !ct.IsCancellationRequested)
            {
                _broken = true; // a late reply would be read as the answer to the next request
                throw new GuestAgentUnavailableException($"guest agent gave no answer to {command} within {timeout.TotalSeconds:0.#} s", e);
            }
        }
        finally { _oneAtATime.Release(); }
    }

    public async Task PingAsync(CancellationToken ct = default) => await ExecuteAsync("guest-ping", null, TimeSpan.FromSeconds(5), ct);

    /// <summary>Freezes all guest file systems; returns how many were frozen.</summary>
    public async Task<int> FreezeFileSystemsAsync(TimeSpan timeout, CancellationToken ct = default)
        => (await ExecuteAsync("guest-fsfreeze-freeze", null, timeout, ct)).GetInt32();

    public async Task<int> ThawFileSystemsAsync(TimeSpan timeout, CancellationToken ct = default)
        => (await ExecuteAsync("guest-fsfreeze-thaw", null, timeout, ct)).GetInt32();

    /// <summary>"thawed" or "frozen".</summary>
    public async Task<string> GetFreezeStatusAsync(CancellationToken ct = default)
        => (await ExecuteAsync("guest-fsfreeze-status", null, TimeSpan.FromSeconds(10), ct)).GetString() ?? "";

    /// <summary>Starts a program in the guest (guest-exec) and returns its pid there; output is kept for <see cref="GetExecStatusAsync"/>.</summary>
    public async Task<long> StartExecAsync(string path, IReadOnlyList<string> args, bool captureOutput = true, CancellationToken ct = default)
    {
        var r = await ExecuteAsync("guest-exec", new GuestExecRequest(path, [.. args], captureOutput), TimeSpan.FromSeconds(10), ct);
        return r.GetProperty("pid").GetInt64();
    }

    /// <summary>guest-exec-status: whether the program ended, and its exit code and output (the agent sends them base64-encoded).</summary>
    public async Task<GuestExecStatus> GetExecStatusAsync(long pid, CancellationToken ct = default)
    {
        var r = await ExecuteAsync("guest-exec-status", new { pid }, TimeSpan.FromSeconds(10), ct);
        return new GuestExecStatus(
            r.GetProperty("exited").GetBoolean(),
            r.TryGetProperty("exitcode", out var code) ? code.GetInt32() : null,
            r.TryGetProperty("signal", out var signal) ? signal.GetInt32() : null,
            r.TryGetProperty("out-data", out var o) ? Convert.FromBase64String(o.GetString() ?? "") : [],
            r.TryGetProperty("err-data", out var e) ? Convert.FromBase64String(e.GetString() ?? "") : [],
            r.TryGetProperty("out-truncated", out var ot) && ot.GetBoolean() || r.TryGetProperty("err-truncated", out var et) && et.GetBoolean());
    }

    /// <summary>Runs a program in the guest and waits until it ends; throws a <see cref="TimeoutException"/> if it runs longer than <paramref name="timeout"/>.</summary>
    public async Task<GuestExecStatus> RunAsync(string path, IReadOnlyList<string> args, TimeSpan timeout, CancellationToken ct = default)
    {
        var pid = await StartExecAsync(path, args, captureOutput: true, ct);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var delay = TimeSpan.FromMilliseconds(20);
        while (true)
        {
            var status = await GetExecStatusAsync(pid, ct);
            if (status.Exited) return status;
            if (clock.Elapsed > timeout)
                throw new TimeoutException($"guest program {path} (pid {pid}) still running after {timeout.TotalSeconds:0.#} s");
            await Task.Delay(delay, ct);
            delay = TimeSpan.FromMilliseconds(Math.Min(delay.TotalMilliseconds * 2, 500));
        }
    }

    private sealed record GuestExecRequest(
        [property: System.Text.Json.Serialization.JsonPropertyName("path")] string Path,
        [property: System.Text.Json.Serialization.JsonPropertyName("arg")] string[] Arg,
        [property: System.Text.Json.Serialization.JsonPropertyName("capture-output")] bool CaptureOutput);

    private async Task<string> ReadLineAsync(CancellationToken ct)
    {
        while (true)
        {
            var newline = Array.IndexOf(_buffer, (byte)'\n', _start, _end - _start);
            if (newline >= 0)
            {
                var line = Latin1OrUtf8(_buffer.AsSpan(_start, newline - _start));
                _start = newline + 1;
                return line;
            }
            if (_start > 0)
            {
                Buffer.BlockCopy(_buffer, _start, _buffer, 0, _end - _start);
                _end -= _start;
                _start = 0;
            }
            if (_end == _buffer.Length) throw new IOException("guest agent sent a line longer than 64 KiB");
            var n = await _stream.ReadAsync(_buffer.AsMemory(_end), ct);
            if (n == 0) throw new IOException("guest agent channel closed");
            _end += n;
        }
    }

    // The sentinel byte is not valid UTF-8; map it to U+00FF so it can be trimmed as a char.
    private static string Latin1OrUtf8(ReadOnlySpan<byte> bytes)
    {
        var skip = 0;
        while (skip < bytes.Length && bytes[skip] == Sentinel) skip++;
        return new string((char)Sentinel, skip) + Encoding.UTF8.GetString(bytes[skip..]);
    }

    public async ValueTask DisposeAsync()
    {
        await _stream.DisposeAsync();
        _oneAtATime.Dispose();
    }
}

/// <summary>What guest-exec-status reported: the exit code (or the signal that ended the program) and its output.</summary>
public sealed record GuestExecStatus(bool Exited, int? ExitCode, int? Signal, byte[] Stdout, byte[] Stderr, bool Truncated)
{
    public string StdoutText => Encoding.UTF8.GetString(Stdout);
    public string StderrText => Encoding.UTF8.GetString(Stderr);
}

public sealed class GuestAgentException(string command, string description)
    : Exception($"guest agent refused {command}: {description}")
{
    public string Command { get; } = command;
}

/// <summary>No agent is running in the guest, or it stopped answering.</summary>
public sealed class GuestAgentUnavailableException(string message, Exception? inner = null) : Exception(message, inner);
