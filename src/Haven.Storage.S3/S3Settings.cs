using Amazon;
using Amazon.Runtime;
using Amazon.Runtime.CredentialManagement;
using Amazon.S3;

namespace Haven.Storage.S3;

/// <summary>
/// How to reach S3. Null fields are resolved like the AWS CLI does: endpoint from AWS_ENDPOINT_URL_S3, then
/// AWS_ENDPOINT_URL (none: AWS itself); region from AWS_REGION, then AWS_DEFAULT_REGION, then "us-east-1";
/// credentials from the explicit keys, else <see cref="Profile"/>, else the SDK's default chain
/// (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN, AWS_PROFILE, ~/.aws/credentials, instance roles).
/// <see cref="ToString"/> never shows the secret key or session token.
/// </summary>
public sealed record S3Settings
{
    /// <summary>E.g. "http://127.0.0.1:7480" for Ceph RGW or MinIO; null: AWS (or the AWS_ENDPOINT_URL* variables).</summary>
    public string? Endpoint { get; init; }
    public string? Region { get; init; }
    /// <summary>Path-style addressing (http://host/bucket/key); default: true when an endpoint is set.</summary>
    public bool? PathStyle { get; init; }
    public string? AccessKeyId { get; init; }
    public string? SecretAccessKey { get; init; }
    public string? SessionToken { get; init; }
    public string? Profile { get; init; }
    /// <summary>Requests in flight at once, per store.</summary>
    public int MaxConcurrentRequests { get; init; } = 16;
    /// <summary>Attempts per request (first try included) on throttling, 5xx and connection failures.</summary>
    public int MaxAttempts { get; init; } = 5;
    /// <summary>Objects larger than this are uploaded in parts.</summary>
    public long MultipartThreshold { get; init; } = 64L * 1024 * 1024;
    /// <summary>Size of each part of a multipart upload (S3: at least 5 MiB except the last).</summary>
    public long PartSize { get; init; } = 16L * 1024 * 1024;
    /// <summary>Time limit of one HTTP request (one attempt); null: the SDK's default.</summary>
    public TimeSpan? RequestTimeout { get; init; }

    public string? ResolvedEndpoint => Endpoint ?? Env("AWS_ENDPOINT_URL_S3") ?? Env("AWS_ENDPOINT_URL");
    public string ResolvedRegion => Region ?? Env("AWS_REGION") ?? Env("AWS_DEFAULT_REGION") ?? "us-east-1";

    public override string ToString()
        => $"S3Settings {{ Endpoint = {Endpoint ?? "(default)"}, Region = {Region ?? "(default)"}, PathStyle = {PathStyle?.ToString() ?? "(default)"}, " +
           $"AccessKeyId = {AccessKeyId ?? "(default chain)"}, SecretAccessKey = {(SecretAccessKey is null ? "(none)" : "***")}, " +
           $"SessionToken = {(SessionToken is null ? "(none)" : "***")}, Profile = {Profile ?? "(none)"}, MaxConcurrentRequests = {MaxConcurrentRequests}, " +
           $"MaxAttempts = {MaxAttempts}, MultipartThreshold = {MultipartThreshold}, PartSize = {PartSize}, RequestTimeout = {RequestTimeout?.ToString() ?? "(default)"} }}";

    internal void Check()
    {
        if (MaxConcurrentRequests < 1) throw new ArgumentException("S3 MaxConcurrentRequests must be at least 1");
        if (MaxAttempts < 1) throw new ArgumentException("S3 MaxAttempts must be at least 1");
        if (PartSize < 5L * 1024 * 1024) throw new ArgumentException("S3 PartSize must be at least 5 MiB");
        if (MultipartThreshold < PartSize) throw new ArgumentException("S3 MultipartThreshold must not be below PartSize");
        if ((AccessKeyId is null) != (SecretAccessKey is null)) throw new ArgumentException("S3 AccessKeyId and SecretAccessKey must be given together");
    }

    internal AmazonS3Client CreateClient()
    {
        var endpoint = ResolvedEndpoint;
        var config = new AmazonS3Config
        {
            ForcePathStyle = PathStyle ?? endpoint is not null,
            // Ceph RGW 16 rejects the SDK 4 default (trailing CRC checksums, XAmzContentSHA256Mismatch).
            RequestChecksumCalculation = RequestChecksumCalculation.WHEN_REQUIRED,
            ResponseChecksumValidation = ResponseChecksumValidation.WHEN_REQUIRED,
            // Retries are ours (S3ObjectStore.RunAsync): counted, bounded, reported with the last status.
            MaxErrorRetry = 0,
            MaxConnectionsPerServer = MaxConcurrentRequests,
            IgnoreConfiguredEndpointUrls = true,
        };
        if (RequestTimeout is { } timeout) config.Timeout = timeout;
        if (endpoint is not null)
        {
            config.ServiceURL = endpoint;
            config.AuthenticationRegion = ResolvedRegion;
        }
        else config.RegionEndpoint = RegionEndpoint.GetBySystemName(ResolvedRegion);

        if (AccessKeyId is not null && SecretAccessKey is not null)
        {
            AWSCredentials credentials = SessionToken is null
                ? new BasicAWSCredentials(AccessKeyId, SecretAccessKey)
                : new SessionAWSCredentials(AccessKeyId, SecretAccessKey, SessionToken);
            return new AmazonS3Client(credentials, config);
        }
        if (Profile is not null)
        {
            if (!new CredentialProfileStoreChain().TryGetAWSCredentials(Profile, out var fromProfile))
                throw new StoreAccessDeniedException($"AWS profile \"{Profile}\" was not found or has no credentials");
            return new AmazonS3Client(fromProfile, config);
        }
        return new AmazonS3Client(config);
    }

    private static string? Env(string name) => Environment.GetEnvironmentVariable(name) is { Length: > 0 } v ? v : null;
}
