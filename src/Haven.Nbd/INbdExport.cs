namespace Haven.Nbd;

/// <summary>
/// A read-only disk that <see cref="NbdServer"/> serves. Implementations are called concurrently (a client
/// pipelines requests), always with ranges inside [0, <see cref="Size"/>).
/// </summary>
public interface INbdExport
{
    /// <summary>The export's name in the handshake (clients may also ask for the default export, "").</summary>
    string Name { get; }

    long Size { get; }

    /// <summary>Fills <paramref name="into"/> with the bytes at <paramref name="offset"/>. Throws to fail the request (EIO).</summary>
    ValueTask ReadAsync(long offset, Memory<byte> into, CancellationToken ct);

    /// <summary>
    /// base:allocation of [offset, offset + length) as consecutive runs from <paramref name="offset"/> on
    /// (flags <see cref="NbdFlags.Hole"/> | <see cref="NbdFlags.Zero"/> where nothing is stored). It may stop
    /// before the end; it returns at least one run.
    /// </summary>
    IEnumerable<NbdExtent> GetAllocation(long offset, long length);
}
