using Haven.Api;
using Haven.Host;
using Microsoft.Extensions.Logging.Console;

namespace Haven.Daemon;

/// <summary>
/// havend's logs: one line per entry on stdout. Under systemd (stdout is the journal: JOURNAL_STREAM set) the
/// systemd formatter, whose "&lt;N&gt;" prefix journald turns into the entry's priority; otherwise the simple
/// formatter with a UTC timestamp, colours only on a terminal. ASP.NET Core's own categories log from Warning.
/// </summary>
public static class DaemonLogging
{
    /// <summary>The level <c>--log-level</c> chose; Information by default.</summary>
    public static LogLevel MinimumLevel { get; set; } = LogLevel.Information;

    public static readonly string[] LevelNames = ["Trace", "Debug", "Information", "Warning", "Error", "Critical"];

    /// <summary>Trace..Critical (any case); null for anything else.</summary>
    public static LogLevel? ParseLevel(string text)
    {
        var i = Array.FindIndex(LevelNames, n => n.Equals(text, StringComparison.OrdinalIgnoreCase));
        return i < 0 ? null : (LogLevel)i;
    }

    public static void Configure(ILoggingBuilder logging)
    {
        logging.ClearProviders();
        logging.SetMinimumLevel(MinimumLevel);
        var framework = MinimumLevel > LogLevel.Warning ? MinimumLevel : LogLevel.Warning;
        logging.AddFilter("Microsoft", framework);
        logging.AddFilter("Grpc", framework);
        if (Environment.GetEnvironmentVariable("JOURNAL_STREAM") is { Length: > 0 })
            logging.AddSystemdConsole(o => { o.IncludeScopes = true; o.UseUtcTimestamp = true; });
        else
            logging.AddSimpleConsole(o =>
            {
                o.SingleLine = true;
                o.IncludeScopes = true;
                o.UseUtcTimestamp = true;
                o.TimestampFormat = "yyyy-MM-ddTHH:mm:ss.fffZ ";
                o.ColorBehavior = Console.IsOutputRedirected ? LoggerColorBehavior.Disabled : LoggerColorBehavior.Default;
            });
    }

    /// <summary>
    /// Every API request that changes something (not GET) is one operation: logged at its start, end or failure
    /// with the VM (the route's {name} under /vms, or the name of a VM being created), an operation id and the duration.
    /// </summary>
    public static void LogOperations(RouteGroupBuilder v1) => v1.AddEndpointFilter(async (ctx, next) =>
    {
        var request = ctx.HttpContext.Request;
        if (HttpMethods.IsGet(request.Method)) return await next(ctx);
        var pattern = (ctx.HttpContext.GetEndpoint() as RouteEndpoint)?.RoutePattern.RawText ?? request.Path.ToString();
        var vm = pattern.StartsWith("/v1/vms/{name}", StringComparison.Ordinal) ? ctx.HttpContext.GetRouteValue("name") as string
            : ctx.Arguments.OfType<VmCreateRequest>().FirstOrDefault()?.Name ?? ctx.Arguments.OfType<LibvirtImportRequest>().FirstOrDefault()?.Name;
        var host = ctx.HttpContext.RequestServices.GetRequiredService<HavenHost>();
        return await host.RunOperationAsync(request.Method + " " + pattern, vm, async () => await next(ctx));
    });
}
