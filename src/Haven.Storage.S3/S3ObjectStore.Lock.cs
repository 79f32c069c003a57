using System.Net;
using Amazon.S3;
using Amazon.S3.Model;

namespace Haven.Storage.S3;

/// <summary>Versions and object lock: deleting every version of a key, retentions.</summary>
public sealed partial class S3ObjectStore
{
    public async Task<bool> IsObjectLockEnabledAsync(CancellationToken ct = default)
    {
        return await RunAsync("GET-OBJECT-LOCK", "(bucket)", async c =>
        {
            try
            {
                var response = await _s3.GetObjectLockConfigurationAsync(new GetObjectLockConfigurationRequest { BucketName = _bucket }, c);
                return response.ObjectLockConfiguration?.ObjectLockEnabled == ObjectLockEnabled.Enabled;
            }
            catch (AmazonS3Exception e) when (e.ErrorCode == "ObjectLockConfigurationNotFoundError") { return false; }
        }, ct);
    }

    public Task<bool> TryCreateAsync(string key, ReadOnlyMemory<byte> data, ObjectRetention retention, CancellationToken ct = default)
    {
        ObjectKey.Validate(key);
        ArgumentNullException.ThrowIfNull(retention);
        return WriteAsync(key, data, createOnly: true, retention, ct);
    }

    public async Task ExtendRetentionAsync(string key, ObjectRetention retention, CancellationToken ct = default)
    {
        ObjectKey.Validate(key);
        ArgumentNullException.ThrowIfNull(retention);
        if (await StatAsync(key, ct) is null) throw new StoreException($"cannot extend the retention of {key} in {Location}: the object does not exist");
        var current = await ReadRetentionAsync(key, null, ct);
        if (current is not null && current.RetainUntil >= retention.RetainUntil) return;
        // Compliance cannot be weakened to governance; governance may be raised to compliance.
        var mode = current?.Mode == RetentionMode.Compliance ? RetentionMode.Compliance : retention.Mode;
        var full = _prefix + key;
        await RunAsync("PUT-RETENTION", key, c => _s3.PutObjectRetentionAsync(new PutObjectRetentionRequest
        {
            BucketName = _bucket,
            Key = full,
            Retention = new ObjectLockRetention
            {
                Mode = mode == RetentionMode.Compliance ? ObjectLockRetentionMode.Compliance : ObjectLockRetentionMode.Governance,
                RetainUntilDate = retention.RetainUntil.UtcDateTime,
            },
        }, c), ct);
    }

    public Task<ObjectRetention?> GetRetentionAsync(string key, CancellationToken ct = default)
    {
        ObjectKey.Validate(key);
        return ReadRetentionAsync(key, null, ct);
    }

    private async Task<ObjectRetention?> ReadRetentionAsync(string key, string? versionId, CancellationToken ct)
    {
        var full = _prefix + key;
        return await RunAsync("GET-RETENTION", key, async c =>
        {
            try
            {
                var response = await _s3.GetObjectRetentionAsync(new GetObjectRetentionRequest { BucketName = _bucket, Key = full, VersionId = versionId }, c);
                if (response.Retention is not { RetainUntilDate: { } until } r) return null;
                var mode = r.Mode == ObjectLockRetentionMode.Compliance ? RetentionMode.Compliance : RetentionMode.Governance;
                return new ObjectRetention(mode, Utc(until));
            }
            // Missing key or version, no retention on it, a delete marker, or a bucket without object lock.
            catch (AmazonS3Exception e) when (e.StatusCode is HttpStatusCode.NotFound or HttpStatusCode.MethodNotAllowed
                                              || (e.StatusCode == HttpStatusCode.BadRequest && e.ErrorCode == "InvalidRequest"))
            {
                if (e.ErrorCode == "NoSuchBucket") throw;
                return null;
            }
        }, ct);
    }

    /// <summary>
    /// Deletes every version and delete marker of exactly <paramref name="key"/>, oldest first, so that if a
    /// version under retention stops the delete, the newest version (what readers see) is still there.
    /// True if the key had a current (non-deleted) version.
    /// </summary>
    private async Task<bool> DeleteAllVersionsAsync(string key, CancellationToken ct)
    {
        var versions = await ListKeyVersionsAsync(key, ct);
        if (versions.Count == 0) return false;
        var existed = versions[0].IsDeleteMarker != true;
        for (var i = versions.Count - 1; i >= 0; i--) await DeleteVersionAsync(key, versions[i].VersionId, ct);
        return existed;
    }

    private async Task DeleteVersionAsync(string key, string versionId, CancellationToken ct)
    {
        var full = _prefix + key;
        try
        {
            await RunAsync("DELETE", key, c => _s3.DeleteObjectAsync(new DeleteObjectRequest { BucketName = _bucket, Key = full, VersionId = versionId }, c), ct);
        }
        catch (StoreAccessDeniedException denied)
        {
            // Object lock refuses with 403 AccessDenied. Tell it apart from a permission problem by the retention.
            var retention = await ReadRetentionAsync(key, versionId, ct);
            if (retention is not null && retention.RetainUntil > DateTimeOffset.UtcNow) throw new ObjectLockedException(key, retention.RetainUntil, denied);
            if (denied.InnerException?.Message.Contains("object lock", StringComparison.OrdinalIgnoreCase) == true) throw new ObjectLockedException(key, null, denied);
            throw;
        }
    }

    /// <summary>Versions and delete markers of exactly <paramref name="key"/>, newest first.</summary>
    private async Task<List<S3ObjectVersion>> ListKeyVersionsAsync(string key, CancellationToken ct)
    {
        var full = _prefix + key;
        var found = new List<S3ObjectVersion>();
        string? keyMarker = null, versionMarker = null;
        while (true)
        {
            var request = new ListVersionsRequest { BucketName = _bucket, Prefix = full, KeyMarker = keyMarker, VersionIdMarker = versionMarker };
            var page = await RunAsync("LIST-VERSIONS", key, c => _s3.ListVersionsAsync(request, c), ct);
            // Listed in key order and "full" sorts before every longer key it prefixes: stop at the first other key.
            if (page.Versions is { } versions)
                foreach (var v in versions)
                {
                    if (v.Key != full) return found;
                    found.Add(v);
                }
            if (page.IsTruncated != true) return found;
            keyMarker = page.NextKeyMarker;
            versionMarker = page.NextVersionIdMarker;
        }
    }
}
