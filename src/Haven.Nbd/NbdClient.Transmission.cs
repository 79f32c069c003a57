using System.Buffers;
using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Net.Sockets;
using System.Text;
using static Haven.Nbd.NbdProtocol;

namespace Haven.Nbd;

// Transmission phase: pipelined requests, one sender at a time, one background reader.
public sealed partial class NbdClient
{
    private const int MaxChunkPayload = 64 << 20; // block status of 4 GiB at 512-byte granularity is 64 MiB

    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly byte[] _requestHeader = new byte[28]; // guarded by _writeLock
    private readonly ConcurrentDictionary<ulong, Request> _pending = new();
    private readonly Lock _failLock = new();
    private long _nextHandle;
    private volatile Exception? _failure;
    private volatile bool _disposing;
    private int _disposed;
    private Task? _readLoop;

    /// <summary>Set once the connection failed or was disposed; every request fails from then on.</summary>
    public bool IsBroken => _failure is not null;

    /// <summary>Requests sent and not yet fully answered (cancelled ones count until their reply is drained).</summary>
    public int RequestsInFlight => _pending.Count;

    private ulong NextHandle() => (ulong)Interlocked.Increment(ref _nextHandle);

    private void StartReader() => _readLoop = Task.Run(ReadLoopAsync, CancellationToken.None);

    /// <summary>Sends one request and waits for its whole reply.</summary>
    private async Task RunAsync(Request request, ReadOnlyMemory<byte> payload, CancellationToken ct)
    {
        ThrowIfFailed();
        await _writeLock.WaitAsync(ct);
        try
        {
            // Registered before sending: the reply can arrive before SendAsync returns.
            _pending[request.Handle] = request;
            if (_failure is not null)
            {
                if (_pending.TryRemove(request.Handle, out _)) ThrowIfFailed();
                // else the failure sweep already took it and failed its task
            }
            else
            {
                var h = _requestHeader;
                BinaryPrimitives.WriteUInt32BigEndian(h, RequestMagic);
                BinaryPrimitives.WriteUInt16BigEndian(h.AsSpan(4), 0);
                BinaryPrimitives.WriteUInt16BigEndian(h.AsSpan(6), request.Command);
                BinaryPrimitives.WriteUInt64BigEndian(h.AsSpan(8), request.Handle);
                BinaryPrimitives.WriteUInt64BigEndian(h.AsSpan(16), (ulong)request.Offset);
                BinaryPrimitives.WriteUInt32BigEndian(h.AsSpan(24), request.Length);
                try
                {
                    // Not cancellable: half a request on the wire would corrupt the stream for everyone.
                    await SendAllAsync(h, CancellationToken.None);
                    if (!payload.IsEmpty) await SendAllAsync(payload, CancellationToken.None);
                }
                catch (Exception e) when (e is SocketException or IOException or ObjectDisposedException)
                {
                    Fail(_disposing ? new ObjectDisposedException(nameof(NbdClient)) : new NbdProtocolException($"sending {CommandName(request.Command)} to {_where} failed: {e.Message}", e));
                }
            }
        }
        finally { _writeLock.Release(); }

        if (!ct.CanBeCanceled) { await request.Done.Task; return; }
        // Cancelling abandons the wait only; the reply still arrives and the reader drains it.
        using var registration = ct.UnsafeRegister(static (state, token) => ((Request)state!).Cancel(token), request);
        await request.Done.Task;
    }

    private async Task ReadLoopAsync()
    {
        Exception failure;
        try
        {
            while (true)
            {
                await _in.EnsureAsync(4, CancellationToken.None);
                var magic = BinaryPrimitives.ReadUInt32BigEndian(_in.Peek(4));
                if (magic == StructuredReplyMagic) await ReadStructuredChunkAsync();
                else if (magic == SimpleReplyMagic) await ReadSimpleReplyAsync();
                else throw new NbdProtocolException($"NBD server at {_where} sent a bad reply magic 0x{magic:x8}");
            }
        }
        catch (Exception e)
        {
            // Whatever ends the reader ends the connection: nothing else would ever complete the pending requests.
            failure = e switch
            {
                _ when _disposing => new ObjectDisposedException(nameof(NbdClient), e.Message),
                NbdProtocolException => e,
                EndOfStreamException => new NbdProtocolException($"NBD server at {_where} closed the connection", e),
                SocketException or IOException or ObjectDisposedException => new NbdProtocolException($"connection to NBD server at {_where} failed: {e.Message}", e),
                _ => new NbdProtocolException($"NBD client for {_where} failed reading replies: {e.Message}", e),
            };
        }
        Fail(failure);
    }

