namespace Haven.Storage.S3;

/// <summary>The kinds of HTTP request an <see cref="S3ObjectStore"/> sends.</summary>
public enum S3RequestKind
{
    /// <summary>GetObject (whole object or a read into a buffer).</summary>
    Get,
    /// <summary>PutObject, plain or create-only (<c>If-None-Match: *</c>).</summary>
    Put,
    /// <summary>HeadObject.</summary>
    Head,
    /// <summary>ListObjectsV2, one page (up to 1000 keys).</summary>
    List,
    /// <summary>ListObjectVersions, one page.</summary>
    ListVersions,
    /// <summary>DeleteObject (of the current object or of one version).</summary>
    Delete,
    CreateMultipart,
    UploadPart,
    CompleteMultipart,
    AbortMultipart,
    /// <summary>PutObjectRetention (object lock).</summary>
    PutRetention,
    /// <summary>GetObjectRetention (object lock).</summary>
    GetRetention,
    /// <summary>Bucket-level requests: HeadBucket, CreateBucket, GetBucketVersioning, GetObjectLockConfiguration.</summary>
    Bucket,
}

/// <summary>
/// How many HTTP requests an <see cref="S3ObjectStore"/> has sent, by kind: one per attempt, so a retried
/// request counts each time it is sent (and once in <see cref="S3RequestCounts.Retries"/> per retry).
/// Thread-safe and allocation-free per request; <see cref="Snapshot"/> gives an immutable copy, and two
/// snapshots subtract to the requests sent in between.
/// </summary>
public sealed class S3RequestCounters
{
    private const int KindCount = (int)S3RequestKind.Bucket + 1;
    private readonly long[] _counts = new long[KindCount];
    private long _retries;

    /// <summary>Counts one request of <paramref name="kind"/>; <paramref name="attempt"/> &gt; 1 also counts a retry.</summary>
    public void Count(S3RequestKind kind, int attempt = 1)
    {
        Interlocked.Increment(ref _counts[(int)kind]);
        if (attempt > 1) Interlocked.Increment(ref _retries);
    }

    /// <summary>The counts now. Each counter is read atomically; requests finishing meanwhile may or may not be in it.</summary>
    public S3RequestCounts Snapshot()
    {
        var c = new long[KindCount];
        for (var i = 0; i < KindCount; i++) c[i] = Interlocked.Read(ref _counts[i]);
        return S3RequestCounts.From(c, Interlocked.Read(ref _retries));
    }

    /// <summary>The kind of request behind an operation name used in <see cref="S3ObjectStore"/> (switch on a string: no allocation).</summary>
    internal static S3RequestKind KindOf(string op) => op switch
    {
        "GET" => S3RequestKind.Get,
        "PUT" or "CREATE" => S3RequestKind.Put,
        "HEAD" => S3RequestKind.Head,
        "LIST" => S3RequestKind.List,
        "LIST-VERSIONS" => S3RequestKind.ListVersions,
        "DELETE" => S3RequestKind.Delete,
        "CREATE-MULTIPART" => S3RequestKind.CreateMultipart,
        "PUT-PART" => S3RequestKind.UploadPart,
        "COMPLETE-MULTIPART" => S3RequestKind.CompleteMultipart,
        "ABORT-MULTIPART" => S3RequestKind.AbortMultipart,
        "PUT-RETENTION" => S3RequestKind.PutRetention,
        "GET-RETENTION" => S3RequestKind.GetRetention,
        _ => S3RequestKind.Bucket, // HEAD-BUCKET, CREATE-BUCKET, GET-VERSIONING, GET-OBJECT-LOCK
    };
}

/// <summary>An immutable copy of <see cref="S3RequestCounters"/>; <c>after - before</c> is what was sent in between.</summary>
public sealed record S3RequestCounts(
    long Get, long Put, long Head, long List, long ListVersions, long Delete,
    long CreateMultipart, long UploadPart, long CompleteMultipart, long AbortMultipart,
    long PutRetention, long GetRetention, long Bucket, long Retries)
{
    public static S3RequestCounts Zero { get; } = new(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);

    /// <summary>Create, upload-part, complete and abort requests of multipart uploads together.</summary>
    public long Multipart => CreateMultipart + UploadPart + CompleteMultipart + AbortMultipart;
    /// <summary>Object-lock retention requests (put and get).</summary>
    public long Retention => PutRetention + GetRetention;
    /// <summary>Every request sent, retries included.</summary>
    public long Total => Get + Put + Head + List + ListVersions + Delete + Multipart + Retention + Bucket;

    public long this[S3RequestKind kind] => kind switch
    {
        S3RequestKind.Get => Get,
        S3RequestKind.Put => Put,
        S3RequestKind.Head => Head,
        S3RequestKind.List => List,
        S3RequestKind.ListVersions => ListVersions,
        S3RequestKind.Delete => Delete,
        S3RequestKind.CreateMultipart => CreateMultipart,
        S3RequestKind.UploadPart => UploadPart,
        S3RequestKind.CompleteMultipart => CompleteMultipart,
        S3RequestKind.AbortMultipart => AbortMultipart,
        S3RequestKind.PutRetention => PutRetention,
        S3RequestKind.GetRetention => GetRetention,
        S3RequestKind.Bucket => Bucket,
        _ => throw new ArgumentOutOfRangeException(nameof(kind)),
    };

    /// <summary>The kinds with a non-zero count, in <see cref="S3RequestKind"/> order.</summary>
    public IEnumerable<(S3RequestKind Kind, long Count)> NonZero()
    {
        foreach (var kind in Enum.GetValues<S3RequestKind>())
            if (this[kind] != 0) yield return (kind, this[kind]);
    }

    internal static S3RequestCounts From(long[] c, long retries) => new(
        c[(int)S3RequestKind.Get], c[(int)S3RequestKind.Put], c[(int)S3RequestKind.Head], c[(int)S3RequestKind.List],
        c[(int)S3RequestKind.ListVersions], c[(int)S3RequestKind.Delete], c[(int)S3RequestKind.CreateMultipart],
        c[(int)S3RequestKind.UploadPart], c[(int)S3RequestKind.CompleteMultipart], c[(int)S3RequestKind.AbortMultipart],
        c[(int)S3RequestKind.PutRetention], c[(int)S3RequestKind.GetRetention], c[(int)S3RequestKind.Bucket], retries);

    public static S3RequestCounts operator -(S3RequestCounts after, S3RequestCounts before) => Combine(after, before, -1);

    public static S3RequestCounts operator +(S3RequestCounts a, S3RequestCounts b) => Combine(a, b, 1);

    private static S3RequestCounts Combine(S3RequestCounts a, S3RequestCounts b, int sign)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        return new(a.Get + sign * b.Get, a.Put + sign * b.Put, a.Head + sign * b.Head, a.List + sign * b.List,
            a.ListVersions + sign * b.ListVersions, a.Delete + sign * b.Delete, a.CreateMultipart + sign * b.CreateMultipart,
            a.UploadPart + sign * b.UploadPart, a.CompleteMultipart + sign * b.CompleteMultipart, a.AbortMultipart + sign * b.AbortMultipart,
            a.PutRetention + sign * b.PutRetention, a.GetRetention + sign * b.GetRetention, a.Bucket + sign * b.Bucket, a.Retries + sign * b.Retries);
    }

    public override string ToString()
        => $"{Total} requests ({string.Join(", ", NonZero().Select(k => $"{k.Kind} {k.Count}"))}{(Retries > 0 ? $"; {Retries} retries" : "")})";
}
