using System.Buffers;
using System.Buffers.Binary;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Text;
using static Haven.Nbd.NbdProtocol;

namespace Haven.Nbd;

/// <summary>
/// Client for one NBD export (fixed newstyle handshake, structured replies, meta contexts).
/// Requests from concurrent callers are pipelined on the one connection: each carries a handle, a
/// background reader matches reply chunks to requests by handle and reads data straight into the
/// caller's buffer. A server error fails only its request (<see cref="NbdServerErrorException"/>);
/// a broken protocol or a lost connection fails everything (<see cref="NbdProtocolException"/>).
/// </summary>
public sealed partial class NbdClient : IAsyncDisposable
{
    /// <summary>What a request may carry when the server names no maximum (the spec's recommendation, also qemu's limit).</summary>
    public const int DefaultMaxRequestBytes = 32 << 20;
    private const int MaxOptionReplyBytes = 1 << 20;

    private readonly Socket _socket;
    private readonly SocketReader _in;
    private readonly string _where;
    private readonly Dictionary<string, uint> _contextIds = new(StringComparer.Ordinal);
    private ushort _transmissionFlags;

    private NbdClient(Socket socket, NbdEndpoint endpoint, string exportName)
    {
        _socket = socket;
        _in = new SocketReader(socket);
        Endpoint = endpoint;
        ExportName = exportName;
        _where = $"{endpoint} export '{exportName}'";
    }

    public NbdEndpoint Endpoint { get; }
    public string ExportName { get; }
    public long ExportSize { get; private set; }
    public bool IsReadOnly => (_transmissionFlags & FlagReadOnly) != 0;
    /// <summary>The server keeps several connections to this export coherent (flush on one is seen by all).</summary>
    public bool CanMultiConn => (_transmissionFlags & FlagCanMultiConn) != 0;
    public bool CanFlush => (_transmissionFlags & FlagSendFlush) != 0;
    public bool CanWriteZeroes => (_transmissionFlags & FlagSendWriteZeroes) != 0;
    /// <summary>Whether the server agreed to structured replies (needed for holes in reads and for block status).</summary>
    public bool StructuredReplies { get; private set; }
    /// <summary>Largest payload of one request: NBD_INFO_BLOCK_SIZE's maximum, capped at <see cref="DefaultMaxRequestBytes"/>.</summary>
    public int MaxRequestBytes { get; private set; } = DefaultMaxRequestBytes;
    /// <summary>Offsets and lengths should be multiples of this (1 unless the server says otherwise).</summary>
    public int MinBlockSize { get; private set; } = 1;
    public int PreferredBlockSize { get; private set; } = 4096;
    /// <summary>The metadata contexts the server accepted; every requested one is among them.</summary>
    public IReadOnlyCollection<string> MetaContexts => _contextIds.Keys;

    /// <summary>
    /// Connects, negotiates structured replies and <paramref name="metaContexts"/> (each must be offered,
    /// e.g. "base:allocation", "qemu:dirty-bitmap:NAME") and enters transmission with NBD_OPT_GO.
    /// </summary>
    public static async Task<NbdClient> ConnectAsync(NbdEndpoint endpoint, string exportName, IReadOnlyList<string> metaContexts, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        ArgumentNullException.ThrowIfNull(exportName);
        ArgumentNullException.ThrowIfNull(metaContexts);
        if (Encoding.UTF8.GetByteCount(exportName) > 4096) throw new ArgumentException("NBD export names are at most 4096 bytes", nameof(exportName));

        Socket socket;
        try
        {
            switch (endpoint)
            {
                case NbdEndpoint.Unix unix:
                    socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                    try { await socket.ConnectAsync(new UnixDomainSocketEndPoint(unix.Path), ct); }
                    catch { socket.Dispose(); throw; }
                    break;
                case NbdEndpoint.Tcp tcp:
                    socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true }; // request headers are tiny: no Nagle delay
                    try { await socket.ConnectAsync(tcp.Host, tcp.Port, ct); }
                    catch { socket.Dispose(); throw; }
                    break;
                default:
                    throw new ArgumentException("unknown endpoint kind " + endpoint.GetType().Name, nameof(endpoint));
            }
        }
        catch (SocketException e)
        {
            throw new NbdConnectionException($"cannot connect to NBD server at {endpoint}: {e.Message}", e);
        }

