using System.Buffers;
using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text;
using static Haven.Nbd.NbdProtocol;

namespace Haven.Nbd;

/// <summary>
/// One client of <see cref="NbdServer"/>: the option haggling, then transmission. Every client byte is checked
/// before it is used (lengths against what was received and against limits); a client that breaks the protocol
/// is disconnected, one whose request is only wrong gets an error reply.
/// </summary>
internal sealed class NbdServerConnection(Socket socket, INbdExport export, NbdServerOptions options)
{
    private const int MaxOptionBytes = 64 * 1024;
    private const uint BaseAllocationId = 1;
    private const uint ErrPerm = 1, ErrIo = 5, ErrInvalid = 22, ErrNotSup = 95;
    private const ushort CmdTrim = 4, CmdCache = 5;
    private const ushort CmdFlagReqOne = 1 << 3;
    private const uint OptList = 3, OptStartTls = 5, OptInfo = 6, OptListMetaContext = 9;
    private const uint RepServer = 2;
    private const ushort InfoName = 1;

    private readonly SocketReader _in = new(socket);
    private readonly SemaphoreSlim _sendLock = new(1, 1);
    private bool _structured, _noZeroes, _baseAllocation;

    private ushort TransmissionFlags => FlagHasFlags | FlagReadOnly | FlagSendFlush | FlagCanMultiConn;

    public async Task RunAsync(CancellationToken ct)
    {
        try
        {
            if (await HandshakeAsync(ct)) await TransmitAsync(ct);
        }
        catch (Exception e) when (e is EndOfStreamException or SocketException or OperationCanceledException or ObjectDisposedException) { }
        catch (NbdClientViolationException e) { options.Log?.Invoke($"NBD export '{export.Name}': client dropped: {e.Message}"); }
    }

    // ---- handshake ------------------------------------------------------------------------------------

    /// <summary>True when the client entered transmission; false when it aborted or asked for an export we do not have.</summary>
    private async Task<bool> HandshakeAsync(CancellationToken ct)
    {
        var hello = new byte[18];
        BinaryPrimitives.WriteUInt64BigEndian(hello, InitPasswd);
        BinaryPrimitives.WriteUInt64BigEndian(hello.AsSpan(8), IHaveOpt);
        BinaryPrimitives.WriteUInt16BigEndian(hello.AsSpan(16), FlagFixedNewstyle | FlagNoZeroes);
        await SendAsync(hello, ct);

        await _in.EnsureAsync(4, ct);
        var clientFlags = BinaryPrimitives.ReadUInt32BigEndian(_in.Take(4));
        if ((clientFlags & ~(ClientFixedNewstyle | ClientNoZeroes)) != 0) throw new NbdClientViolationException($"unknown client flags 0x{clientFlags:x}");
        if ((clientFlags & ClientFixedNewstyle) == 0) throw new NbdClientViolationException("the client does not speak fixed newstyle");
        _noZeroes = (clientFlags & ClientNoZeroes) != 0;

        while (true)
        {
            await _in.EnsureAsync(16, ct);
            var header = _in.Take(16);
            if (BinaryPrimitives.ReadUInt64BigEndian(header) != IHaveOpt) throw new NbdClientViolationException("an option without IHAVEOPT");
            var option = BinaryPrimitives.ReadUInt32BigEndian(header[8..]);
            var length = BinaryPrimitives.ReadUInt32BigEndian(header[12..]);
            if (length > MaxOptionBytes) throw new NbdClientViolationException($"option {OptionName(option)} of {length} bytes");
            var data = new byte[length];
            await _in.ReadExactlyAsync(data, ct);

            switch (option)
            {
                case OptExportName:
                    if (!IsOurs(Encoding.UTF8.GetString(data))) return false; // the protocol's only answer: close
                    var reply = new byte[_noZeroes ? 10 : 134];
                    BinaryPrimitives.WriteUInt64BigEndian(reply, (ulong)export.Size);
                    BinaryPrimitives.WriteUInt16BigEndian(reply.AsSpan(8), TransmissionFlags);
                    await SendAsync(reply, ct);
                    return true;
                case OptAbort:
                    await OptionReplyAsync(option, RepAck, [], ct);
                    return false;
                case OptList:
                    if (length != 0) { await OptionErrorAsync(option, RepErrInvalid, "NBD_OPT_LIST takes no data", ct); break; }
                    var name = Encoding.UTF8.GetBytes(export.Name);
                    var server = new byte[4 + name.Length];
                    BinaryPrimitives.WriteUInt32BigEndian(server, (uint)name.Length);
                    name.CopyTo(server, 4);
                    await OptionReplyAsync(option, RepServer, server, ct);
                    await OptionReplyAsync(option, RepAck, [], ct);
                    break;
                case OptInfo or OptGo:
                    if (await InfoAsync(option, data, ct) && option == OptGo) return true;
                    break;
                case OptStructuredReply:
                    if (length != 0) { await OptionErrorAsync(option, RepErrInvalid, "NBD_OPT_STRUCTURED_REPLY takes no data", ct); break; }
                    _structured = true;
                    await OptionReplyAsync(option, RepAck, [], ct);
                    break;
                case OptListMetaContext or OptSetMetaContext:
                    await MetaContextAsync(option, data, ct);
                    break;
                case OptStartTls:
                    await OptionErrorAsync(option, RepErrPolicy, "this server has no TLS: it listens on a local socket", ct);
                    break;
                default:
                    await OptionErrorAsync(option, RepErrUnsup, $"option {option} is not supported", ct);
                    break;
            }
        }
    }

