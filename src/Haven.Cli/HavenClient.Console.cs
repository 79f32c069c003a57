using System.Net;
using System.Net.WebSockets;
using System.Text.Json;
using Haven.Api;

namespace Haven.Cli;

public sealed partial class HavenClient
{
    public Task<HostShutdownResult> ShutdownVmsAsync(HostShutdownRequest request, CancellationToken ct) =>
        SendAsync<HostShutdownResult>(HttpMethod.Post, "/v1/host/shutdown-vms", request, ct);

    /// <summary>GET /v1/vms/{name}/screenshot: the display as PNG bytes.</summary>
    public async Task<byte[]> GetScreenshotAsync(string vm, CancellationToken ct)
    {
        using var response = await SendCoreAsync(HttpMethod.Get, VmPath(vm) + "/screenshot", null, ct);
        try { return await response.Content.ReadAsByteArrayAsync(ct); }
        catch (Exception e) when (e is HttpRequestException or IOException)
        {
            throw new HavenProtocolException($"lost connection to havend at {endpoint.Display}: {Innermost(e).Message}", e);
        }
    }

    /// <summary>
    /// Attaches to the VM's serial console (a WebSocket, docs/api.md): returns it once havend said "attached";
    /// a refusal (VM off, already attached) is thrown as the <see cref="HavenApiException"/> havend sent.
    /// </summary>
    public async Task<WebSocket> AttachConsoleAsync(string vm, CancellationToken ct)
    {
        var path = VmPath(vm) + "/console";
        var uri = new UriBuilder(new Uri(endpoint.BaseAddress, path)) { Scheme = endpoint.BaseAddress.Scheme == "https" ? "wss" : "ws" }.Uri;
        var ws = new ClientWebSocket();
        ws.Options.CollectHttpResponseDetails = true;
        if (LoadToken() is { } t) ws.Options.SetRequestHeader("Authorization", "Bearer " + t);
        try
        {
            try { await ws.ConnectAsync(uri, http, ct); }
            catch (WebSocketException e) when (ws.HttpStatusCode is not 0 and not HttpStatusCode.SwitchingProtocols)
            {
                throw ws.HttpStatusCode == HttpStatusCode.Unauthorized
                    ? new HavenApiException("missing or wrong API token", "unauthorized", HttpStatusCode.Unauthorized)
                    : new HavenApiException($"havend answered HTTP {(int)ws.HttpStatusCode} to GET {path}: {e.Message}", "", ws.HttpStatusCode);
            }
            catch (WebSocketException e) when (e.InnerException is HttpRequestException h && IsConnectError(h) && !connectedOnce)
            {
                throw new HavenUnreachableException(endpoint.Display, ConnectFailureReason(h), e);
            }
            catch (WebSocketException e)
            {
                throw new HavenProtocolException($"lost connection to havend at {endpoint.Display}: {Innermost(e).Message}", e);
            }
            var buffer = new byte[64 * 1024];
            var r = await ws.ReceiveAsync(buffer, ct);
            ConsoleStatus? status = null;
            try { if (r.MessageType == WebSocketMessageType.Text) status = JsonSerializer.Deserialize<ConsoleStatus>(buffer.AsSpan(0, r.Count), ApiJson.Options); }
            catch (JsonException) { }
            if (status?.Error is { } error)
                throw new HavenApiException(error.Error, error.Code ?? "", StatusForErrorCode(error.Code));
            if (status is not { Attached: true })
                throw new HavenProtocolException($"havend's console answer to GET {path} was not a console status");
            return ws;
        }
        catch
        {
            ws.Dispose();
            throw;
        }
    }
}
