using System.Net.Sockets;

namespace Haven.Nbd;

/// <summary>
/// Buffered reads from the connection. Headers come out of a small buffer; payloads at least
/// <see cref="DirectThreshold"/> long go straight from the socket into the destination, so a
/// multi-MiB read costs at most one buffer's worth of copying.
/// </summary>
internal sealed class SocketReader(Socket socket)
{
    private const int DirectThreshold = 16 * 1024;
    private readonly byte[] _buffer = new byte[64 * 1024];
    private int _start, _end;

    public int Buffered => _end - _start;

    /// <summary>Makes sure <paramref name="count"/> bytes (at most 64 KiB) are buffered; then <see cref="Take"/> them.</summary>
    public ValueTask EnsureAsync(int count, CancellationToken ct)
        => _end - _start >= count ? ValueTask.CompletedTask : FillAsync(count, ct);

    private async ValueTask FillAsync(int count, CancellationToken ct)
    {
        if (_end - _start == 0) _start = _end = 0;
        else if (_buffer.Length - _start < count)
        {
            Buffer.BlockCopy(_buffer, _start, _buffer, 0, _end - _start);
            _end -= _start;
            _start = 0;
        }
        while (_end - _start < count)
        {
            var n = await socket.ReceiveAsync(_buffer.AsMemory(_end), SocketFlags.None, ct);
            if (n == 0) throw new EndOfStreamException();
            _end += n;
        }
    }

    /// <summary>Consumes <paramref name="count"/> bytes made available by <see cref="EnsureAsync"/>.</summary>
    public ReadOnlySpan<byte> Take(int count)
    {
        var span = _buffer.AsSpan(_start, count);
        _start += count;
        return span;
    }

    public ReadOnlySpan<byte> Peek(int count) => _buffer.AsSpan(_start, count);

    public async ValueTask ReadExactlyAsync(Memory<byte> destination, CancellationToken ct)
    {
        if (destination.Length < DirectThreshold && destination.Length <= _buffer.Length)
        {
            await EnsureAsync(destination.Length, ct);
            Take(destination.Length).CopyTo(destination.Span);
            return;
        }
        var buffered = Math.Min(_end - _start, destination.Length);
        Take(buffered).CopyTo(destination.Span);
        destination = destination[buffered..];
        while (!destination.IsEmpty)
        {
            var n = await socket.ReceiveAsync(destination, SocketFlags.None, ct);
            if (n == 0) throw new EndOfStreamException();
            destination = destination[n..];
        }
    }

    /// <summary>Reads and drops <paramref name="count"/> bytes (a payload nobody waits for any more).</summary>
    public async ValueTask SkipAsync(long count, CancellationToken ct)
    {
        while (count > 0)
        {
            if (_end == _start)
            {
                _start = _end = 0;
                var n = await socket.ReceiveAsync(_buffer.AsMemory(), SocketFlags.None, ct);
                if (n == 0) throw new EndOfStreamException();
                _end = n;
            }
            var take = (int)Math.Min(count, _end - _start);
            _start += take;
            count -= take;
        }
    }
}
