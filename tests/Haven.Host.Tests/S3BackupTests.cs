using Haven.TestSupport;
using Xunit;

namespace Haven.Host.Tests;

/// <summary>
/// The backup suite against a bucket on a real Ceph RGW. The S3 settings come the way a user's would when
/// none are given with the request: from the AWS_* environment of the process (havend's, here the test's).
/// </summary>
[Collection(S3Collection.Name)]
public sealed class S3BackupTests : BackupSuite
{
    protected override async Task<string> NewRepositoryAsync(TestHost t)
    {
        var rgw = await CephRgw.GetAsync();
        rgw.ExportAwsEnvironment();
        return $"s3://{rgw.NewBucketName()}/repo";
    }
}

/// <summary>
/// Every test class that uses the shared Ceph RGW: never in parallel with each other, because one of them
/// stops the gateway on purpose.
/// </summary>
[CollectionDefinition(Name)]
public sealed class S3Collection
{
    public const string Name = "Ceph RGW";
}
