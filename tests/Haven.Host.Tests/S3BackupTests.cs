using Haven.TestSupport;

namespace Haven.Host.Tests;

/// <summary>
/// The backup suite against a bucket on a real Ceph RGW. The S3 settings come the way a user's would when
/// none are given with the request: from the AWS_* environment of the process (havend's, here the test's).
/// </summary>
public sealed class S3BackupTests : BackupSuite
{
    protected override async Task<string> NewRepositoryAsync(TestHost t)
    {
        var rgw = await CephRgw.GetAsync();
        rgw.ExportAwsEnvironment();
        return $"s3://{rgw.NewBucketName()}/repo";
    }
}