    private async ValueTask ReadSimpleReplyAsync()
    {
        await _in.EnsureAsync(16, CancellationToken.None);
        var header = _in.Take(16);
        var error = BinaryPrimitives.ReadUInt32BigEndian(header[4..]);
        var handle = BinaryPrimitives.ReadUInt64BigEndian(header[8..]);
        var request = Find(handle);
        if (request.Command == CmdRead)
        {
            if (StructuredReplies) throw new NbdProtocolException($"NBD server at {_where} sent a simple reply to a read after agreeing to structured replies");
            if (error == 0)
            {
                await ReadDataAsync(request, request.Buffer, request.Length);
                request.Received = request.Length;
            }
        }
        _pending.TryRemove(handle, out _);
        request.Complete(error == 0 ? null : ServerError(request, (int)error, "", null));
    }

    private async ValueTask ReadStructuredChunkAsync()
    {
        await _in.EnsureAsync(20, CancellationToken.None);
        var header = _in.Take(20);
        var flags = BinaryPrimitives.ReadUInt16BigEndian(header[4..]);
        var type = BinaryPrimitives.ReadUInt16BigEndian(header[6..]);
        var handle = BinaryPrimitives.ReadUInt64BigEndian(header[8..]);
        var length = BinaryPrimitives.ReadUInt32BigEndian(header[16..]);
        var request = Find(handle);
        if (length > MaxChunkPayload) throw Violation($"a {length}-byte reply chunk");

        switch (type)
        {
            case ReplyTypeNone:
                if (length != 0 || (flags & ReplyFlagDone) == 0) throw Violation("a malformed NBD_REPLY_TYPE_NONE");
                break;
            case ReplyTypeOffsetData:
            {
                if (request.Command != CmdRead || length <= 8) throw Violation($"an NBD_REPLY_TYPE_OFFSET_DATA of {length} bytes to {CommandName(request.Command)}");
                await _in.EnsureAsync(8, CancellationToken.None);
                var offset = BinaryPrimitives.ReadInt64BigEndian(_in.Take(8));
                var count = length - 8;
                var at = CheckInside(request, offset, count);
                await ReadDataAsync(request, request.Buffer.Slice(at, (int)count), count);
                request.Received += count;
                break;
            }
            case ReplyTypeOffsetHole:
            {
                if (request.Command != CmdRead || length != 12) throw Violation($"an NBD_REPLY_TYPE_OFFSET_HOLE of {length} bytes to {CommandName(request.Command)}");
                await _in.EnsureAsync(12, CancellationToken.None);
                var body = _in.Take(12);
                var offset = BinaryPrimitives.ReadInt64BigEndian(body);
                var count = BinaryPrimitives.ReadUInt32BigEndian(body[8..]);
                if (count == 0) throw Violation("an empty hole");
                var at = CheckInside(request, offset, count);
                if (request.TryBeginFill())
                {
                    request.Buffer.Span.Slice(at, (int)count).Clear();
                    request.EndFill();
                }
                request.Received += count;
                break;
            }
            case ReplyTypeBlockStatus:
                if (request.Command != CmdBlockStatus || length < 12 || (length - 4) % 8 != 0)
                    throw Violation($"an NBD_REPLY_TYPE_BLOCK_STATUS of {length} bytes to {CommandName(request.Command)}");
            {
                var payload = await ReadPayloadAsync(length);
                try { ParseBlockStatus(request, payload.AsSpan(0, (int)length)); }
                finally { ArrayPool<byte>.Shared.Return(payload); }
                break;
            }
            default:
                if ((type & ReplyTypeErrorBit) == 0) throw Violation($"the unknown reply chunk type {type}");
                if (length < 6) throw Violation($"an error chunk of {length} bytes");
                var errorPayload = await ReadPayloadAsync(length);
                try { ParseError(request, type, errorPayload.AsSpan(0, (int)length)); }
                finally { ArrayPool<byte>.Shared.Return(errorPayload); }
                break;
        }

        if ((flags & ReplyFlagDone) == 0) return;
        // Checked while the request is still pending, so the failure sweep completes it too.
        if (request.Error is null && request.Command == CmdRead && request.Received != request.Length)
            throw Violation($"a read reply covering {request.Received} of {request.Length} bytes");
        if (request.Error is null && request.Command == CmdBlockStatus && request.Extents is null)
            throw Violation("a block status reply without extents for the requested context");
        _pending.TryRemove(handle, out _);
        request.Complete(request.Error);
    }