        var client = new NbdClient(socket, endpoint, exportName);
        try
        {
            await client.HandshakeAsync(metaContexts, ct);
        }
        catch (Exception e)
        {
            // A refused option leaves the stream in step: end politely (soft disconnect), as the spec asks.
            if (e is NbdOptionRefusedException) await client.TryAbortAsync();
            socket.Dispose();
            throw e switch
            {
                EndOfStreamException => new NbdProtocolException($"NBD server at {endpoint} closed the connection during the handshake", e),
                SocketException or IOException => new NbdProtocolException($"NBD handshake with {endpoint} failed: {e.Message}", e),
                _ => e,
            };
        }
        client.StartReader();
        return client;
    }

    private async Task HandshakeAsync(IReadOnlyList<string> metaContexts, CancellationToken ct)
    {
        await _in.EnsureAsync(18, ct);
        var hello = _in.Take(18);
        if (BinaryPrimitives.ReadUInt64BigEndian(hello) != InitPasswd)
            throw new NbdProtocolException($"{Endpoint} is not an NBD server (no NBDMAGIC greeting)");
        var magic = BinaryPrimitives.ReadUInt64BigEndian(hello[8..]);
        if (magic == OldstyleMagic) throw new NbdProtocolException($"NBD server at {Endpoint} speaks only oldstyle negotiation, which is not supported");
        if (magic != IHaveOpt) throw new NbdProtocolException($"NBD server at {Endpoint} sent an unknown handshake magic 0x{magic:x16}");
        var handshakeFlags = BinaryPrimitives.ReadUInt16BigEndian(hello[16..]);
        if ((handshakeFlags & FlagFixedNewstyle) == 0)
            throw new NbdProtocolException($"NBD server at {Endpoint} does not support fixed newstyle negotiation");
        var clientFlags = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(clientFlags, ClientFixedNewstyle | ((handshakeFlags & FlagNoZeroes) != 0 ? ClientNoZeroes : 0));
        await SendAllAsync(clientFlags, ct);

        // Structured replies: needed for block status, and they let reads skip holes and carry error text.
        await SendOptionAsync(OptStructuredReply, [], ct);
        var (reply, data) = await ReadOptionReplyAsync(OptStructuredReply, ct);
        if (reply == RepAck) StructuredReplies = true;
        else if (reply == RepErrUnsup) StructuredReplies = false;
        else throw OptionFailed(OptStructuredReply, reply, data);

        var wanted = metaContexts.Distinct(StringComparer.Ordinal).ToList();
        if (wanted.Count > 0)
        {
            if (!StructuredReplies)
                throw new NbdOptionRefusedException(OptionName(OptStructuredReply), "NBD_REP_ERR_UNSUP", "",
                    $"NBD server at {Endpoint} does not support structured replies, so it cannot serve meta contexts ({string.Join(", ", wanted)})");
            await NegotiateMetaContextsAsync(wanted, ct);
        }
        await GoAsync(ct);
    }

    private async Task NegotiateMetaContextsAsync(List<string> wanted, CancellationToken ct)
    {
        var name = Encoding.UTF8.GetBytes(ExportName);
        var queries = wanted.Select(Encoding.UTF8.GetBytes).ToList();
        var payload = new byte[4 + name.Length + 4 + queries.Sum(q => 4 + q.Length)];
        var p = payload.AsSpan();
        BinaryPrimitives.WriteUInt32BigEndian(p, (uint)name.Length);
        name.CopyTo(p[4..]);
        p = p[(4 + name.Length)..];
        BinaryPrimitives.WriteUInt32BigEndian(p, (uint)queries.Count);
        p = p[4..];
        foreach (var q in queries)
        {
            BinaryPrimitives.WriteUInt32BigEndian(p, (uint)q.Length);
            q.CopyTo(p[4..]);
            p = p[(4 + q.Length)..];
        }
        await SendOptionAsync(OptSetMetaContext, payload, ct);
        while (true)
        {
            var (reply, data) = await ReadOptionReplyAsync(OptSetMetaContext, ct);
            if (reply == RepAck) break;
            if (reply != RepMetaContext) throw OptionFailed(OptSetMetaContext, reply, data);
            if (data.Length < 4) throw new NbdProtocolException($"NBD server at {Endpoint} sent a short NBD_REP_META_CONTEXT");
            _contextIds[Encoding.UTF8.GetString(data, 4, data.Length - 4)] = BinaryPrimitives.ReadUInt32BigEndian(data);
        }
        foreach (var context in wanted)
        {
            if (_contextIds.ContainsKey(context)) continue;
            var hint = context.StartsWith("qemu:dirty-bitmap:", StringComparison.Ordinal)
                ? " (the bitmap must exist and be exported: qemu-nbd -B NAME, or nbd-server-add with \"bitmaps\")" : "";
            var offered = _contextIds.Count == 0 ? "none" : string.Join(", ", _contextIds.Keys);
            throw new NbdOptionRefusedException(OptionName(OptSetMetaContext), "not offered", "",
                $"NBD server at {Endpoint} does not offer meta context '{context}' for export '{ExportName}'{hint}; it accepted: {offered}");
        }
    }

    private async Task GoAsync(CancellationToken ct)
    {
        var name = Encoding.UTF8.GetBytes(ExportName);
        var payload = new byte[4 + name.Length + 2 + 2 * 2];
        BinaryPrimitives.WriteUInt32BigEndian(payload, (uint)name.Length);
        name.CopyTo(payload, 4);
        var infos = payload.AsSpan(4 + name.Length);
        BinaryPrimitives.WriteUInt16BigEndian(infos, 2);
        BinaryPrimitives.WriteUInt16BigEndian(infos[2..], InfoExport);
        BinaryPrimitives.WriteUInt16BigEndian(infos[4..], InfoBlockSize); // asking promises we honour the sizes
        await SendOptionAsync(OptGo, payload, ct);

        var haveExport = false;
        while (true)
        {
            var (reply, data) = await ReadOptionReplyAsync(OptGo, ct);
            if (reply == RepAck) break;
            if (reply != RepInfo) throw OptionFailed(OptGo, reply, data);
            if (data.Length < 2) throw new NbdProtocolException($"NBD server at {Endpoint} sent a short NBD_REP_INFO");
            var span = data.AsSpan();
            switch (BinaryPrimitives.ReadUInt16BigEndian(span))
            {
                case InfoExport when data.Length == 12:
                    var size = BinaryPrimitives.ReadUInt64BigEndian(span[2..]);
                    if (size > long.MaxValue) throw new NbdProtocolException($"NBD server at {Endpoint} reported an export size of {size} bytes");
                    ExportSize = (long)size;
                    _transmissionFlags = BinaryPrimitives.ReadUInt16BigEndian(span[10..]);
                    haveExport = true;
                    break;
                case InfoBlockSize when data.Length == 14:
                    var min = BinaryPrimitives.ReadUInt32BigEndian(span[2..]);
                    var preferred = BinaryPrimitives.ReadUInt32BigEndian(span[6..]);
                    var max = BinaryPrimitives.ReadUInt32BigEndian(span[10..]);
                    if (min == 0 || min > 64 * 1024 || (min & (min - 1)) != 0 || max < min)
                        throw new NbdProtocolException($"NBD server at {Endpoint} sent invalid block sizes (min {min}, preferred {preferred}, max {max})");
                    MinBlockSize = (int)min;
                    PreferredBlockSize = (int)Math.Clamp(preferred, min, (uint)DefaultMaxRequestBytes);
                    // Keep requests a multiple of the minimum so split requests stay aligned.
                    var cap = Math.Min(max, (uint)DefaultMaxRequestBytes);
                    MaxRequestBytes = (int)(cap - cap % min);
                    break;
                case InfoExport or InfoBlockSize:
                    throw new NbdProtocolException($"NBD server at {Endpoint} sent an NBD_REP_INFO of the wrong length ({data.Length} bytes)");
                default:
                    break; // name, description: not needed
            }
        }
        if (!haveExport) throw new NbdProtocolException($"NBD server at {Endpoint} finished NBD_OPT_GO without NBD_INFO_EXPORT");
    }

    private async Task TryAbortAsync()
    {
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(1));
            await SendOptionAsync(OptAbort, [], timeout.Token);
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (Exception e) when (e is SocketException or IOException or OperationCanceledException) { }
    }

    private async Task SendOptionAsync(uint option, byte[] data, CancellationToken ct)
    {
        var message = new byte[16 + data.Length];
        BinaryPrimitives.WriteUInt64BigEndian(message, IHaveOpt);
        BinaryPrimitives.WriteUInt32BigEndian(message.AsSpan(8), option);
        BinaryPrimitives.WriteUInt32BigEndian(message.AsSpan(12), (uint)data.Length);
        data.CopyTo(message, 16);
        await SendAllAsync(message, ct);
    }

    private async Task<(uint Reply, byte[] Data)> ReadOptionReplyAsync(uint option, CancellationToken ct)
    {
        await _in.EnsureAsync(20, ct);
        var header = _in.Take(20);
        var magic = BinaryPrimitives.ReadUInt64BigEndian(header);
        var echoed = BinaryPrimitives.ReadUInt32BigEndian(header[8..]);
        var reply = BinaryPrimitives.ReadUInt32BigEndian(header[12..]);
        var length = BinaryPrimitives.ReadUInt32BigEndian(header[16..]);
        if (magic != OptionReplyMagic) throw new NbdProtocolException($"NBD server at {Endpoint} sent a bad option reply magic 0x{magic:x16}");
        if (echoed != option) throw new NbdProtocolException($"NBD server at {Endpoint} answered {OptionName(echoed)} while {OptionName(option)} was asked");
        if (length > MaxOptionReplyBytes) throw new NbdProtocolException($"NBD server at {Endpoint} sent a {length}-byte reply to {OptionName(option)}");
        var data = new byte[length];
        await _in.ReadExactlyAsync(data, ct);
        return (reply, data);
    }

    private NbdException OptionFailed(uint option, uint reply, byte[] data)
    {
        if ((reply & RepErrBit) == 0)
            return new NbdProtocolException($"NBD server at {Endpoint} sent the unexpected {ReplyName(reply)} to {OptionName(option)}");
        var serverMessage = Encoding.UTF8.GetString(data);
        var said = serverMessage.Length > 0 ? $": {serverMessage}" : "";
        if (reply == RepErrUnknown)
            return new NbdExportNotFoundException(OptionName(option), ExportName, serverMessage, $"NBD server at {Endpoint} has no export named '{ExportName}'{said}");
        var why = reply switch
        {
            RepErrUnsup when option == OptGo => "the server is too old for NBD_OPT_GO (qemu 2.10 / nbd 3.15 or later needed)",
            RepErrUnsup => "the server does not support this option",
            RepErrPolicy => "refused by server policy",
            RepErrTlsReqd => "the server requires TLS, which this client does not implement",
            RepErrShutdown => "the server is shutting down",
            RepErrBlockSizeReqd => "the server requires block size constraints to be honoured",
            RepErrInvalid => "the server found the request invalid",
            _ => "refused",
        };
        return new NbdOptionRefusedException(OptionName(option), ReplyName(reply), serverMessage,
            $"NBD server at {Endpoint} refused {OptionName(option)} for export '{ExportName}': {ReplyName(reply)}, {why}{said}");
    }

    private async Task SendAllAsync(ReadOnlyMemory<byte> data, CancellationToken ct)
    {
        while (!data.IsEmpty)
        {
            var n = await _socket.SendAsync(data, SocketFlags.None, ct);
            data = data[n..];
        }
    }

    // ---- Public operations -------------------------------------------------------------------

    /// <summary>
    /// Fills <paramref name="buffer"/> from <paramref name="offset"/>. Holes the server reports arrive as
    /// zeroes; requests larger than <see cref="MaxRequestBytes"/> are split and sent together.
    /// </summary>
    public Task ReadAsync(long offset, Memory<byte> buffer, CancellationToken ct = default)
    {
        CheckRange(offset, buffer.Length);
        if (buffer.IsEmpty) return Task.CompletedTask;
        if (buffer.Length <= MaxRequestBytes) return RunAsync(new Request(NextHandle(), CmdRead, offset, (uint)buffer.Length) { Buffer = buffer }, default, ct);
        var tasks = new Task[(int)(((long)buffer.Length + MaxRequestBytes - 1) / MaxRequestBytes)];
        for (var i = 0; i < tasks.Length; i++)
        {
            var start = i * MaxRequestBytes;
            var part = buffer.Slice(start, Math.Min(MaxRequestBytes, buffer.Length - start));
            tasks[i] = RunAsync(new Request(NextHandle(), CmdRead, offset + start, (uint)part.Length) { Buffer = part }, default, ct);
        }
        return Task.WhenAll(tasks);
    }

    public Task WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken ct = default)
    {
        CheckRange(offset, data.Length);
        if (data.IsEmpty) return Task.CompletedTask;
        if (data.Length <= MaxRequestBytes) return RunAsync(new Request(NextHandle(), CmdWrite, offset, (uint)data.Length), data, ct);
        var tasks = new Task[(int)(((long)data.Length + MaxRequestBytes - 1) / MaxRequestBytes)];
        for (var i = 0; i < tasks.Length; i++)
        {
            var start = i * MaxRequestBytes;
            var part = data.Slice(start, Math.Min(MaxRequestBytes, data.Length - start));
            tasks[i] = RunAsync(new Request(NextHandle(), CmdWrite, offset + start, (uint)part.Length), part, ct);
        }
        return Task.WhenAll(tasks);
    }

    /// <summary>
    /// Zeroes a range; the server may punch a hole. Servers without NBD_CMD_WRITE_ZEROES get plain
    /// writes of zeroes instead.
    /// </summary>
    public async Task WriteZeroesAsync(long offset, long length, CancellationToken ct = default)
    {
        CheckRange(offset, length);
        if (!CanWriteZeroes)
        {
            await WriteZeroBuffersAsync(offset, length, ct);
            return;
        }
        // No payload, so the request size limit does not apply; 1 GiB steps fit the 32-bit length and any alignment.
        const long step = 1L << 30;
        var tasks = new List<Task>((int)((length + step - 1) / step));
        for (long done = 0; done < length; done += step)
            tasks.Add(RunAsync(new Request(NextHandle(), CmdWriteZeroes, offset + done, (uint)Math.Min(step, length - done)), default, ct));
        await Task.WhenAll(tasks);
    }

    private async Task WriteZeroBuffersAsync(long offset, long length, CancellationToken ct)
    {
        var size = (int)Math.Min(length, MaxRequestBytes);
        var zeroes = ArrayPool<byte>.Shared.Rent(size);
        try
        {
            zeroes.AsSpan(0, size).Clear();
            for (long done = 0; done < length; done += size)
                await WriteAsync(offset + done, zeroes.AsMemory(0, (int)Math.Min(size, length - done)), ct);
        }
        finally { ArrayPool<byte>.Shared.Return(zeroes); }
    }

    /// <summary>Makes every write the server has answered durable. A no-op when the server offers no flush (it has nothing to flush).</summary>
    public Task FlushAsync(CancellationToken ct = default)
        => CanFlush ? RunAsync(new Request(NextHandle(), CmdFlush, 0, 0), default, ct) : Task.CompletedTask;

    /// <summary>
    /// One NBD_CMD_BLOCK_STATUS for <paramref name="metaContext"/>: extents from <paramref name="offset"/>,
    /// contiguous, covering at most <paramref name="length"/> bytes (servers may answer for less; the
    /// last extent is clipped to the range). Use <see cref="MapAsync"/> for a whole range.
    /// </summary>
    public async Task<IReadOnlyList<NbdExtent>> GetBlockStatusAsync(string metaContext, long offset, long length, CancellationToken ct = default)
    {
        if (!_contextIds.TryGetValue(metaContext, out var id))
            throw new ArgumentException($"meta context '{metaContext}' was not negotiated for {_where} (pass it to ConnectAsync)", nameof(metaContext));
        CheckRange(offset, length);
        if (length == 0) return [];
        // The length field is 32 bits; 4 GiB - 64 KiB keeps any legal minimum block size aligned.
        var request = new Request(NextHandle(), CmdBlockStatus, offset, (uint)Math.Min(length, 0xFFFF_0000L)) { ContextId = id };
        await RunAsync(request, default, ct);
        return request.Extents!;
    }

    /// <summary>
    /// The status of every byte of [offset, offset + length) in <paramref name="metaContext"/>, as extents
    /// in order with adjacent extents of equal flags merged.
    /// </summary>
    public async IAsyncEnumerable<NbdExtent> MapAsync(string metaContext, long offset, long length, [EnumeratorCancellation] CancellationToken ct = default)
    {
        CheckRange(offset, length);
        if (offset + length > ExportSize)
            throw new ArgumentOutOfRangeException(nameof(length), $"range {offset}+{length} is beyond the end of {_where} ({ExportSize} bytes)");
        var end = offset + length;
        var position = offset;
        NbdExtent? pending = null;
        while (position < end)
        {
            // Never empty, lengths never zero: the reader refuses such replies, so this loop always advances.
            var extents = await GetBlockStatusAsync(metaContext, position, end - position, ct);
            foreach (var e in extents)
            {
                if (pending is { } p && p.Flags == e.Flags) pending = p with { Length = p.Length + e.Length };
                else
                {
                    if (pending is { } done) yield return done;
                    pending = e;
                }
            }
            position = extents[^1].End;
        }
        if (pending is { } last) yield return last;
    }

    private static void CheckRange(long offset, long length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        if (offset > long.MaxValue - length) throw new ArgumentOutOfRangeException(nameof(length), "offset + length overflows");
    }
}
