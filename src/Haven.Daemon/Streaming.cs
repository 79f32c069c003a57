using System.Text.Json;
using System.Threading.Channels;
using Haven.Api;

namespace Haven.Daemon;

/// <summary>
/// Long operations answer either with one JSON body, or — when the client sends
/// "Accept: application/x-ndjson" — with a stream of <see cref="OperationEvent"/> lines (progress, then
/// the result or the error), so the CLI can draw a progress bar without polling.
/// </summary>
public static class Streaming
{
    public const string NdJson = "application/x-ndjson";

    public static async Task<IResult> RunAsync<T>(HttpContext ctx, Func<Action<OperationEvent>?, CancellationToken, Task<T>> operation)
    {
        var ct = ctx.RequestAborted;
        if (!ctx.Request.Headers.Accept.ToString().Contains(NdJson, StringComparison.Ordinal))
            return Results.Json(await operation(null, ct), ApiJson.Options);

        ctx.Response.ContentType = NdJson;
        var events = Channel.CreateBounded<OperationEvent>(new BoundedChannelOptions(64) { FullMode = BoundedChannelFullMode.DropOldest });
        var work = Task.Run(async () =>
        {
            try
            {
                var result = await operation(e => events.Writer.TryWrite(e), ct);
                events.Writer.TryWrite(new OperationEvent { Type = "result", Result = JsonSerializer.SerializeToElement(result, ApiJson.Options) });
            }
            catch (Exception e)
            {
                var (_, code, message) = ErrorMiddleware.Classify(e);
                events.Writer.TryWrite(new OperationEvent { Type = "error", Error = new ErrorResponse(message, code) });
            }
            finally { events.Writer.TryComplete(); }
        }, CancellationToken.None);
        var lastProgress = DateTime.MinValue;
        await foreach (var e in events.Reader.ReadAllAsync(CancellationToken.None))
        {
            // Progress at most ten times a second; results and errors always.
            if (e.Type == "progress" && (DateTime.UtcNow - lastProgress).TotalMilliseconds < 100) continue;
            lastProgress = DateTime.UtcNow;
            try
            {
                await ctx.Response.WriteAsync(JsonSerializer.Serialize(e, ApiJson.Options) + "\n", CancellationToken.None);
                await ctx.Response.Body.FlushAsync(CancellationToken.None);
            }
            catch (Exception x) when (x is IOException or OperationCanceledException or ObjectDisposedException)
            {
                // The client went away; the operation sees RequestAborted and ends, we keep draining.
            }
        }
        await work;
        return Results.Empty;
    }
}