    private bool IsOurs(string name) => name.Length == 0 || name == export.Name;

    /// <summary>NBD_OPT_INFO / NBD_OPT_GO: the export's size and flags, its block sizes, its name if asked. True when answered with ACK.</summary>
    private async Task<bool> InfoAsync(uint option, byte[] data, CancellationToken ct)
    {
        var span = data.AsSpan();
        if (span.Length < 6) { await OptionErrorAsync(option, RepErrInvalid, "request too short", ct); return false; }
        var nameLength = BinaryPrimitives.ReadUInt32BigEndian(span);
        if (nameLength > span.Length - 6) { await OptionErrorAsync(option, RepErrInvalid, "export name longer than the request", ct); return false; }
        var name = Encoding.UTF8.GetString(span.Slice(4, (int)nameLength));
        var requests = BinaryPrimitives.ReadUInt16BigEndian(span[(4 + (int)nameLength)..]);
        if (span.Length != 6 + nameLength + 2 * requests) { await OptionErrorAsync(option, RepErrInvalid, "information request count does not match its length", ct); return false; }
        if (!IsOurs(name)) { await OptionErrorAsync(option, RepErrUnknown, $"export '{name}' not present", ct); return false; }
        var wanted = new HashSet<ushort>();
        for (var i = 0; i < requests; i++) wanted.Add(BinaryPrimitives.ReadUInt16BigEndian(span[(6 + (int)nameLength + 2 * i)..]));

        var info = new byte[12];
        BinaryPrimitives.WriteUInt16BigEndian(info, InfoExport);
        BinaryPrimitives.WriteUInt64BigEndian(info.AsSpan(2), (ulong)export.Size);
        BinaryPrimitives.WriteUInt16BigEndian(info.AsSpan(10), TransmissionFlags);
        await OptionReplyAsync(option, RepInfo, info, ct);
        // Block sizes go out whether asked or not: a minimum of 1 constrains nobody, and the maximum tells
        // clients how large a read may be.
        var sizes = new byte[14];
        BinaryPrimitives.WriteUInt16BigEndian(sizes, InfoBlockSize);
        BinaryPrimitives.WriteUInt32BigEndian(sizes.AsSpan(2), 1);
        BinaryPrimitives.WriteUInt32BigEndian(sizes.AsSpan(6), 4096);
        BinaryPrimitives.WriteUInt32BigEndian(sizes.AsSpan(10), (uint)options.MaxRequestBytes);
        await OptionReplyAsync(option, RepInfo, sizes, ct);
        if (wanted.Contains(InfoName))
        {
            var exportName = Encoding.UTF8.GetBytes(export.Name);
            var named = new byte[2 + exportName.Length];
            BinaryPrimitives.WriteUInt16BigEndian(named, InfoName);
            exportName.CopyTo(named, 2);
            await OptionReplyAsync(option, RepInfo, named, ct);
        }
        await OptionReplyAsync(option, RepAck, [], ct);
        return true;
    }

