using System.Net;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Amazon.S3;
using Amazon.S3.Model;

namespace Haven.Storage.S3;

/// <summary>
/// An <see cref="IObjectStore"/> (and <see cref="IObjectLockStore"/>) in an S3 bucket, under an optional
/// prefix. Every request goes through <see cref="RunAsync{T}"/>: at most
/// <see cref="S3Settings.MaxConcurrentRequests"/> in flight, retried with exponential backoff and jitter on
/// throttling, 5xx and connection failures, S3 errors mapped to <see cref="StoreException"/>s.
/// <para>
/// Create-only writes use <c>If-None-Match: *</c>. Where the store does not honour it (Ceph RGW 16: on
/// CompleteMultipartUpload, and on any PUT into a versioned bucket) the remaining guarantees are
/// described at <see cref="CreateMultipartAsync"/> and <see cref="ResolveVersionedCreateAsync"/>.
/// </para>
/// </summary>
public sealed partial class S3ObjectStore : IObjectLockStore, IDisposable
{
    private readonly AmazonS3Client _s3;
    private readonly S3Settings _settings;
    private readonly string _bucket;
    private readonly string _prefix; // "" or "prefix/"
    private readonly SemaphoreSlim _gate;
    private bool? _versioned;

    public S3ObjectStore(S3Location location, S3Settings settings)
    {
        ArgumentNullException.ThrowIfNull(location);
        ArgumentNullException.ThrowIfNull(settings);
        settings.Check();
        Location = location;
        _settings = settings;
        _bucket = location.Bucket;
        _prefix = location.Prefix.Length == 0 ? "" : location.Prefix + "/";
        _gate = new SemaphoreSlim(settings.MaxConcurrentRequests, settings.MaxConcurrentRequests);
        _s3 = settings.CreateClient();
    }

    public S3Location Location { get; }

    public override string ToString() => Location.ToString();

    public void Dispose()
    {
        _s3.Dispose();
        _gate.Dispose();
    }

    public Task<bool> TryCreateAsync(string key, ReadOnlyMemory<byte> data, CancellationToken ct = default)
    {
        ObjectKey.Validate(key);
        return WriteAsync(key, data, createOnly: true, retention: null, ct);
    }

    public async Task PutAsync(string key, ReadOnlyMemory<byte> data, CancellationToken ct = default)
    {
        ObjectKey.Validate(key);
        await WriteAsync(key, data, createOnly: false, retention: null, ct);
    }

    public async Task<byte[]?> GetAsync(string key, CancellationToken ct = default)
    {
        ObjectKey.Validate(key);
        var full = _prefix + key;
        return await RunAsync("GET", key, async c =>
        {
            GetObjectResponse response;
            try { response = await _s3.GetObjectAsync(new GetObjectRequest { BucketName = _bucket, Key = full }, c); }
            catch (AmazonS3Exception e) when (IsMissingKey(e)) { return null; }
            using (response)
            {
                var length = response.ContentLength;
                if (length > Array.MaxLength) throw new StoreException($"object {key} is too large to read whole ({length} bytes)");
                var data = GC.AllocateUninitializedArray<byte>((int)length);
                var read = await ReadFullyAsync(response.ResponseStream, data, c);
                if (read != data.Length) throw new IOException($"the response ended after {read} of {length} bytes");
                return data;
            }
        }, ct);
    }

    public async Task<int> ReadAsync(string key, Memory<byte> into, CancellationToken ct = default)
    {
        ObjectKey.Validate(key);
        var full = _prefix + key;
        return await RunAsync("GET", key, async c =>
        {
            GetObjectResponse response;
            try { response = await _s3.GetObjectAsync(new GetObjectRequest { BucketName = _bucket, Key = full }, c); }
            catch (AmazonS3Exception e) when (IsMissingKey(e)) { return -1; }
            // Disposing before the body is read to its end (a short buffer) drops the connection: cheaper
            // than draining a large object.
            using (response)
            {
                var length = response.ContentLength;
                if (length > int.MaxValue) throw new StoreException($"object {key} is too large ({length} bytes)");
                var want = (int)Math.Min(length, into.Length);
                var read = await ReadFullyAsync(response.ResponseStream, into[..want], c);
                if (read != want) throw new IOException($"the response ended after {read} of {length} bytes");
                return (int)length;
            }
        }, ct);
    }

    public async Task<ObjectInfo?> StatAsync(string key, CancellationToken ct = default)
    {
        ObjectKey.Validate(key);
        var full = _prefix + key;
        return await RunAsync("HEAD", key, async c =>
        {
            try
            {
                var head = await _s3.GetObjectMetadataAsync(new GetObjectMetadataRequest { BucketName = _bucket, Key = full }, c);
                return new ObjectInfo(key, head.ContentLength, Utc(head.LastModified));
            }
            catch (AmazonS3Exception e) when (IsMissingKey(e)) { return null; }
        }, ct);
    }