    /// <summary>Reads a payload into the caller's buffer, or drops it when the caller gave up waiting.</summary>
    private async ValueTask ReadDataAsync(Request request, Memory<byte> destination, long count)
    {
        if (!request.TryBeginFill())
        {
            await _in.SkipAsync(count, CancellationToken.None);
            return;
        }
        try { await _in.ReadExactlyAsync(destination, CancellationToken.None); }
        finally { request.EndFill(); }
    }

    /// <summary>A chunk payload in a pooled array (return it); used for the small metadata and error chunks.</summary>
    private async ValueTask<byte[]> ReadPayloadAsync(uint length)
    {
        var rented = ArrayPool<byte>.Shared.Rent((int)length);
        try { await _in.ReadExactlyAsync(rented.AsMemory(0, (int)length), CancellationToken.None); }
        catch
        {
            ArrayPool<byte>.Shared.Return(rented);
            throw;
        }
        return rented;
    }

    private void ParseBlockStatus(Request request, ReadOnlySpan<byte> payload)
    {
        var contextId = BinaryPrimitives.ReadUInt32BigEndian(payload);
        if (!_contextIds.ContainsValue(contextId)) throw Violation($"block status for the unknown context id {contextId}");
        if (contextId != request.ContextId || request.Extents is not null) return; // another negotiated context: not asked for
        var descriptors = payload[4..];
        var extents = new List<NbdExtent>(descriptors.Length / 8);
        var position = request.Offset;
        var end = request.Offset + request.Length;
        for (var i = 0; i < descriptors.Length && position < end; i += 8)
        {
            var length = BinaryPrimitives.ReadUInt32BigEndian(descriptors[i..]);
            var flags = BinaryPrimitives.ReadUInt32BigEndian(descriptors[(i + 4)..]);
            if (length == 0) throw Violation("a zero-length extent");
            // Only the last extent may reach past the request; clip it so callers see exactly the range.
            var clipped = Math.Min(length, end - position);
            extents.Add(new NbdExtent(position, clipped, flags));
            position += clipped;
        }
        request.Extents = extents;
    }

    private void ParseError(Request request, ushort type, ReadOnlySpan<byte> payload)
    {
        var error = (int)BinaryPrimitives.ReadUInt32BigEndian(payload);
        var messageLength = BinaryPrimitives.ReadUInt16BigEndian(payload[4..]);
        if (6 + messageLength > payload.Length) throw Violation("an error chunk whose message overruns it");
        var message = Encoding.UTF8.GetString(payload.Slice(6, messageLength));
        long? errorOffset = null;
        if (type == ReplyTypeErrorOffset)
        {
            if (payload.Length != 6 + messageLength + 8) throw Violation("a malformed NBD_REPLY_TYPE_ERROR_OFFSET");
            errorOffset = BinaryPrimitives.ReadInt64BigEndian(payload[(6 + messageLength)..]);
        }
        if (error == 0) throw Violation("an error chunk with error code 0");
        request.Error ??= ServerError(request, error, message, errorOffset);
    }

    private static NbdServerErrorException ServerError(Request request, int error, string message, long? errorOffset)
        => new(CommandName(request.Command), request.Offset, request.Length, error, message, errorOffset);

    private Request Find(ulong handle)
        => _pending.TryGetValue(handle, out var request) ? request : throw Violation($"a reply for unknown handle {handle}");

    private int CheckInside(Request request, long offset, uint count)
    {
        if (offset < request.Offset || offset > request.Offset + request.Length - count)
            throw Violation($"{count} bytes at {offset}, outside the read of {request.Length} bytes at {request.Offset}");
        return (int)(offset - request.Offset);
    }

    private NbdProtocolException Violation(string what) => new($"NBD server at {_where} broke the protocol: it sent {what}");

    /// <summary>Marks the client broken, closes the socket and fails every pending request. The first failure wins.</summary>
    private void Fail(Exception failure)
    {
        lock (_failLock) _failure ??= failure;
        try { _socket.Shutdown(SocketShutdown.Both); } catch (Exception e) when (e is SocketException or ObjectDisposedException) { }
        foreach (var (handle, request) in _pending)
            if (_pending.TryRemove(handle, out _)) request.Complete(FailureFor(request));
    }