    /// <summary>NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT: only base:allocation exists.</summary>
    private async Task MetaContextAsync(uint option, byte[] data, CancellationToken ct)
    {
        if (!_structured) { await OptionErrorAsync(option, RepErrInvalid, "negotiate structured replies first", ct); return; }
        var span = data.AsSpan();
        if (span.Length < 8) { await OptionErrorAsync(option, RepErrInvalid, "request too short", ct); return; }
        var nameLength = BinaryPrimitives.ReadUInt32BigEndian(span);
        if (nameLength > span.Length - 8) { await OptionErrorAsync(option, RepErrInvalid, "export name longer than the request", ct); return; }
        var name = Encoding.UTF8.GetString(span.Slice(4, (int)nameLength));
        var at = 4 + (int)nameLength;
        var count = BinaryPrimitives.ReadUInt32BigEndian(span[at..]);
        at += 4;
        var queries = new List<string>();
        for (var i = 0; i < count; i++)
        {
            if (span.Length - at < 4) { await OptionErrorAsync(option, RepErrInvalid, "query count does not match the request", ct); return; }
            var length = BinaryPrimitives.ReadUInt32BigEndian(span[at..]);
            at += 4;
            if (length > span.Length - at) { await OptionErrorAsync(option, RepErrInvalid, "query longer than the request", ct); return; }
            queries.Add(Encoding.UTF8.GetString(span.Slice(at, (int)length)));
            at += (int)length;
        }
        if (at != span.Length) { await OptionErrorAsync(option, RepErrInvalid, "bytes after the last query", ct); return; }
        if (!IsOurs(name)) { await OptionErrorAsync(option, RepErrUnknown, $"export '{name}' not present", ct); return; }

        // LIST with no query, or a query for the whole "base:" namespace, lists what there is.
        var match = queries.Any(q => q == NbdMetaContexts.BaseAllocation || option == OptListMetaContext && q == "base:")
            || option == OptListMetaContext && queries.Count == 0;
        if (option == OptSetMetaContext) _baseAllocation = match;
        if (match)
        {
            var contextName = Encoding.UTF8.GetBytes(NbdMetaContexts.BaseAllocation);
            var reply = new byte[4 + contextName.Length];
            BinaryPrimitives.WriteUInt32BigEndian(reply, BaseAllocationId);
            contextName.CopyTo(reply, 4);
            await OptionReplyAsync(option, RepMetaContext, reply, ct);
        }
        await OptionReplyAsync(option, RepAck, [], ct);
    }

    private Task OptionErrorAsync(uint option, uint error, string message, CancellationToken ct)
        => OptionReplyAsync(option, error, Encoding.UTF8.GetBytes(message), ct);

    private async Task OptionReplyAsync(uint option, uint type, byte[] data, CancellationToken ct)
    {
        var reply = new byte[20 + data.Length];
        BinaryPrimitives.WriteUInt64BigEndian(reply, OptionReplyMagic);
        BinaryPrimitives.WriteUInt32BigEndian(reply.AsSpan(8), option);
        BinaryPrimitives.WriteUInt32BigEndian(reply.AsSpan(12), type);
        BinaryPrimitives.WriteUInt32BigEndian(reply.AsSpan(16), (uint)data.Length);
        data.CopyTo(reply, 20);
        await SendAsync(reply, ct);
    }

    // ---- transmission ---------------------------------------------------------------------------------

