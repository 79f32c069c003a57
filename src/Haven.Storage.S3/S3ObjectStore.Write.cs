using System.Net;
using System.Security.Cryptography;
using Amazon.Runtime;
using Amazon.S3;
using Amazon.S3.Model;

namespace Haven.Storage.S3;

public sealed partial class S3ObjectStore
{
    /// <summary>One write path for create, create-with-retention and overwrite, single PUT or multipart.</summary>
    private async Task<bool> WriteAsync(string key, ReadOnlyMemory<byte> data, bool createOnly, ObjectRetention? retention, CancellationToken ct)
    {
        var versioned = createOnly && await IsVersionedAsync(ct);
        // A versioned bucket would store a second version rather than refuse (see ResolveVersionedCreateAsync):
        // answer the common "already there" case without uploading anything.
        if (versioned && await StatAsync(key, ct) is not null) return false;

        (bool Created, string? VersionId) result = data.Length > _settings.MultipartThreshold
            ? await CreateMultipartAsync(key, data, createOnly, versioned, retention, ct)
            : await PutObjectAsync(key, data, createOnly, retention, ct);
        if (result.Created && versioned) return await ResolveVersionedCreateAsync(key, result.VersionId, ct);
        return result.Created;
    }

    /// <summary>
    /// One PutObject, with <c>If-None-Match: *</c> when create-only (HTTP 412: the key exists). A retried
    /// attempt whose first try reached the store but lost its answer sees 412 and reports false although the
    /// object is this caller's: harmless for content-addressed objects, the case create-only is used for.
    /// </summary>
    private async Task<(bool, string?)> PutObjectAsync(string key, ReadOnlyMemory<byte> data, bool createOnly, ObjectRetention? retention, CancellationToken ct)
    {
        var full = _prefix + key;
        // S3 wants Content-MD5 on writes that set a retention.
        var md5 = retention is null ? null : Md5Base64(data.Span);
        return await RunAsync(createOnly ? "CREATE" : "PUT", key, async c =>
        {
            var request = new PutObjectRequest
            {
                BucketName = _bucket,
                Key = full,
                InputStream = StreamOver(data),
                AutoCloseStream = true,
                ContentType = "application/octet-stream",
            };
            if (createOnly) request.IfNoneMatch = "*";
            if (retention is not null)
            {
                request.ObjectLockMode = LockMode(retention.Mode);
                request.ObjectLockRetainUntilDate = retention.RetainUntil.UtcDateTime;
                request.MD5Digest = md5;
            }
            try
            {
                var response = await _s3.PutObjectAsync(request, c);
                return (true, response.VersionId);
            }
            catch (AmazonS3Exception e) when (createOnly && e.StatusCode == HttpStatusCode.PreconditionFailed) { return (false, (string?)null); }
        }, ct);
    }

