using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Haven.Api;

namespace Haven.Cli;

/// <summary>havend answered with a non-2xx status.</summary>
public sealed class HavenApiException(string message, string code, HttpStatusCode status) : Exception(message)
{
    /// <summary>The ErrorResponse code ("not_found", "conflict", ...), or "" when the body held none.</summary>
    public string Code { get; } = code;
    public HttpStatusCode Status { get; } = status;
}

/// <summary>havend could not be reached (no socket, nobody listening, unreadable token, ...).</summary>
public sealed class HavenUnreachableException(string where, string reason, Exception? inner = null)
    : Exception($"cannot reach havend at {where}: {reason}", inner)
{
    public string Where { get; } = where;
    public string Reason { get; } = reason;
}

/// <summary>The connection broke after the request was sent, or the answer was not what the API promises.</summary>
public sealed class HavenProtocolException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>Thin typed client of havend's HTTP API (routes under /v1, see src/Haven.Api/Contracts.cs).</summary>
public sealed partial class HavenClient : IDisposable
{
    /// <summary>Media type of streamed long operations: one OperationEvent per line.</summary>
    public const string NdJson = "application/x-ndjson";

    readonly HttpClient http;
    readonly HavenEndpoint endpoint;
    string? token;
    bool tokenLoaded;
    // HttpClient silently re-sends a body-less request whose connection closed before any answer; if
    // havend died meanwhile, that retry fails to connect. Having connected once, that is a lost
    // connection (the operation may have started), not an unreachable daemon.
    volatile bool connectedOnce;

    public HavenClient(HavenEndpoint endpoint)
    {
        this.endpoint = endpoint;
        var handler = new SocketsHttpHandler { ConnectTimeout = TimeSpan.FromSeconds(10) };
        if (endpoint.SocketPath is { } socketPath)
        {
            handler.ConnectCallback = async (_, cancellationToken) =>
            {
                var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                try
                {
                    await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), cancellationToken);
                    connectedOnce = true;
                    return new NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            };
        }
        else
        {
            handler.ConnectCallback = async (context, cancellationToken) =>
            {
                var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                try
                {
                    await socket.ConnectAsync(context.DnsEndPoint, cancellationToken);
                    connectedOnce = true;
                    return new NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            };
        }
        // Checkpoints, merges and exports can take long; Ctrl-C cancels instead.
        http = new HttpClient(handler) { BaseAddress = endpoint.BaseAddress, Timeout = Timeout.InfiniteTimeSpan };
    }

    public HavenEndpoint Endpoint => endpoint;

    public void Dispose() => http.Dispose();

    // --- host ---
    public Task<HostInfo> GetHostAsync(CancellationToken ct) =>
        SendAsync<HostInfo>(HttpMethod.Get, "/v1/host", null, ct);

    // --- vms ---
    public Task<List<VmInfo>> ListVmsAsync(CancellationToken ct) =>
        SendAsync<List<VmInfo>>(HttpMethod.Get, "/v1/vms", null, ct);

    public Task<VmInfo> CreateVmAsync(VmCreateRequest request, CancellationToken ct) =>
        SendAsync<VmInfo>(HttpMethod.Post, "/v1/vms", request, ct);

    public Task<VmInfo> GetVmAsync(string vm, CancellationToken ct) =>
        SendAsync<VmInfo>(HttpMethod.Get, VmPath(vm), null, ct);

    public Task<VmInfo> UpdateVmAsync(string vm, VmUpdateRequest request, CancellationToken ct) =>
        SendAsync<VmInfo>(HttpMethod.Patch, VmPath(vm), request, ct);

    public Task<VmInfo> SetNicLinkAsync(string vm, string nic, NicLinkRequest request, CancellationToken ct) =>
        SendAsync<VmInfo>(HttpMethod.Post, VmPath(vm) + "/nics/" + Uri.EscapeDataString(nic) + "/link", request, ct);

    public Task RemoveVmAsync(string vm, CancellationToken ct) =>
        SendAsync(HttpMethod.Delete, VmPath(vm), null, ct);

    public Task<VmInfo> StartVmAsync(string vm, CancellationToken ct) =>
        SendAsync<VmInfo>(HttpMethod.Post, VmPath(vm) + "/start", null, ct);

    public Task<VmInfo> StopVmAsync(string vm, VmStopRequest request, CancellationToken ct) =>
        SendAsync<VmInfo>(HttpMethod.Post, VmPath(vm) + "/stop", request, ct);