    public async IAsyncEnumerable<ObjectInfo> ListAsync(string prefix, [EnumeratorCancellation] CancellationToken ct = default)
    {
        ObjectKey.ValidatePrefix(prefix);
        var full = _prefix + prefix;
        string? token = null;
        do
        {
            var request = new ListObjectsV2Request { BucketName = _bucket, Prefix = full.Length == 0 ? null : full, ContinuationToken = token, MaxKeys = 1000 };
            var page = await RunAsync("LIST", prefix.Length == 0 ? "(all)" : prefix, c => _s3.ListObjectsV2Async(request, c), ct);
            if (page.S3Objects is { } objects)
            {
                foreach (var o in objects)
                {
                    if (o.Key is not { } k || !k.StartsWith(_prefix, StringComparison.Ordinal)) continue;
                    var key = k[_prefix.Length..];
                    if (!ObjectKey.IsValid(key)) continue;
                    yield return new ObjectInfo(key, o.Size ?? 0, Utc(o.LastModified));
                }
            }
            token = page.IsTruncated == true ? page.NextContinuationToken : null;
        } while (token is not null);
    }

    public async Task<bool> DeleteAsync(string key, CancellationToken ct = default)
    {
        ObjectKey.Validate(key);
        if (await IsVersionedAsync(ct)) return await DeleteAllVersionsAsync(key, ct);
        // DeleteObject answers 204 whether or not the key existed: ask first.
        var existed = await StatAsync(key, ct) is not null;
        if (!existed) return false;
        var full = _prefix + key;
        await RunAsync("DELETE", key, c => _s3.DeleteObjectAsync(new DeleteObjectRequest { BucketName = _bucket, Key = full }, c), ct);
        return true;
    }

    /// <summary>
    /// Creates the bucket if it does not exist (with object lock, which also turns on versioning, when
    /// <paramref name="objectLock"/>). An existing bucket without object lock cannot get it afterwards here:
    /// that is a <see cref="StoreException"/>.
    /// </summary>
    public async Task EnsureBucketAsync(bool objectLock, CancellationToken ct = default)
    {
        var exists = await RunAsync("HEAD-BUCKET", "(bucket)", async c =>
        {
            try { await _s3.HeadBucketAsync(new HeadBucketRequest { BucketName = _bucket }, c); return true; }
            catch (AmazonS3Exception e) when (e.StatusCode == HttpStatusCode.NotFound) { return false; }
        }, ct);
        if (!exists)
        {
            await RunAsync("CREATE-BUCKET", "(bucket)", async c =>
            {
                try
                {
                    await _s3.PutBucketAsync(new PutBucketRequest { BucketName = _bucket, ObjectLockEnabledForBucket = objectLock ? true : null }, c);
                }
                catch (AmazonS3Exception e) when (e.ErrorCode is "BucketAlreadyOwnedByYou") { }
                return true;
            }, ct);
            _versioned = null;
        }
        if (objectLock && !await IsObjectLockEnabledAsync(ct))
            throw new StoreException($"bucket {_bucket} exists without object lock, which can only be enabled when a bucket is created; use a new bucket");
    }

    private static DateTimeOffset Utc(DateTime? time)
    {
        var t = time ?? DateTime.UnixEpoch;
        return new DateTimeOffset(t.Kind == DateTimeKind.Unspecified ? DateTime.SpecifyKind(t, DateTimeKind.Utc) : t.ToUniversalTime());
    }

    private static bool IsMissingKey(AmazonS3Exception e)
        => e.StatusCode == HttpStatusCode.NotFound && e.ErrorCode is not "NoSuchBucket";

    private static async Task<int> ReadFullyAsync(Stream stream, Memory<byte> into, CancellationToken ct)
    {
        var total = 0;
        while (total < into.Length)
        {
            var n = await stream.ReadAsync(into[total..], ct);
            if (n == 0) break;
            total += n;
        }
        return total;
    }

    /// <summary>A read-only stream over the caller's bytes; no copy when they live in an array.</summary>
    private static MemoryStream StreamOver(ReadOnlyMemory<byte> data)
        => MemoryMarshal.TryGetArray(data, out var segment) && segment.Array is not null
            ? new MemoryStream(segment.Array, segment.Offset, segment.Count, writable: false)
            : new MemoryStream(data.ToArray(), writable: false);

    private async Task<bool> IsVersionedAsync(CancellationToken ct)
    {
        if (_versioned is { } known) return known;
        var status = await RunAsync("GET-VERSIONING", "(bucket)", c => _s3.GetBucketVersioningAsync(new GetBucketVersioningRequest { BucketName = _bucket }, c), ct);
        // Suspended buckets still hold versions made while it was on: treat them as versioned.
        var versioned = status.VersioningConfig?.Status is { } s && (s == VersionStatus.Enabled || s == VersionStatus.Suspended);
        _versioned = versioned;
        return versioned;
    }
}
