using System.Net.WebSockets;
using System.Text.Json;
using Haven.Api;
using Haven.Host;

namespace Haven.Daemon;

/// <summary>
/// GET /v1/vms/{name}/console: the VM's serial console as a WebSocket (docs/api.md). The first message is a text
/// frame, a <see cref="ConsoleStatus"/> (attached, or the error that refused it); after it, binary frames carry the
/// console's bytes both ways until either side closes. The handshake itself carries the bearer token like any request.
/// </summary>
public static class ConsoleRoutes
{
    public static void Map(RouteGroupBuilder v1)
    {
        v1.MapGet("/vms/{name}/console", AttachAsync);
        v1.MapGet("/vms/{name}/screenshot", async (HavenHost h, string name, CancellationToken ct) =>
            Results.File(await h.Consoles.ScreenshotAsync(name, ct), "image/png"));
    }

    private static async Task AttachAsync(HttpContext ctx, HavenHost h, string name)
    {
        if (!ctx.WebSockets.IsWebSocketRequest)
            throw HavenException.Invalid("the console is a WebSocket: connect with a WebSocket upgrade (haven vm console)");
        using var ws = await ctx.WebSockets.AcceptWebSocketAsync();
        var ct = ctx.RequestAborted;
        Host.Vms.ConsoleSession session;
        try { session = await h.Consoles.AttachAsync(name, ct); }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            var (_, code, message) = ErrorMiddleware.Classify(e);
            // The client drops the connection once it has read the refusal: no close handshake to wait for.
            try
            {
                await SendStatusAsync(ws, new ConsoleStatus { Error = new ErrorResponse(message, code) }, ct);
                await ws.CloseOutputAsync(WebSocketCloseStatus.PolicyViolation, "refused", ct);
            }
            catch (Exception x) when (x is WebSocketException or IOException or OperationCanceledException) { }
            return;
        }
        await using (session)
        {
            await SendStatusAsync(ws, new ConsoleStatus { Attached = true }, ct);
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
            var fromGuest = PumpFromGuestAsync(session.Stream, ws, stop.Token);
            var toGuest = PumpToGuestAsync(ws, session.Stream, stop.Token);
            if (await Task.WhenAny(fromGuest, toGuest) == fromGuest)
            {
                // QEMU closed the console (the VM stopped): say so, then wait a little for the client's close.
                try { await ws.CloseOutputAsync(WebSocketCloseStatus.NormalClosure, "the console closed (the VM stopped)", CancellationToken.None); }
                catch (Exception e) when (e is WebSocketException or IOException or InvalidOperationException) { }
                await toGuest.WaitAsync(TimeSpan.FromSeconds(5), CancellationToken.None).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            }
            stop.Cancel();
            await Task.WhenAll(fromGuest, toGuest).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }
    }

    private static Task SendStatusAsync(WebSocket ws, ConsoleStatus status, CancellationToken ct) =>
        ws.SendAsync(JsonSerializer.SerializeToUtf8Bytes(status, ApiJson.Options), WebSocketMessageType.Text, true, ct);

    private static async Task PumpFromGuestAsync(Stream guest, WebSocket ws, CancellationToken ct)
    {
        var buffer = new byte[4096];
        try
        {
            int n;
            while ((n = await guest.ReadAsync(buffer, ct)) > 0)
                await ws.SendAsync(buffer.AsMemory(0, n), WebSocketMessageType.Binary, true, ct);
        }
        catch (Exception e) when (e is IOException or WebSocketException or OperationCanceledException or ObjectDisposedException or InvalidOperationException) { }
    }

    private static async Task PumpToGuestAsync(WebSocket ws, Stream guest, CancellationToken ct)
    {
        var buffer = new byte[4096];
        try
        {
            while (true)
            {
                var r = await ws.ReceiveAsync(buffer, ct);
                if (r.MessageType == WebSocketMessageType.Close)
                {
                    if (ws.State == WebSocketState.CloseReceived)
                        await ws.CloseOutputAsync(WebSocketCloseStatus.NormalClosure, "detached", CancellationToken.None);
                    return;
                }
                await guest.WriteAsync(buffer.AsMemory(0, r.Count), ct);
            }
        }
        catch (Exception e) when (e is IOException or WebSocketException or OperationCanceledException or ObjectDisposedException or InvalidOperationException) { }
    }
}