    private async Task TransmitAsync(CancellationToken ct)
    {
        using var inFlight = new SemaphoreSlim(options.MaxInFlight, options.MaxInFlight);
        var running = new List<Task>();
        try
        {
            while (true)
            {
                await _in.EnsureAsync(28, ct);
                var header = _in.Take(28);
                if (BinaryPrimitives.ReadUInt32BigEndian(header) != RequestMagic) throw new NbdClientViolationException("a request without the request magic");
                var flags = BinaryPrimitives.ReadUInt16BigEndian(header[4..]);
                var type = BinaryPrimitives.ReadUInt16BigEndian(header[6..]);
                var handle = BinaryPrimitives.ReadUInt64BigEndian(header[8..]);
                var offset = BinaryPrimitives.ReadUInt64BigEndian(header[16..]);
                var length = BinaryPrimitives.ReadUInt32BigEndian(header[24..]);

                switch (type)
                {
                    case CmdDisc:
                        return;
                    case CmdWrite:
                        // The payload follows the header whatever the answer: read past it, then refuse.
                        if (length > options.MaxRequestBytes) throw new NbdClientViolationException($"a write of {length} bytes");
                        await _in.SkipAsync(length, ct);
                        await ErrorReplyAsync(handle, ErrPerm, "the export is read-only", ct);
                        continue;
                    case CmdTrim or CmdWriteZeroes:
                        await ErrorReplyAsync(handle, ErrPerm, "the export is read-only", ct);
                        continue;
                    case CmdFlush or CmdCache:
                        await ErrorReplyAsync(handle, 0, null, ct); // nothing to flush; caching is the export's business
                        continue;
                    case CmdRead or CmdBlockStatus:
                        break;
                    default:
                        await ErrorReplyAsync(handle, ErrInvalid, $"command {type} is not supported", ct);
                        continue;
                }
                if (length == 0 || offset > (ulong)export.Size || length > (ulong)export.Size - offset)
                {
                    await ErrorReplyAsync(handle, ErrInvalid, $"range {offset}+{length} is outside the export (0..{export.Size})", ct);
                    continue;
                }
                if (type == CmdBlockStatus)
                {
                    if (!_baseAllocation) await ErrorReplyAsync(handle, ErrInvalid, "no metadata context was negotiated", ct);
                    else await BlockStatusAsync(handle, (long)offset, length, (flags & CmdFlagReqOne) != 0, ct);
                    continue;
                }
                if (length > options.MaxRequestBytes)
                {
                    await ErrorReplyAsync(handle, ErrInvalid, $"a read of {length} bytes is larger than {options.MaxRequestBytes}", ct);
                    continue;
                }
                await inFlight.WaitAsync(ct);
                running.RemoveAll(t => t.IsCompleted);
                running.Add(Task.Run(async () =>
                {
                    try { await ReadAsync(handle, (long)offset, (int)length, ct); }
                    finally { inFlight.Release(); }
                }, CancellationToken.None));
            }
        }
        finally
        {
            // Replies still being sent finish (or fail on the closed socket) before the connection goes.
            try { await Task.WhenAll(running); } catch { }
        }
    }