    /// <summary>
    /// Multipart upload: parts of <see cref="S3Settings.PartSize"/> in parallel (bounded), then complete; any
    /// failure or cancellation aborts the upload so no parts are left billed and nothing becomes visible.
    /// <para>
    /// Create-only guarantee. <c>If-None-Match: *</c> is sent on CompleteMultipartUpload (AWS S3 honours it),
    /// but Ceph RGW 16 ignores it and silently replaces an existing object (checked by test). So the key is
    /// also checked (HEAD) before the upload starts and again just before completing, and the upload is
    /// aborted if the key exists. What remains on such a store: if two creators of the same large key both
    /// pass the last check before either completes, both get true and the later completion replaces the
    /// earlier one — atomically (readers never see a mix) but "exactly one creator wins" does not hold in that
    /// window (milliseconds). For content-addressed objects, the only large create-only objects, the contents
    /// are equal and nothing is lost. In a versioned bucket <see cref="ResolveVersionedCreateAsync"/> decides
    /// the winner afterwards instead, which closes the window.
    /// </para>
    /// </summary>
    private async Task<(bool, string?)> CreateMultipartAsync(string key, ReadOnlyMemory<byte> data, bool createOnly, bool versioned, ObjectRetention? retention, CancellationToken ct)
    {
        var full = _prefix + key;
        var checkExisting = createOnly && !versioned; // versioned: checked by the caller, resolved after
        if (checkExisting && await StatAsync(key, ct) is not null) return (false, null);

        var init = await RunAsync("CREATE-MULTIPART", key, c =>
        {
            var request = new InitiateMultipartUploadRequest { BucketName = _bucket, Key = full, ContentType = "application/octet-stream" };
            if (retention is not null)
            {
                request.ObjectLockMode = LockMode(retention.Mode);
                request.ObjectLockRetainUntilDate = retention.RetainUntil.UtcDateTime;
            }
            return _s3.InitiateMultipartUploadAsync(request, c);
        }, ct);
        var uploadId = init.UploadId;
        var finished = false;
        try
        {
            var partSize = _settings.PartSize;
            var parts = (int)((data.Length + partSize - 1) / partSize);
            var etags = new PartETag[parts];
            var options = new ParallelOptions { MaxDegreeOfParallelism = Math.Min(_settings.MaxConcurrentRequests, 8), CancellationToken = ct };
            await Parallel.ForAsync(0, parts, options, async (i, c) =>
            {
                var start = i * partSize;
                var slice = data.Slice((int)start, (int)Math.Min(partSize, data.Length - start));
                var md5 = retention is null ? null : Md5Base64(slice.Span);
                var response = await RunAsync("PUT-PART", key, cc => _s3.UploadPartAsync(new UploadPartRequest
                {
                    BucketName = _bucket,
                    Key = full,
                    UploadId = uploadId,
                    PartNumber = i + 1,
                    InputStream = StreamOver(slice),
                    MD5Digest = md5,
                }, cc), c);
                etags[i] = new PartETag(i + 1, response.ETag);
            });

            if (checkExisting && await StatAsync(key, ct) is not null) return (false, null);

            var attempts = 0;
            var result = await RunAsync("COMPLETE-MULTIPART", key, async c =>
            {
                attempts++;
                try
                {
                    var response = await _s3.CompleteMultipartUploadAsync(new CompleteMultipartUploadRequest
                    {
                        BucketName = _bucket,
                        Key = full,
                        UploadId = uploadId,
                        PartETags = [.. etags],
                        IfNoneMatch = createOnly ? "*" : null,
                    }, c);
                    return (true, response.VersionId);
                }
                catch (AmazonS3Exception e) when (createOnly && e.StatusCode == HttpStatusCode.PreconditionFailed) { return (false, (string?)null); }
                // An earlier attempt completed but its answer was lost: the upload is gone, the object is there.
                catch (AmazonS3Exception e) when (attempts > 1 && e.ErrorCode == "NoSuchUpload") { return (true, (string?)null); }
            }, ct);
            finished = true;
            return result;
        }
        finally
        {
            if (!finished) await AbortUploadAsync(full, uploadId);
        }
    }

    private async Task AbortUploadAsync(string full, string uploadId)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        Requests.Count(S3RequestKind.AbortMultipart);
        try { await _s3.AbortMultipartUploadAsync(new AbortMultipartUploadRequest { BucketName = _bucket, Key = full, UploadId = uploadId }, timeout.Token); }
        catch (Exception e) when (e is AmazonServiceException or HttpRequestException or IOException or OperationCanceledException)
        {
            // Best effort: a bucket lifecycle rule (AbortIncompleteMultipartUpload) is the backstop.
        }
    }

    /// <summary>
    /// Create-only in a versioned bucket. S3 stores every PUT as a new version, and Ceph RGW 16 ignores
    /// <c>If-None-Match: *</c> there (checked by test), so concurrent creators may all succeed at the HTTP
    /// level. The winner is decided afterwards from the key's version list (newest first, as S3 and RGW list
    /// them): the oldest version since the newest delete marker wins. A loser deletes its own version and
    /// returns false, so exactly one creator gets true and, once the losers have cleaned up, the current
    /// version is the winner's. Remaining gaps: until a loser's cleanup completes, readers may see the loser's
    /// data (whole, never mixed); and a loser whose version carries a retention cannot delete it, so it stays
    /// as the current version. Both only matter when creators of one key write different bytes, which
    /// content-addressed objects never do.
    /// </summary>
    private async Task<bool> ResolveVersionedCreateAsync(string key, string? ours, CancellationToken ct)
    {
        if (ours is null or "null") return true; // versioning suspended: plain overwrite semantics
        var versions = await ListKeyVersionsAsync(key, ct);
        string? oldest = null;
        var oursCurrent = false;
        foreach (var v in versions)
        {
            if (v.IsDeleteMarker == true) break;
            oldest = v.VersionId;
            if (v.VersionId == ours) oursCurrent = true;
        }
        // Not in the current generation: deleted after we wrote it, which is a completed create followed by a delete.
        if (!oursCurrent || oldest == ours) return true;
        try { await DeleteVersionAsync(key, ours, ct); }
        catch (ObjectLockedException) { }
        return false;
    }

    private static ObjectLockMode LockMode(RetentionMode mode)
        => mode == RetentionMode.Compliance ? ObjectLockMode.Compliance : ObjectLockMode.Governance;

    private static string Md5Base64(ReadOnlySpan<byte> data)
    {
        Span<byte> hash = stackalloc byte[16];
        MD5.HashData(data, hash);
        return Convert.ToBase64String(hash);
    }
}
