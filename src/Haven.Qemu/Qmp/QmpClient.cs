using System.Collections.Concurrent;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading.Channels;

namespace Haven.Qemu.Qmp;

/// <summary>
/// Client for the QEMU Machine Protocol over a unix socket. Commands may be issued concurrently:
/// each carries an "id" and its reply is matched by that id, so events interleaved with replies
/// never confuse a caller. Events are fanned out to waiters registered with <see cref="WaitForEventAsync"/>.
/// </summary>
public sealed class QmpClient : IAsyncDisposable
{
    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly StreamReader _reader;
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly ConcurrentDictionary<long, TaskCompletionSource<JsonElement>> _pending = new();
    private readonly List<EventWaiter> _eventWaiters = [];
    private readonly CancellationTokenSource _closed = new();
    private long _nextId;
    private Task? _readLoop;
    private Exception? _failure;

    private readonly TimeProvider _time;

    private QmpClient(Socket socket, TimeProvider time)
    {
        _time = time;
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: true);
        _reader = new StreamReader(_stream, new UTF8Encoding(false), false, 64 * 1024);
    }

    /// <summary>The QEMU version from the greeting, e.g. "7.2.22".</summary>
    public string QemuVersion { get; private set; } = "";

    /// <summary>
    /// Connects and completes the greeting within <paramref name="timeout"/>. QEMU serves one QMP client at a time:
    /// while another client holds the socket (or QEMU is stopped) the greeting never comes and this throws
    /// <see cref="QmpConnectionException"/>.
    /// </summary>
    public static async Task<QmpClient> ConnectAsync(string socketPath, TimeSpan timeout, CancellationToken ct = default, TimeProvider? time = null)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(ct);
        deadline.CancelAfter(timeout);
        while (true)
        {
            var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            try
            {
                await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), deadline.Token);
                var client = new QmpClient(socket, time ?? TimeProvider.System);
                await client.HandshakeAsync(deadline.Token);
                return client;
            }
            catch (Exception e) when (e is SocketException or IOException && !deadline.IsCancellationRequested)
            {
                socket.Dispose();
                await Task.Delay(50, deadline.Token);
            }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested)
            {
                socket.Dispose();
                throw new QmpConnectionException($"no QMP greeting on {socketPath} within {timeout.TotalSeconds:0.#} s (QEMU is stopped or hung, or another QMP client holds the socket)");
            }
        }
    }

    private async Task HandshakeAsync(CancellationToken ct)
    {
        var greeting = await _reader.ReadLineAsync(ct) ?? throw new QmpConnectionException("QMP socket closed before greeting");
        using (var doc = JsonDocument.Parse(greeting))
        {
            if (!doc.RootElement.TryGetProperty("QMP", out var qmp))
                throw new QmpConnectionException("not a QMP greeting: " + greeting);
            var v = qmp.GetProperty("version").GetProperty("qemu");
            QemuVersion = $"{v.GetProperty("major").GetInt32()}.{v.GetProperty("minor").GetInt32()}.{v.GetProperty("micro").GetInt32()}";
        }
        _readLoop = Task.Run(ReadLoopAsync, CancellationToken.None);
        await ExecuteAsync("qmp_capabilities", null, ct);
    }

    /// <summary>How long a command may go unanswered: QEMU answers commands from its main loop within milliseconds; long work runs as jobs.</summary>
    public static readonly TimeSpan DefaultCommandTimeout = TimeSpan.FromSeconds(30);

    /// <summary>The bound of <see cref="ExecuteAsync(string, object?, CancellationToken)"/>.</summary>
    public TimeSpan CommandTimeout { get; set; } = DefaultCommandTimeout;

    /// <summary>Why the connection is unusable (closed by QEMU, a timed-out command); null while it works.</summary>
    public Exception? Failure => _failure;

    /// <summary>Runs one command and returns its "return" value; a QMP error becomes <see cref="QmpException"/>.</summary>
    public Task<JsonElement> ExecuteAsync(string command, object? arguments = null, CancellationToken ct = default)
        => ExecuteAsync(command, arguments, CommandTimeout, ct);

    /// <summary>
    /// As above, bounded by <paramref name="timeout"/>. A command QEMU leaves unanswered that long (a hung or
    /// SIGSTOPped QEMU) throws <see cref="QmpTimeoutException"/> and breaks the connection: whether the command
    /// ran is unknown, so the caller must re-attach and look instead of going on.
    /// </summary>
    public async Task<JsonElement> ExecuteAsync(string command, object? arguments, TimeSpan timeout, CancellationToken ct)
    {
        if (_failure is not null) throw new QmpConnectionException("QMP connection is closed: " + _failure.Message, _failure);
        var id = Interlocked.Increment(ref _nextId);
        var tcs = new TaskCompletionSource<JsonElement>(TaskCreationOptions.RunContinuationsAsynchronously);
        _pending[id] = tcs;
        var message = new JsonObject { ["execute"] = command, ["id"] = id };
        if (arguments is not null)
            message["arguments"] = arguments as JsonNode ?? JsonSerializer.SerializeToNode(arguments, arguments.GetType(), QmpJson.Options);
        var bytes = Encoding.UTF8.GetBytes(message.ToJsonString() + "\n");
        await _writeLock.WaitAsync(ct);
        try { await _stream.WriteAsync(bytes, ct); }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException)
        {
            _pending.TryRemove(id, out _);
            throw new QmpConnectionException($"QMP write failed for {command}", e);
        }
        finally { _writeLock.Release(); }

        using var reg = ct.Register(() => tcs.TrySetCanceled(ct));
        try
        {
            JsonElement result;
            try { result = await tcs.Task.WaitAsync(timeout, _time, CancellationToken.None); }
            catch (TimeoutException)
            {
                var failure = new QmpTimeoutException(command, timeout);
                Break(failure);
                throw failure;
            }
            if (result.ValueKind == JsonValueKind.Object && result.TryGetProperty("error", out var error))
                throw new QmpException(command, error.GetProperty("class").GetString() ?? "GenericError", error.GetProperty("desc").GetString() ?? "");
            return result.TryGetProperty("return", out var ret) ? ret : default;
        }
        finally { _pending.TryRemove(id, out _); }
    }

    /// <summary>
    /// Registers interest in an event before the action that causes it, so the event cannot be missed.
    /// Returns a task that completes with the event's "data" object.
    /// </summary>
    public Task<JsonElement> WaitForEventAsync(string name, Func<JsonElement, bool>? match, TimeSpan timeout, CancellationToken ct = default)
    {
        var waiter = new EventWaiter(name, match ?? (_ => true));
        lock (_eventWaiters) _eventWaiters.Add(waiter);
        EnsureHeartbeat();
        var cts = CancellationTokenSource.CreateLinkedTokenSource(ct, _closed.Token);
        cts.CancelAfter(timeout);
        cts.Token.Register(() =>
        {
            lock (_eventWaiters) _eventWaiters.Remove(waiter);
            if (_closed.IsCancellationRequested)
                waiter.Completion.TrySetException(new QmpConnectionException($"QMP connection closed while waiting for {name}" + (_failure is null ? "" : ": " + _failure.Message), _failure));
            else if (ct.IsCancellationRequested)
                waiter.Completion.TrySetCanceled(ct);
            else
                waiter.Completion.TrySetException(new TimeoutException($"QEMU did not send {name} within {timeout.TotalSeconds:0.#} s"));
        });
        waiter.Completion.Task.ContinueWith(_ => cts.Dispose(), TaskScheduler.Default);
        return waiter.Completion.Task;
    }

    /// <summary>How often QEMU is asked for a sign of life while someone waits for an event (a block job may run for hours).</summary>
    public static readonly TimeSpan HeartbeatInterval = TimeSpan.FromSeconds(10);
    private int _heartbeat;

    /// <summary>
    /// While event waiters exist, pings QEMU every <see cref="HeartbeatInterval"/>: a QEMU that hangs during a
    /// long job then fails the waits within the command timeout instead of the job's.
    /// </summary>
    private void EnsureHeartbeat()
    {
        if (Interlocked.Exchange(ref _heartbeat, 1) == 0) _ = HeartbeatAsync();
    }

    private async Task HeartbeatAsync()
    {
        try
        {
            while (true)
            {
                await Task.Delay(HeartbeatInterval, _time, _closed.Token);
                lock (_eventWaiters) if (_eventWaiters.Count == 0) break;
                await ExecuteAsync("query-version", null, CommandTimeout, CancellationToken.None);
            }
        }
        catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or QmpConnectionException or QmpException) { }
        finally { Volatile.Write(ref _heartbeat, 0); }
        bool again;
        lock (_eventWaiters) again = _eventWaiters.Count > 0 && _failure is null;
        if (again) EnsureHeartbeat();
    }

    /// <summary>All events seen, for callers that want to log or watch them.</summary>
    public ChannelReader<JsonElement> Events => _events.Reader;
    private readonly Channel<JsonElement> _events = Channel.CreateBounded<JsonElement>(new BoundedChannelOptions(256) { FullMode = BoundedChannelFullMode.DropOldest });

    /// <summary>Completes when QEMU closes the socket (process exited or quit).</summary>
    public Task Closed => _closedTask.Task;
    private readonly TaskCompletionSource _closedTask = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private async Task ReadLoopAsync()
    {
        try
        {
            while (await _reader.ReadLineAsync(_closed.Token) is { } line)
            {
                if (line.Length == 0) continue;
                JsonElement root;
                using (var doc = JsonDocument.Parse(line)) root = doc.RootElement.Clone();
                if (root.TryGetProperty("event", out var ev))
                {
                    var name = ev.GetString() ?? "";
                    var data = root.TryGetProperty("data", out var d) ? d : default;
                    _events.Writer.TryWrite(root);
                    EventWaiter[] snapshot;
                    lock (_eventWaiters) snapshot = [.. _eventWaiters];
                    foreach (var w in snapshot)
                    {
                        if (w.Name != name || !w.Match(data)) continue;
                        lock (_eventWaiters) _eventWaiters.Remove(w);
                        w.Completion.TrySetResult(data);
                    }
                }
                else if (root.TryGetProperty("id", out var idEl) && idEl.TryGetInt64(out var id) && _pending.TryGetValue(id, out var tcs))
                {
                    tcs.TrySetResult(root);
                }
            }
            Interlocked.CompareExchange(ref _failure, new QmpConnectionException("QEMU closed the QMP socket"), null);
        }
        catch (Exception e) { Interlocked.CompareExchange(ref _failure, e, null); }
        finally
        {
            foreach (var p in _pending.Values) p.TrySetException(new QmpConnectionException("QMP connection closed" + (_failure is null ? "" : ": " + _failure.Message), _failure));
            _events.Writer.TryComplete();
            _closed.Cancel();
            _closedTask.TrySetResult();
        }
    }

    /// <summary>Marks the connection unusable and closes it; every waiting command and event waiter fails with <paramref name="failure"/>.</summary>
    private void Break(Exception failure)
    {
        Interlocked.CompareExchange(ref _failure, failure, null);
        foreach (var p in _pending.Values) p.TrySetException(new QmpConnectionException(failure.Message, failure));
        try { _socket.Shutdown(SocketShutdown.Both); }
        catch (Exception e) when (e is SocketException or ObjectDisposedException) { }
        try { _closed.Cancel(); }
        catch (ObjectDisposedException) { }
    }

    public async ValueTask DisposeAsync()
    {
        _closed.Cancel();
        try { _socket.Shutdown(SocketShutdown.Both); }
        catch (SocketException) { } // already closed by QEMU or broken by a timeout
        await _stream.DisposeAsync();
        if (_readLoop is not null) await _readLoop.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        _closed.Dispose();
        _writeLock.Dispose();
    }

    private sealed record EventWaiter(string Name, Func<JsonElement, bool> Match)
    {
        public TaskCompletionSource<JsonElement> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }
}