    private async Task ReadAsync(ulong handle, long offset, int length, CancellationToken ct)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(length);
        try
        {
            try { await export.ReadAsync(offset, buffer.AsMemory(0, length), ct); }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                options.Log?.Invoke($"NBD export '{export.Name}': read of {length} bytes at {offset} failed: {e.Message}");
                await ErrorReplyAsync(handle, ErrIo, e.Message, ct);
                return;
            }
            var header = new byte[_structured ? 28 : 16];
            if (_structured)
            {
                WriteChunkHeader(header, ReplyFlagDone, ReplyTypeOffsetData, handle, 8 + length);
                BinaryPrimitives.WriteUInt64BigEndian(header.AsSpan(20), (ulong)offset);
            }
            else WriteSimpleHeader(header, 0, handle);
            await SendAsync(header, buffer.AsMemory(0, length), ct);
        }
        finally { ArrayPool<byte>.Shared.Return(buffer); }
    }

    private async Task BlockStatusAsync(ulong handle, long offset, uint length, bool onlyOne, CancellationToken ct)
    {
        // Runs from the export, clipped to the request and merged where flags repeat.
        var runs = new List<(long Length, uint Flags)>();
        var at = offset;
        var end = offset + length;
        foreach (var e in export.GetAllocation(offset, length))
        {
            if (e.Offset != at || e.Length <= 0) throw new InvalidOperationException($"export '{export.Name}' gave allocation run {e.Offset}+{e.Length} where {at} was next");
            var take = Math.Min(e.End, end) - at;
            if (runs.Count > 0 && runs[^1].Flags == e.Flags) runs[^1] = (runs[^1].Length + take, e.Flags);
            else runs.Add((take, e.Flags));
            at += take;
            if (at >= end || onlyOne && runs.Count > 1) break;
        }
        if (onlyOne && runs.Count > 1) runs.RemoveRange(1, runs.Count - 1);
        var payload = new byte[4 + 8 * runs.Count];
        BinaryPrimitives.WriteUInt32BigEndian(payload, BaseAllocationId);
        for (var i = 0; i < runs.Count; i++)
        {
            BinaryPrimitives.WriteUInt32BigEndian(payload.AsSpan(4 + 8 * i), (uint)runs[i].Length);
            BinaryPrimitives.WriteUInt32BigEndian(payload.AsSpan(8 + 8 * i), runs[i].Flags);
        }
        var header = new byte[20];
        WriteChunkHeader(header, ReplyFlagDone, ReplyTypeBlockStatus, handle, payload.Length);
        await SendAsync(header, payload, ct);
    }

    /// <summary>A reply without data: success (error 0) or an error, with a message when replies are structured.</summary>
    private async Task ErrorReplyAsync(ulong handle, uint error, string? message, CancellationToken ct)
    {
        if (!_structured || error == 0)
        {
            if (_structured)
            {
                var done = new byte[20];
                WriteChunkHeader(done, ReplyFlagDone, ReplyTypeNone, handle, 0);
                await SendAsync(done, ct);
                return;
            }
            var simple = new byte[16];
            WriteSimpleHeader(simple, error, handle);
            await SendAsync(simple, ct);
            return;
        }
        var text = Encoding.UTF8.GetBytes(message ?? "");
        if (text.Length > 4096) text = text[..4096];
        var reply = new byte[20 + 6 + text.Length];
        WriteChunkHeader(reply, ReplyFlagDone, ReplyTypeError, handle, 6 + text.Length);
        BinaryPrimitives.WriteUInt32BigEndian(reply.AsSpan(20), error);
        BinaryPrimitives.WriteUInt16BigEndian(reply.AsSpan(24), (ushort)text.Length);
        text.CopyTo(reply, 26);
        await SendAsync(reply, ct);
    }

    private static void WriteChunkHeader(Span<byte> into, ushort flags, ushort type, ulong handle, int length)
    {
        BinaryPrimitives.WriteUInt32BigEndian(into, StructuredReplyMagic);
        BinaryPrimitives.WriteUInt16BigEndian(into[4..], flags);
        BinaryPrimitives.WriteUInt16BigEndian(into[6..], type);
        BinaryPrimitives.WriteUInt64BigEndian(into[8..], handle);
        BinaryPrimitives.WriteUInt32BigEndian(into[16..], (uint)length);
    }

    private static void WriteSimpleHeader(Span<byte> into, uint error, ulong handle)
    {
        BinaryPrimitives.WriteUInt32BigEndian(into, SimpleReplyMagic);
        BinaryPrimitives.WriteUInt32BigEndian(into[4..], error);
        BinaryPrimitives.WriteUInt64BigEndian(into[8..], handle);
    }

    private Task SendAsync(ReadOnlyMemory<byte> bytes, CancellationToken ct) => SendAsync(bytes, ReadOnlyMemory<byte>.Empty, ct);

    /// <summary>One reply goes out whole (header then payload) before another starts.</summary>
    private async Task SendAsync(ReadOnlyMemory<byte> header, ReadOnlyMemory<byte> payload, CancellationToken ct)
    {
        await _sendLock.WaitAsync(ct);
        try
        {
            await SendAllAsync(header, ct);
            if (!payload.IsEmpty) await SendAllAsync(payload, ct);
        }
        finally { _sendLock.Release(); }
    }

    private async Task SendAllAsync(ReadOnlyMemory<byte> bytes, CancellationToken ct)
    {
        while (!bytes.IsEmpty)
        {
            var n = await socket.SendAsync(bytes, SocketFlags.None, ct);
            bytes = bytes[n..];
        }
    }
}

/// <summary>The client broke the protocol; its connection is closed.</summary>
internal sealed class NbdClientViolationException(string message) : Exception(message);
