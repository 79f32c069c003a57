namespace Haven.Nbd;

/// <summary>Where an NBD server listens.</summary>
public abstract record NbdEndpoint
{
    private NbdEndpoint() { }

    public sealed record Unix(string Path) : NbdEndpoint
    {
        public override string ToString() => "unix:" + Path;
    }

    public sealed record Tcp(string Host, int Port) : NbdEndpoint
    {
        public override string ToString() => Host.Contains(':') ? $"[{Host}]:{Port}" : $"{Host}:{Port}";
    }
}

/// <summary>One run of bytes with the same status flags in one metadata context.</summary>
public readonly record struct NbdExtent(long Offset, long Length, uint Flags)
{
    public long End => Offset + Length;
}

/// <summary>Status flags of the two metadata contexts Haven uses.</summary>
public static class NbdFlags
{
    /// <summary>base:allocation: the range is not allocated (reads as zero unless <see cref="Zero"/> is clear and the server says otherwise).</summary>
    public const uint Hole = 1;
    /// <summary>base:allocation: the range reads as zeroes.</summary>
    public const uint Zero = 2;
    /// <summary>qemu:dirty-bitmap:NAME: the range was written since the bitmap was started.</summary>
    public const uint Dirty = 1;
}

/// <summary>Names of the metadata contexts Haven asks for.</summary>
public static class NbdMetaContexts
{
    public const string BaseAllocation = "base:allocation";
    public static string DirtyBitmap(string bitmapName) => "qemu:dirty-bitmap:" + bitmapName;
}