    // --- checkpoints ---
    public Task<List<CheckpointInfo>> ListCheckpointsAsync(string vm, CancellationToken ct) =>
        SendAsync<List<CheckpointInfo>>(HttpMethod.Get, VmPath(vm) + "/checkpoints", null, ct);

    public Task<CheckpointCreateResult> CreateCheckpointAsync(string vm, CheckpointCreateRequest request, CancellationToken ct) =>
        SendAsync<CheckpointCreateResult>(HttpMethod.Post, VmPath(vm) + "/checkpoints", request, ct);

    public Task<CheckpointApplyResult> ApplyCheckpointAsync(string vm, string checkpoint, CheckpointApplyRequest request, CancellationToken ct) =>
        SendAsync<CheckpointApplyResult>(HttpMethod.Post, CheckpointPath(vm, checkpoint) + "/apply", request, ct);

    public Task<CheckpointInfo> RenameCheckpointAsync(string vm, string checkpoint, CheckpointRenameRequest request, CancellationToken ct) =>
        SendAsync<CheckpointInfo>(HttpMethod.Post, CheckpointPath(vm, checkpoint) + "/rename", request, ct);

    public Task<CheckpointRemoveResult> RemoveCheckpointAsync(string vm, string checkpoint, bool subtree, CancellationToken ct) =>
        SendAsync<CheckpointRemoveResult>(HttpMethod.Delete, CheckpointPath(vm, checkpoint) + (subtree ? "?subtree=true" : ""), null, ct);

    public Task<CheckpointExportResult> ExportCheckpointAsync(string vm, string checkpoint, CheckpointExportRequest request, CancellationToken ct) =>
        SendAsync<CheckpointExportResult>(HttpMethod.Post, CheckpointPath(vm, checkpoint) + "/export", request, ct);

    // --- backup repositories ---
    public Task<RepositoryInfo> InitRepositoryAsync(RepositoryInitRequest request, CancellationToken ct) =>
        SendAsync<RepositoryInfo>(HttpMethod.Post, "/v1/repo/init", request, ct);

    public Task<List<BackupInfo>> ListBackupsAsync(RepositoryRef request, CancellationToken ct) =>
        SendAsync<List<BackupInfo>>(HttpMethod.Post, "/v1/repo/backups", request, ct);

    public Task<RestoreResult> RestoreAsync(RestoreRequest request, CancellationToken ct) =>
        SendAsync<RestoreResult>(HttpMethod.Post, "/v1/repo/restore", request, ct);

    // The answers of verify, prune and gc have no records yet: they are passed through as JSON.
    public Task<JsonElement> VerifyRepositoryAsync(RepositoryRef request, CancellationToken ct) =>
        SendAsync<JsonElement>(HttpMethod.Post, "/v1/repo/verify", request, ct);

    public Task<JsonElement> PruneRepositoryAsync(RepositoryRef request, CancellationToken ct) =>
        SendAsync<JsonElement>(HttpMethod.Post, "/v1/repo/prune", request, ct);

    public Task<JsonElement> GcRepositoryAsync(RepositoryRef request, CancellationToken ct) =>
        SendAsync<JsonElement>(HttpMethod.Post, "/v1/repo/gc", request, ct);

    public Task<JsonElement> UpgradeRepositoryAsync(RepositoryRef request, CancellationToken ct) =>
        SendAsync<JsonElement>(HttpMethod.Post, "/v1/repo/upgrade", request, ct);

    public Task<RepositoryCopyResult> CopyBackupsAsync(RepositoryCopyRequest request, CancellationToken ct) =>
        SendStreamingAsync<RepositoryCopyResult>(HttpMethod.Post, "/v1/repo/copy", request, null, ct);

    public Task<List<JobInfo>> ListJobsAsync(CancellationToken ct) =>
        SendAsync<List<JobInfo>>(HttpMethod.Get, "/v1/jobs", null, ct);

    public Task<JobInfo> CreateJobAsync(JobDefinition job, CancellationToken ct) =>
        SendAsync<JobInfo>(HttpMethod.Post, "/v1/jobs", job, ct);

    public Task RemoveJobAsync(string job, CancellationToken ct) =>
        SendAsync(HttpMethod.Delete, "/v1/jobs/" + Segment(job, "job"), null, ct);

    public Task<JobRunResult> RunJobAsync(string job, CancellationToken ct) =>
        SendAsync<JobRunResult>(HttpMethod.Post, "/v1/jobs/" + Segment(job, "job") + "/run", null, ct);

