using System.Security.Cryptography;
using System.Text;
using Haven.Api;
using Haven.Host;
using Haven.Qemu.GuestAgent;
using Haven.Qemu.Images;
using Haven.Qemu.Qmp;

namespace Haven.Daemon;

public sealed class TokenAuthMiddleware(RequestDelegate next, string token)
{
    private readonly byte[] _expected = Encoding.UTF8.GetBytes("Bearer " + token);

    public async Task InvokeAsync(HttpContext ctx)
    {
        var given = Encoding.UTF8.GetBytes(ctx.Request.Headers.Authorization.ToString());
        if (!CryptographicOperations.FixedTimeEquals(given, _expected))
        {
            ctx.Response.StatusCode = StatusCodes.Status401Unauthorized;
            await ctx.Response.WriteAsJsonAsync(new ErrorResponse("missing or wrong API token", "unauthorized"), ApiJson.Options);
            return;
        }
        await next(ctx);
    }
}

/// <summary>Turns every failure into one clear line in an <see cref="ErrorResponse"/>.</summary>
public sealed class ErrorMiddleware(RequestDelegate next, ILogger<ErrorMiddleware> log)
{
    public async Task InvokeAsync(HttpContext ctx)
    {
        try { await next(ctx); }
        catch (Exception e) when (!ctx.Response.HasStarted)
        {
            var (status, code, message) = Classify(e);
            if (status == 500) log.LogError(e, "request {Path} failed", ctx.Request.Path);
            ctx.Response.StatusCode = status;
            await ctx.Response.WriteAsJsonAsync(new ErrorResponse(message, code), ApiJson.Options);
        }
    }

    /// <summary>HTTP status, error code and one-line message for a failure.</summary>
    public static (int Status, string Code, string Message) Classify(Exception e)
    {
        var (status, code, message) = e switch
        {
            HavenException h => (h.Code switch
            {
                ErrorCode.InvalidArgument => 400,
                ErrorCode.NotFound => 404,
                ErrorCode.Conflict => 409,
                _ => 500,
            }, h.Code switch
            {
                ErrorCode.InvalidArgument => "invalid_argument",
                ErrorCode.NotFound => "not_found",
                ErrorCode.Conflict => "conflict",
                _ => "failed",
            }, h.Message),
            BadHttpRequestException b => (400, "invalid_argument", "malformed request: " + (b.InnerException?.Message ?? b.Message)),
            System.Text.Json.JsonException j => (400, "invalid_argument", "malformed JSON: " + j.Message),
            Haven.Repository.RepositoryLockedException => (409, "conflict", e.Message),
            Haven.Repository.RepositoryReadOnlyException or Haven.Repository.UpgradeRefusedException => (409, "conflict", e.Message),
            Haven.Storage.StoreAccessDeniedException => (400, "invalid_argument", e.Message),
            Haven.Host.Replication.ReplicaOutOfSyncException => (409, "conflict", e.Message),
            Haven.Replication.ReplicationException => (500, "failed", e.Message),
            InvalidDataException => (500, "failed", e.Message), // a peer's answer refused (e.g. a replica's block hashes)
            Haven.Repository.RepositoryException or Haven.Storage.StoreException or Haven.Nbd.NbdException => (500, "failed", e.Message),
            ToolFailedException or QmpException or QmpConnectionException or GuestAgentException or GuestAgentUnavailableException
                => (500, "failed", e.Message),
            _ => (500, "internal", "internal error: " + e.Message),
        };
        return (status, code, message.ReplaceLineEndings(" "));
    }
}
