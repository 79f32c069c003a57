using Haven.Storage.S3;
using Haven.TestSupport;
using Xunit;

namespace Haven.Storage.Tests;

/// <summary>The shared conformance suite against Ceph RGW: a fresh bucket per test, the store under a prefix.</summary>
[Collection(CephRgwCollection.Name)]
public sealed class S3ObjectStoreTests : ObjectStoreConformance, IAsyncLifetime
{
    private readonly List<S3ObjectStore> _stores = [];
    private CephRgw _rgw = null!;
    private string _bucket = null!;

    /// <summary>Object lock buckets are versioned: the same suite runs on one in <see cref="S3VersionedBucketTests"/>.</summary>
    internal static async Task<(CephRgw, string)> NewBucketAsync(bool objectLock)
    {
        var rgw = await CephRgw.GetAsync();
        var bucket = rgw.NewBucketName();
        using var store = new S3ObjectStore(new S3Location(bucket, ""), rgw.Settings());
        await store.EnsureBucketAsync(objectLock, TestContext.Current.CancellationToken);
        return (rgw, bucket);
    }

    public async ValueTask InitializeAsync() => (_rgw, _bucket) = await NewBucketAsync(objectLock: false);

    protected override IObjectStore CreateStore()
    {
        var store = new S3ObjectStore(new S3Location(_bucket, $"store{_stores.Count}/x"), _rgw.Settings());
        _stores.Add(store);
        return store;
    }

    public ValueTask DisposeAsync()
    {
        foreach (var store in _stores) store.Dispose();
        return ValueTask.CompletedTask;
    }
}

/// <summary>The conformance suite in a versioned (object lock) bucket, where RGW 16 ignores If-None-Match.</summary>
[Collection(CephRgwCollection.Name)]
public sealed class S3VersionedBucketTests : ObjectStoreConformance, IAsyncLifetime
{
    private readonly List<S3ObjectStore> _stores = [];
    private CephRgw _rgw = null!;
    private string _bucket = null!;

    public async ValueTask InitializeAsync() => (_rgw, _bucket) = await S3ObjectStoreTests.NewBucketAsync(objectLock: true);

    protected override IObjectStore CreateStore()
    {
        var store = new S3ObjectStore(new S3Location(_bucket, $"store{_stores.Count}"), _rgw.Settings());
        _stores.Add(store);
        return store;
    }

    public ValueTask DisposeAsync()
    {
        foreach (var store in _stores) store.Dispose();
        return ValueTask.CompletedTask;
    }
}

/// <summary>
/// Every test that talks to the shared RGW runs in this one collection, never in parallel: one of them
/// kills the gateway.
/// </summary>
[CollectionDefinition(Name)]
public sealed class CephRgwCollection
{
    public const string Name = "Ceph RGW";
}