    /// <summary>
    /// Backs a VM up. Asks for the NDJSON event stream and hands every progress line to
    /// <paramref name="progress"/>; the result line is the answer, an error line throws like a non-2xx answer.
    /// </summary>
    public Task<BackupResult> BackupVmAsync(string vm, BackupRequest request, Action<OperationEvent>? progress, CancellationToken ct) =>
        SendStreamingAsync<BackupResult>(HttpMethod.Post, VmPath(vm) + "/backup", request, progress, ct);

    public static string VmPath(string vm) => "/v1/vms/" + Segment(vm, "VM");

    public static string CheckpointPath(string vm, string checkpoint) =>
        VmPath(vm) + "/checkpoints/" + Segment(checkpoint, "checkpoint");

    // A name that breaks the naming rules could change the URL's meaning ("..", "/", "%2F"):
    // refuse it here rather than send a request that addresses something else.
    static string Segment(string name, string what) =>
        NameRules.Problem(name, what) is { } problem
            ? throw new HavenApiException(problem, "invalid_argument", HttpStatusCode.BadRequest)
            : Uri.EscapeDataString(name);

    // --- plumbing ---
    async Task<T> SendAsync<T>(HttpMethod method, string path, object? body, CancellationToken ct)
    {
        using var response = await SendCoreAsync(method, path, body, ct);
        return await ReadJsonAsync<T>(response, method, path, ct);
    }

    async Task<T> ReadJsonAsync<T>(HttpResponseMessage response, HttpMethod method, string path, CancellationToken ct)
    {
        string text;
        try
        {
            text = await response.Content.ReadAsStringAsync(ct);
        }
        catch (Exception e) when (e is HttpRequestException or IOException)
        {
            throw new HavenProtocolException($"lost connection to havend at {endpoint.Display}: {Innermost(e).Message}", e);
        }
        try
        {
            return JsonSerializer.Deserialize<T>(text, ApiJson.Options)
                ?? throw new JsonException("the body is null");
        }
        catch (JsonException e)
        {
            throw new HavenProtocolException($"havend sent an answer to {method} {path} that is not a {typeof(T).Name}: {e.Message}", e);
        }
    }

    async Task SendAsync(HttpMethod method, string path, object? body, CancellationToken ct)
    {
        using var response = await SendCoreAsync(method, path, body, ct);
    }

    /// <summary>
    /// A long operation streamed as OperationEvent lines (see <see cref="OperationEvent"/>): progress lines,
    /// then one result or error line. An answer that is not NDJSON is read as a plain <typeparamref name="T"/>.
    /// </summary>
    async Task<T> SendStreamingAsync<T>(HttpMethod method, string path, object? body, Action<OperationEvent>? progress, CancellationToken ct)
    {
        using var response = await SendCoreAsync(method, path, body, ct, NdJson);
        if (!string.Equals(response.Content.Headers.ContentType?.MediaType, NdJson, StringComparison.OrdinalIgnoreCase))
            return await ReadJsonAsync<T>(response, method, path, ct);

        try
        {
            await using var stream = await response.Content.ReadAsStreamAsync(ct);
            using var reader = new StreamReader(stream, Encoding.UTF8);
            while (await reader.ReadLineAsync(ct) is { } line)
            {
                if (string.IsNullOrWhiteSpace(line))
                    continue;
                OperationEvent e;
                try
                {
                    e = JsonSerializer.Deserialize<OperationEvent>(line, ApiJson.Options) ?? throw new JsonException("the line is null");
                }
                catch (JsonException x)
                {
                    throw new HavenProtocolException($"havend sent a line in its answer to {method} {path} that is not an OperationEvent: {x.Message}", x);
                }
                switch (e.Type)
                {
                    case "progress":
                        progress?.Invoke(e);
                        break;
                    case "result":
                        try
                        {
                            return e.Result is { } result
                                ? result.Deserialize<T>(ApiJson.Options) ?? throw new JsonException("the result is null")
                                : throw new JsonException("the result line has no result");
                        }
                        catch (JsonException x)
                        {
                            throw new HavenProtocolException($"havend sent a result to {method} {path} that is not a {typeof(T).Name}: {x.Message}", x);
                        }
                    case "error":
                        throw e.Error is { Error: { Length: > 0 } message } error
                            ? new HavenApiException(message, error.Code ?? "", StatusForErrorCode(error.Code))
                            : new HavenApiException($"havend reported an error without a message to {method} {path}", e.Error?.Code ?? "", HttpStatusCode.InternalServerError);
                    default:
                        break; // Event types this haven does not know yet.
                }
            }
        }
        catch (Exception e) when (e is HttpRequestException or IOException)
        {
            throw new HavenProtocolException($"lost connection to havend at {endpoint.Display}: {Innermost(e).Message}", e);
        }
        throw new HavenProtocolException($"lost connection to havend at {endpoint.Display}: the answer to {method} {path} ended without a result");
    }

