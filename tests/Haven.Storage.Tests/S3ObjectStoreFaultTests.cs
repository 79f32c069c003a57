using ListMultipartUploadsRequest = Amazon.S3.Model.ListMultipartUploadsRequest;
using ListVersionsRequest = Amazon.S3.Model.ListVersionsRequest;
using Haven.Storage.S3;
using Haven.TestSupport;
using Xunit;

namespace Haven.Storage.Tests;

/// <summary>S3-specific behaviour: credentials, retries, outages, object lock, multipart.</summary>
[Collection(CephRgwCollection.Name)]
public sealed class S3ObjectStoreFaultTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static byte[] RandomBytes(int length)
    {
        var data = new byte[length];
        Random.Shared.NextBytes(data);
        return data;
    }

    [Fact]
    public async Task A_wrong_secret_key_is_access_denied_in_one_line_and_writes_nothing()
    {
        var (rgw, bucket) = await S3ObjectStoreTests.NewBucketAsync(objectLock: false);
        var location = new S3Location(bucket, "p");
        const string wrong = "wrongsecretwrongsecretwrongsecret0000000";
        using var bad = new S3ObjectStore(location, rgw.Settings(secretKey: wrong));
        var e = await Assert.ThrowsAsync<StoreAccessDeniedException>(() => bad.TryCreateAsync("k", RandomBytes(10), Ct));
        Assert.Equal($"S3 refused the credentials for s3://{bucket}/p: SignatureDoesNotMatch", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        Assert.DoesNotContain(wrong, e.ToString());
        Assert.DoesNotContain(rgw.SecretKey, e.ToString());
        Assert.DoesNotContain(wrong, rgw.Settings(secretKey: wrong).ToString());
        await Assert.ThrowsAsync<StoreAccessDeniedException>(() => bad.StatAsync("k", Ct));
        using var good = new S3ObjectStore(location, rgw.Settings());
        Assert.Null(await good.StatAsync("k", Ct));
    }

    [Fact]
    public async Task A_short_503_storm_is_retried_and_the_write_succeeds()
    {
        var (rgw, bucket) = await S3ObjectStoreTests.NewBucketAsync(objectLock: false);
        await using var proxy = new FaultyS3Proxy(rgw.Endpoint);
        using var store = new S3ObjectStore(new S3Location(bucket, ""), rgw.Settings(endpoint: proxy.Endpoint));
        var data = RandomBytes(100_000);
        Assert.True(await store.TryCreateAsync("through/proxy", data, Ct)); // the proxy forwards valid signatures
        proxy.ResetCounts();
        proxy.FailNext(2);
        Assert.True(await store.TryCreateAsync("storm/short", data, Ct));
        Assert.Equal(3, proxy.Requests);
        Assert.Equal(2, proxy.Failed);
        Assert.Equal(data, await store.GetAsync("storm/short", Ct));
    }

    [Fact]
    public async Task A_continuous_503_storm_fails_after_max_attempts_and_leaves_no_object()
    {
        var (rgw, bucket) = await S3ObjectStoreTests.NewBucketAsync(objectLock: false);
        await using var proxy = new FaultyS3Proxy(rgw.Endpoint);
        using var store = new S3ObjectStore(new S3Location(bucket, "p"), rgw.Settings(endpoint: proxy.Endpoint, maxAttempts: 4));
        proxy.FailAll = true;
        var e = await Assert.ThrowsAsync<StoreUnavailableException>(() => store.PutAsync("chunks/ab/abcd", RandomBytes(1000), Ct));
        Assert.Equal(4, proxy.Requests);
        Assert.Equal($"S3 PUT chunks/ab/abcd in s3://{bucket}/p failed after 4 attempts: 503 SlowDown", e.Message);
        proxy.FailAll = false;
        Assert.Null(await store.StatAsync("chunks/ab/abcd", Ct));
    }

    [Fact]
    public async Task Cut_connections_are_retried_or_reported_as_unavailable()
    {
        var (rgw, bucket) = await S3ObjectStoreTests.NewBucketAsync(objectLock: false);
        await using var proxy = new FaultyS3Proxy(rgw.Endpoint);
        using var store = new S3ObjectStore(new S3Location(bucket, ""), rgw.Settings(endpoint: proxy.Endpoint, maxAttempts: 3));
        Assert.True(await store.TryCreateAsync("a", RandomBytes(1000), Ct));
        proxy.CutConnections();
        await Assert.ThrowsAsync<StoreUnavailableException>(() => store.GetAsync("a", Ct));
        proxy.Reconnect();
        Assert.Equal(1000, (await store.GetAsync("a", Ct))!.Length);
    }

    [Fact]
    public async Task An_endpoint_with_nothing_listening_is_unavailable()
    {
        var rgw = await CephRgw.GetAsync();
        using var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        var port = ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        using var store = new S3ObjectStore(new S3Location("nobody-home", ""), rgw.Settings(endpoint: $"http://127.0.0.1:{port}", maxAttempts: 2));
        var e = await Assert.ThrowsAsync<StoreUnavailableException>(() => store.StatAsync("k", Ct));
        Assert.Contains("failed after 2 attempts", e.Message);
        Assert.Contains("refused", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public async Task Object_lock_keeps_retained_objects_and_deletes_the_others_entirely()
    {
        var (rgw, bucket) = await S3ObjectStoreTests.NewBucketAsync(objectLock: true);
        var settings = rgw.Settings();
        using var store = new S3ObjectStore(new S3Location(bucket, "p"), settings);
        Assert.True(await store.IsObjectLockEnabledAsync(Ct));
        var until = DateTimeOffset.UtcNow.AddDays(1);
        var data = RandomBytes(5000);
        Assert.True(await store.TryCreateAsync("m/locked", data, new ObjectRetention(RetentionMode.Governance, until), Ct));
        Assert.False(await store.TryCreateAsync("m/locked", RandomBytes(10), new ObjectRetention(RetentionMode.Governance, until), Ct));
        var retention = await store.GetRetentionAsync("m/locked", Ct);
        Assert.NotNull(retention);
        Assert.Equal(RetentionMode.Governance, retention.Mode);
        Assert.InRange(retention.RetainUntil, until.AddSeconds(-1), until.AddSeconds(1));

        var locked = await Assert.ThrowsAsync<ObjectLockedException>(() => store.DeleteAsync("m/locked", Ct));
        Assert.NotNull(locked.RetainUntil);
        Assert.Equal(data, await store.GetAsync("m/locked", Ct));

        await store.ExtendRetentionAsync("m/locked", new ObjectRetention(RetentionMode.Governance, until.AddDays(1)), Ct);
        Assert.InRange((await store.GetRetentionAsync("m/locked", Ct))!.RetainUntil, until.AddDays(1).AddSeconds(-1), until.AddDays(1).AddSeconds(1));
        await store.ExtendRetentionAsync("m/locked", new ObjectRetention(RetentionMode.Governance, until), Ct); // never earlier
        Assert.InRange((await store.GetRetentionAsync("m/locked", Ct))!.RetainUntil, until.AddDays(1).AddSeconds(-1), until.AddDays(1).AddSeconds(1));
        await Assert.ThrowsAsync<StoreException>(() => store.ExtendRetentionAsync("m/missing", new ObjectRetention(RetentionMode.Governance, until), Ct));
        Assert.Null(await store.GetRetentionAsync("m/missing", Ct));

        Assert.True(await store.TryCreateAsync("m/free", data, Ct));
        Assert.Null(await store.GetRetentionAsync("m/free", Ct));
        await store.PutAsync("m/free", RandomBytes(10), Ct); // a second version
        Assert.True(await store.DeleteAsync("m/free", Ct));
        Assert.False(await store.DeleteAsync("m/free", Ct));
        Assert.Null(await store.GetAsync("m/free", Ct));
        using var s3 = settings.CreateClient();
        var versions = await s3.ListVersionsAsync(new ListVersionsRequest { BucketName = bucket, Prefix = "p/m/" }, Ct);
        var left = (versions.Versions ?? []).Select(v => v.Key).ToArray();
        Assert.DoesNotContain("p/m/free", left);
        Assert.Contains("p/m/locked", left);
    }

    [Fact]
    public async Task Object_lock_cannot_be_asked_of_an_existing_bucket_without_it()
    {
        var (rgw, bucket) = await S3ObjectStoreTests.NewBucketAsync(objectLock: false);
        using var store = new S3ObjectStore(new S3Location(bucket, ""), rgw.Settings());
        Assert.False(await store.IsObjectLockEnabledAsync(Ct));
        var e = await Assert.ThrowsAsync<StoreException>(() => store.EnsureBucketAsync(objectLock: true, Ct));
        Assert.Contains("without object lock", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        await store.EnsureBucketAsync(objectLock: false, Ct);
        using var missing = new S3ObjectStore(new S3Location(rgw.NewBucketName(), ""), rgw.Settings());
        var none = await Assert.ThrowsAsync<StoreException>(() => missing.GetAsync("k", Ct));
        Assert.Contains("does not exist", none.Message);
    }

    [Fact]
    public async Task A_70_MiB_multipart_object_round_trips_and_a_second_create_is_refused()
    {
        var (rgw, bucket) = await S3ObjectStoreTests.NewBucketAsync(objectLock: false);
        var settings = rgw.Settings() with { MultipartThreshold = 16L * 1024 * 1024, PartSize = 8L * 1024 * 1024 };
        using var store = new S3ObjectStore(new S3Location(bucket, "big"), settings);
        var data = RandomBytes(70 * 1024 * 1024);
        Assert.True(await store.TryCreateAsync("obj", data, Ct));
        Assert.False(await store.TryCreateAsync("obj", RandomBytes(20 * 1024 * 1024), Ct));
        Assert.Equal(data.Length, (await store.StatAsync("obj", Ct))!.Size);
        var read = await store.GetAsync("obj", Ct);
        Assert.True(data.AsSpan().SequenceEqual(read));
        // No upload left behind by the refused create.
        using var s3 = settings.CreateClient();
        var uploads = await s3.ListMultipartUploadsAsync(new ListMultipartUploadsRequest { BucketName = bucket }, Ct);
        Assert.Empty(uploads.MultipartUploads ?? []);
        // Overwrite goes through the multipart path too.
        var other = RandomBytes(17 * 1024 * 1024);
        await store.PutAsync("obj", other, Ct);
        read = await store.GetAsync("obj", Ct);
        Assert.True(other.AsSpan().SequenceEqual(read));
    }

    [Fact]
    public async Task A_gateway_killed_mid_sequence_is_unavailable_then_the_store_works_again()
    {
        var (rgw, bucket) = await S3ObjectStoreTests.NewBucketAsync(objectLock: false);
        if (!rgw.CanRestartGateway) Assert.Skip("the shared RGW's folder is unknown (HAVEN_TEST_CEPH_DIR unset)");
        using var store = new S3ObjectStore(new S3Location(bucket, ""), rgw.Settings(maxAttempts: 3));
        var written = new List<string>();
        StoreUnavailableException? failure = null;
        try
        {
            for (var i = 0; i < 20 && failure is null; i++)
            {
                if (i == 5) await rgw.StopGatewayAsync();
                try { Assert.True(await store.TryCreateAsync($"seq/{i}", RandomBytes(64 * 1024), Ct)); written.Add($"seq/{i}"); }
                catch (StoreUnavailableException e) { failure = e; }
            }
        }
        finally { await rgw.StartGatewayAsync(); }
        Assert.NotNull(failure);
        Assert.Equal(5, written.Count);
        Assert.Contains("seq/5", failure.Message);
        Assert.True(await store.TryCreateAsync("seq/5", RandomBytes(10), Ct));
        foreach (var key in written) Assert.NotNull(await store.StatAsync(key, Ct));
    }
}

public sealed class S3LocationTests
{
    [Theory]
    [InlineData("s3://bucket", "bucket", "", "s3://bucket")]
    [InlineData("s3://my-bucket.x/some/prefix", "my-bucket.x", "some/prefix", "s3://my-bucket.x/some/prefix")]
    [InlineData("s3://bkt/pre/", "bkt", "pre", "s3://bkt/pre")]
    public void Valid_locations_parse_and_print_back(string text, string bucket, string prefix, string printed)
    {
        Assert.True(S3Location.TryParse(text, out var location, out var error), error);
        Assert.Equal(bucket, location!.Bucket);
        Assert.Equal(prefix, location.Prefix);
        Assert.Equal(printed, location.ToString());
    }

    [Theory]
    [InlineData("bucket/x")]
    [InlineData("s3://")]
    [InlineData("s3://ab")]
    [InlineData("s3://Bucket")]
    [InlineData("s3://-bucket")]
    [InlineData("s3://a..b")]
    [InlineData("s3://192.168.1.1")]
    [InlineData("s3://bucket//x")]
    [InlineData("s3://bucket/.hidden")]
    [InlineData("s3://bucket/Upper")]
    public void Invalid_locations_are_refused(string text)
    {
        Assert.False(S3Location.TryParse(text, out var location, out var error));
        Assert.Null(location);
        Assert.NotEmpty(error);
    }

    [Fact]
    public void Settings_never_print_secrets()
    {
        var settings = new S3Settings { AccessKeyId = "AKID", SecretAccessKey = "supersecret", SessionToken = "sessiontoken" };
        Assert.DoesNotContain("supersecret", settings.ToString());
        Assert.DoesNotContain("sessiontoken", settings.ToString());
        Assert.True(S3Location.IsS3("s3://x"));
        Assert.False(S3Location.IsS3("/srv/repo"));
    }
}
