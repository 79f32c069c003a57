using Haven.Api;
using Haven.Daemon;
using Haven.Host;
using System.Text.Json;

[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]

// havend: one per host. Owns the data folder (state database, disks, QEMU runtime files) and serves
// the API on a unix socket in it, and optionally on a loopback TCP port.
var dataDir = Arg("--data") ?? Environment.GetEnvironmentVariable("HAVEN_HOME")
    ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".local", "share", "haven");
var listen = Arg("--listen");
var hostName = Arg("--host-name");
var levelArg = Arg("--log-level") ?? "Information";
if (DaemonLogging.ParseLevel(levelArg) is not { } level)
{
    Console.Error.WriteLine($"havend: --log-level takes {string.Join(", ", DaemonLogging.LevelNames)}, not '{levelArg}'");
    return 2;
}
DaemonLogging.MinimumLevel = level;
// Disposed last: flushes what is still queued for stdout.
using var logs = LoggerFactory.Create(DaemonLogging.Configure);
var log = logs.CreateLogger("Haven.Daemon");

// Everything havend and its children (qemu-img, qemu-nbd, QEMU) create is owner-only from the start; a data
// folder an earlier version or a user left readable by others is closed (docs/architecture.md, "Where state lives").
Haven.Qemu.OwnerOnly.SetUmask();
HavenHost host;
try
{
    foreach (var fix in Haven.Qemu.OwnerOnly.RestrictTree(Path.GetFullPath(dataDir)))
        Console.Error.WriteLine("havend: fixed access: " + fix);
    host = new HavenHost(dataDir, new HavenHostOptions { LoggerFactory = logs });
}
catch (Exception e)
{
    log.LogCritical("cannot open data folder {DataDir}: {Error}", dataDir, e.Message.ReplaceLineEndings(" "));
    return 1;
}
var report = await host.StartAsync();
Console.WriteLine($"havend: data {host.Paths.Root}; reattached {report.VmsReattached} VM(s); repaired {report.OperationsRepaired.Count} operation(s); " +
    $"removed {report.OrphanFilesRemoved.Count} orphan file(s) ({report.OrphanLayersRemoved} layer(s), {report.OrphanStatesRemoved} memory state(s)), " +
    $"{report.OrphanNodesRemoved.Count} orphan node(s), {report.OrphanProcessesStopped} orphan process(es), {report.OrphanTapsRemoved.Count} orphan tap(s)");
foreach (var op in report.OperationsRepaired) Console.WriteLine("havend: repaired " + op);
foreach (var vm in report.VmsUnresponsive) Console.WriteLine("havend: " + vm);

ReplicaEndpoint replica;
try
{
    replica = ReplicaEndpoint.Open(host.Paths.Root, hostName);
    replica.Host = host;
    replica.Log = logs.CreateLogger("Haven.Daemon.ReplicaServer");
    replica.Trust.Log = replica.Log;
}
catch (Exception e) when (e is InvalidDataException or ArgumentException or IOException or UnauthorizedAccessException)
{
    log.LogCritical("{Error}", e.Message.ReplaceLineEndings(" "));
    await host.DisposeAsync();
    return 1;
}

var token = ApiToken.LoadOrCreate(host.Paths.TokenFile);
File.Delete(host.Paths.ApiSocket);

var builder = WebApplication.CreateSlimBuilder();
DaemonLogging.Configure(builder.Logging);
builder.WebHost.ConfigureKestrel(k =>
{
    k.ListenUnixSocket(host.Paths.ApiSocket);
    if (listen is not null)
    {
        var uri = new Uri(listen);
        if (!System.Net.IPAddress.TryParse(uri.Host, out var ip) || !System.Net.IPAddress.IsLoopback(ip))
            throw new ArgumentException("--listen takes a loopback address, e.g. http://127.0.0.1:7480");
        k.Listen(ip, uri.Port);
    }
});
builder.Services.ConfigureHttpJsonOptions(o =>
{
    o.SerializerOptions.PropertyNamingPolicy = JsonNamingPolicy.CamelCase;
    o.SerializerOptions.DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull;
});
builder.Services.AddSingleton(host);
builder.Services.AddSingleton(replica);
builder.Services.AddSingleton<VmReplication>();
builder.Services.AddHostedService<ReplicationScheduler>();
builder.Services.AddHostedService<JobScheduler>();
// Binding failures (malformed JSON, missing body) throw, so ErrorMiddleware answers them with one line.
builder.Services.Configure<Microsoft.AspNetCore.Routing.RouteHandlerOptions>(o => o.ThrowOnBadRequest = true);
var app = builder.Build();
app.UseMiddleware<ErrorMiddleware>();
app.UseWebSockets(); // the VM console (ConsoleRoutes)
app.UseMiddleware<TokenAuthMiddleware>(token);
Routes.Map(app);
await app.StartAsync();
await replica.StartAsync();
File.SetUnixFileMode(host.Paths.ApiSocket, UnixFileMode.UserRead | UnixFileMode.UserWrite);
Console.WriteLine($"havend: listening on unix:{host.Paths.ApiSocket}" + (listen is null ? "" : " and " + listen));
// Autostart VMs start after reconciliation, while the API already serves (each start is a logged operation).
var autostarted = await host.Vms.AutostartAsync(app.Lifetime.ApplicationStopping);
if (autostarted.Count > 0) Console.WriteLine("havend: autostart started " + string.Join(", ", autostarted.Order(StringComparer.Ordinal)));
await app.WaitForShutdownAsync();
await replica.DisposeAsync();
await host.DisposeAsync();
return 0;

string? Arg(string name)
{
    var i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
}