    /// <summary>The status a non-streamed answer would have had for this error code.</summary>
    static HttpStatusCode StatusForErrorCode(string? code) => code switch
    {
        "invalid_argument" => HttpStatusCode.BadRequest,
        "unauthorized" => HttpStatusCode.Unauthorized,
        "not_found" => HttpStatusCode.NotFound,
        "conflict" => HttpStatusCode.Conflict,
        _ => HttpStatusCode.InternalServerError,
    };

    async Task<HttpResponseMessage> SendCoreAsync(HttpMethod method, string path, object? body, CancellationToken ct, string? accept = null)
    {
        using var request = new HttpRequestMessage(method, path);
        if (LoadToken() is { } t)
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", t);
        if (accept is not null)
            request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue(accept));
        if (body is not null)
            request.Content = new StringContent(JsonSerializer.Serialize(body, body.GetType(), ApiJson.Options), Encoding.UTF8, "application/json");

        HttpResponseMessage response;
        try
        {
            // A streamed answer is read as it arrives; everything else is buffered whole.
            var completion = accept is null ? HttpCompletionOption.ResponseContentRead : HttpCompletionOption.ResponseHeadersRead;
            response = await http.SendAsync(request, completion, ct);
        }
        catch (HttpRequestException e) when (IsConnectError(e) && !connectedOnce)
        {
            throw new HavenUnreachableException(endpoint.Display, ConnectFailureReason(e), e);
        }
        catch (HttpRequestException e)
        {
            throw new HavenProtocolException($"lost connection to havend at {endpoint.Display}: {Innermost(e).Message}", e);
        }
        catch (TaskCanceledException e) when (!ct.IsCancellationRequested)
        {
            // The connect timeout surfaces as a cancellation that is not ours.
            throw new HavenUnreachableException(endpoint.Display, "timed out connecting", e);
        }

        if (response.IsSuccessStatusCode)
            return response;

        using (response)
        {
            var text = "";
            try
            {
                text = await response.Content.ReadAsStringAsync(ct);
            }
            catch (HttpRequestException)
            {
                // Report the status alone.
            }
            throw ToApiException(method, path, response.StatusCode, response.ReasonPhrase, text);
        }
    }

    internal static HavenApiException ToApiException(HttpMethod method, string path, HttpStatusCode status, string? reason, string body)
    {
        try
        {
            var error = JsonSerializer.Deserialize<ErrorResponse>(body, ApiJson.Options);
            if (error is { Error: { Length: > 0 } message })
                return new HavenApiException(message, error.Code ?? "", status);
        }
        catch (JsonException)
        {
            // Not an ErrorResponse: fall through.
        }
        var phrase = string.IsNullOrEmpty(reason) ? "" : $" ({reason})";
        return new HavenApiException($"havend answered HTTP {(int)status}{phrase} to {method} {path}", "", status);
    }

    string? LoadToken()
    {
        if (tokenLoaded)
            return token;
        tokenLoaded = true;
        token = endpoint.Token;
        if (token is null && endpoint.TokenFile is { } file)
        {
            try
            {
                token = File.ReadAllText(file).Trim();
                if (token.Length == 0)
                    token = null;
            }
            catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
            {
                // No token file: send no token; the daemon (if any) says what it thinks of that.
                token = null;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new HavenUnreachableException(endpoint.Display, $"cannot read token file {file}: {e.Message}", e);
            }
        }
        return token;
    }

    string ConnectFailureReason(HttpRequestException e)
    {
        if (endpoint.SocketPath is { } socket && !File.Exists(socket))
            return "the socket does not exist (is havend running?)";
        var inner = Innermost(e);
        if (inner is SocketException { SocketErrorCode: SocketError.ConnectionRefused })
            return "connection refused (is havend running?)";
        return inner.Message;
    }

    static bool IsConnectError(HttpRequestException e) => e.HttpRequestError is
        HttpRequestError.ConnectionError or HttpRequestError.NameResolutionError or
        HttpRequestError.SecureConnectionError or HttpRequestError.ProxyTunnelError;

    static Exception Innermost(Exception e)
    {
        while (e.InnerException is not null)
            e = e.InnerException;
        return e;
    }
}