    private Exception FailureFor(Request? request)
    {
        var failure = _failure!;
        if (failure is ObjectDisposedException) return new ObjectDisposedException(nameof(NbdClient), $"the NBD client for {_where} was disposed");
        var what = request is null ? "" : $" ({CommandName(request.Command)} at {request.Offset} for {request.Length} bytes failed)";
        // A fresh exception per caller: one instance awaited by many tasks would mix their stack traces.
        return new NbdProtocolException($"NBD connection to {_where} is broken: {failure.Message}{what}", failure);
    }

    private void ThrowIfFailed()
    {
        if (_failure is not null) throw FailureFor(null);
    }

    /// <summary>Sends NBD_CMD_DISC (a polite disconnect), waits briefly for the server to close, then closes.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        if (_failure is null && _readLoop is not null)
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            try
            {
                await _writeLock.WaitAsync(timeout.Token);
                try
                {
                    _disposing = true;
                    var h = _requestHeader;
                    h.AsSpan().Clear();
                    BinaryPrimitives.WriteUInt32BigEndian(h, RequestMagic);
                    BinaryPrimitives.WriteUInt16BigEndian(h.AsSpan(6), CmdDisc);
                    BinaryPrimitives.WriteUInt64BigEndian(h.AsSpan(8), NextHandle());
                    await SendAllAsync(h, timeout.Token);
                    _socket.Shutdown(SocketShutdown.Send);
                }
                finally { _writeLock.Release(); }
                // The server closes after DISC; its end-of-stream ends the reader.
                await _readLoop.WaitAsync(timeout.Token);
            }
            catch (Exception e) when (e is SocketException or IOException or ObjectDisposedException or OperationCanceledException) { }
        }
        _disposing = true;
        Fail(new ObjectDisposedException(nameof(NbdClient)));
        if (_readLoop is not null) await _readLoop.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        _socket.Dispose();
    }

    /// <summary>
    /// One request in flight. The reader may be copying into <see cref="Buffer"/> while the caller cancels:
    /// the state makes sure the caller's task never completes while its buffer is being written.
    /// </summary>
    private sealed class Request(ulong handle, ushort command, long offset, uint length)
    {
        private const int Waiting = 0, Filling = 1, Abandoned = 2, Completed = 3;
        private int _state;
        private int _cancelRequested;
        private CancellationToken _cancelToken;
        private Exception? _deferredFailure;

        public ulong Handle { get; } = handle;
        public ushort Command { get; } = command;
        public long Offset { get; } = offset;
        public uint Length { get; } = length;
        public Memory<byte> Buffer { get; init; }
        public uint ContextId { get; init; }
        public List<NbdExtent>? Extents { get; set; }
        public long Received { get; set; }
        public NbdServerErrorException? Error { get; set; }
        public TaskCompletionSource Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public bool TryBeginFill() => Interlocked.CompareExchange(ref _state, Filling, Waiting) == Waiting;

        public void EndFill()
        {
            Interlocked.Exchange(ref _state, Waiting);
            if (Volatile.Read(ref _deferredFailure) is { } failure) Complete(failure);
            else if (Volatile.Read(ref _cancelRequested) != 0 && Interlocked.CompareExchange(ref _state, Abandoned, Waiting) == Waiting)
                Done.TrySetCanceled(_cancelToken);
        }

        public void Cancel(CancellationToken token)
        {
            _cancelToken = token;
            Interlocked.Exchange(ref _cancelRequested, 1);
            if (Interlocked.CompareExchange(ref _state, Abandoned, Waiting) == Waiting) Done.TrySetCanceled(token);
        }

        public void Complete(Exception? failure)
        {
            while (true)
            {
                var state = Volatile.Read(ref _state);
                if (state == Waiting)
                {
                    if (Interlocked.CompareExchange(ref _state, Completed, Waiting) != Waiting) continue;
                    if (failure is null) Done.TrySetResult(); else Done.TrySetException(failure);
                    return;
                }
                if (state != Filling || failure is null) return; // abandoned or already completed
                // The reader is writing into the buffer (a failure raised from another thread): let EndFill complete it.
                Interlocked.CompareExchange(ref _deferredFailure, failure, null);
                if (Volatile.Read(ref _state) == Filling) return;
            }
        }
    }
}
