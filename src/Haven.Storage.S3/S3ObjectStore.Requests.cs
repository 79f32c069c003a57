using System.Net;
using System.Net.Sockets;
using Amazon.Runtime;

namespace Haven.Storage.S3;

/// <summary>Every request: concurrency bound, retries, error mapping.</summary>
public sealed partial class S3ObjectStore
{
    private static readonly TimeSpan FirstBackoff = TimeSpan.FromMilliseconds(100);
    private static readonly TimeSpan MaxBackoff = TimeSpan.FromSeconds(10);

    /// <summary>Requests sent so far, by kind: one per attempt (see <see cref="RunAsync{T}"/>).</summary>
    public S3RequestCounters Requests { get; } = new();

    /// <summary>
    /// Runs one request (the whole of <paramref name="attempt"/>, including reading a response body) under
    /// the concurrency gate, up to <see cref="S3Settings.MaxAttempts"/> times. Retried: 5xx, 429, 408 and
    /// throttling codes, connection failures, the SDK's per-request timeout; never other 4xx. After the last
    /// attempt: <see cref="StoreUnavailableException"/> naming the operation, key and last status. Service
    /// errors that are not retried become the matching <see cref="StoreException"/> (<see cref="Map"/>).
    /// The SDK's own retries are off (S3Settings.CreateClient) so the attempt count here is the request count.
    /// </summary>
    private async Task<T> RunAsync<T>(string op, string key, Func<CancellationToken, Task<T>> attempt, CancellationToken ct)
    {
        var kind = S3RequestCounters.KindOf(op);
        for (var n = 1; ; n++)
        {
            Exception failure;
            await _gate.WaitAsync(ct);
            Requests.Count(kind, n);
            try { return await attempt(ct); }
            catch (Exception e) when (IsTransient(e, ct)) { failure = e; }
            catch (AmazonServiceException e) { throw Map(e, op, key); }
            finally { _gate.Release(); }
            if (n >= _settings.MaxAttempts)
                throw new StoreUnavailableException(OneLine($"S3 {op} {key} in {Location} failed after {n} attempt{(n == 1 ? "" : "s")}: {Describe(failure)}"), failure);
            await Task.Delay(Backoff(n), ct);
        }
    }

    /// <summary>Exponential, with "equal jitter": half the step fixed, half random.</summary>
    private static TimeSpan Backoff(int attempt)
    {
        var step = Math.Min(MaxBackoff.TotalMilliseconds, FirstBackoff.TotalMilliseconds * Math.Pow(2, attempt - 1));
        return TimeSpan.FromMilliseconds(step / 2 + Random.Shared.NextDouble() * step / 2);
    }

    private static bool IsTransient(Exception e, CancellationToken ct)
    {
        if (e is OperationCanceledException) return !ct.IsCancellationRequested; // the SDK's request timeout
        if (e is AmazonServiceException { StatusCode: not 0 } service)
        {
            var status = (int)service.StatusCode;
            return status >= 500 || status is 429 or 408
                || service.ErrorCode is "SlowDown" or "Throttling" or "ThrottlingException" or "RequestTimeout"
                    or "RequestLimitExceeded" or "ConditionalRequestConflict" or "InternalError" or "ServiceUnavailable";
        }
        for (var x = e; x is not null; x = x.InnerException)
            if (x is HttpRequestException or IOException or SocketException or TimeoutException) return true;
        return false;
    }

    private StoreException Map(AmazonServiceException e, string op, string key)
    {
        var status = (int)e.StatusCode;
        var code = e.ErrorCode ?? e.StatusCode.ToString();
        if (code == "NoSuchBucket")
            return new StoreException($"S3 bucket {_bucket} does not exist ({Location})", e);
        if (status == 507 || code is "EntityTooLarge" or "QuotaExceeded" or "InsufficientStorage" or "StorageFull")
            return new StoreFullException(key, e);
        if (code is "InvalidAccessKeyId" or "SignatureDoesNotMatch" or "ExpiredToken" or "InvalidToken" or "TokenRefreshRequired"
            or "AuthorizationHeaderMalformed" or "RequestTimeTooSkewed")
            return new StoreAccessDeniedException($"S3 refused the credentials for {Location}: {code}", e);
        if (status == 403)
            return new StoreAccessDeniedException(OneLine($"S3 denied {op} {key} in {Location}: {code} (check the credentials and the bucket's permissions)"), e);
        var message = string.IsNullOrEmpty(e.Message) || e.Message.StartsWith("Error making request", StringComparison.Ordinal) ? "" : ": " + e.Message;
        return new StoreException(OneLine($"S3 {op} {key} in {Location} failed: {status} {code}{message}"), e);
    }

    private static string Describe(Exception e)
    {
        if (e is AmazonServiceException { StatusCode: not 0 } service) return $"{(int)service.StatusCode} {service.ErrorCode ?? service.StatusCode.ToString()}";
        if (e is OperationCanceledException) return "request timed out";
        for (var x = e; x is not null; x = x.InnerException)
            if (x is HttpRequestException or SocketException or IOException) return x.Message;
        return e.Message;
    }

    private static string OneLine(string text) => text.ReplaceLineEndings(" ");
}
