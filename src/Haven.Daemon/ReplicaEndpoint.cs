using System.Net;
using Haven.Host;
using Haven.Replication;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Https;

namespace Haven.Daemon;

/// <summary>
/// This host's side of replication transport: its identity (<c>&lt;data&gt;/tls/host.crt</c>), the certificates it trusts
/// (<c>&lt;data&gt;/tls/trusted/</c>), and the replica server: its settings (<c>&lt;data&gt;/replica-server.json</c>) and,
/// while enabled, a listener of its own (HTTP/2 + mutual TLS, gRPC only; the API and its token are not served there).
/// Enabling, disabling or moving the listener takes effect at once; a listen address that cannot be bound is
/// refused with nothing changed.
/// </summary>
public sealed class ReplicaEndpoint : IAsyncDisposable
{
    readonly string settingsFile;
    readonly SemaphoreSlim gate = new(1, 1);
    volatile ReplicaAuthorization settings;
    WebApplication? listener;
    IPEndPoint? listening;

    ReplicaEndpoint(string settingsFile, HostIdentity identity, TrustStore trust, ReplicaAuthorization settings)
    {
        this.settingsFile = settingsFile;
        Identity = identity;
        Trust = trust;
        this.settings = settings;
    }

    public HostIdentity Identity { get; }
    /// <summary>The host whose replica VMs this server keeps (set once havend has opened it).</summary>
    public Haven.Host.HavenHost? Host { get; set; }
    public TrustStore Trust { get; }
    public ILogger Log { get; set; } = Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance;
    public ReplicaAuthorization Settings => settings;
    public bool Listening => listener is not null;
    /// <summary>Why the persisted listen address could not be bound at start-up (null otherwise).</summary>
    public string? ListenError { get; private set; }

    /// <summary>Loads (or creates) the identity and loads the settings. Throws with one line when either is unusable.</summary>
    public static ReplicaEndpoint Open(string dataDir, string? hostName)
    {
        var tlsDir = Path.Combine(dataDir, "tls");
        var identity = HostIdentity.LoadOrCreate(tlsDir, hostName ?? DefaultHostName());
        return new ReplicaEndpoint(Path.Combine(dataDir, ReplicaAuthorization.FileName), identity, new TrustStore(tlsDir),
            ReplicaAuthorization.Load(Path.Combine(dataDir, ReplicaAuthorization.FileName)));
    }

    /// <summary>The machine name, lower-cased, with characters a host name cannot hold replaced by '-'.</summary>
    static string DefaultHostName()
    {
        var name = new string([.. Environment.MachineName.ToLowerInvariant().Select(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '.' ? c : '-')]).Trim('.');
        return name.Length == 0 ? "localhost" : name;
    }

    /// <summary>At start-up: listens when the replica server is enabled. A failure to bind is reported, not fatal (the API fixes it).</summary>
    public async Task StartAsync()
    {
        var s = settings;
        if (!s.Enabled || s.Listen is null) return;
        try
        {
            var endpoint = ReplicaAuthorization.ParseListen(s.Listen);
            listener = await StartListenerAsync(endpoint);
            listening = endpoint;
            Log.LogInformation("replica server listening on {Listen} as {HostName}", s.Listen, Identity.Name);
        }
        catch (Exception e) when (e is IOException or ArgumentException or InvalidOperationException)
        {
            ListenError = $"cannot listen on {s.Listen}: {e.Message}".ReplaceLineEndings(" ");
            Log.LogError("replica server not started: {Error}", ListenError);
        }
    }

    /// <summary>
    /// Applies <paramref name="change"/> to the settings: checks the result, (re)binds or stops the listener as needed,
    /// then saves. Bad settings throw <see cref="HavenException"/> (invalid argument) and a listen address that cannot be
    /// bound a conflict, both with nothing changed.
    /// </summary>
    public async Task<ReplicaAuthorization> UpdateAsync(Func<ReplicaAuthorization, ReplicaAuthorization> change, CancellationToken ct)
    {
        await gate.WaitAsync(ct);
        try
        {
            var next = change(settings);
            if (next.Problem(checkFolders: false) is { } problem)
                throw new HavenException(ErrorCode.InvalidArgument, problem);

            WebApplication? started = null;
            IPEndPoint? endpoint = null;
            if (next.Enabled)
            {
                endpoint = ReplicaAuthorization.ParseListen(next.Listen!);
                if (listener is null || !endpoint.Equals(listening))
                {
                    try
                    {
                        started = await StartListenerAsync(endpoint);
                    }
                    catch (Exception e) when (e is IOException or InvalidOperationException)
                    {
                        throw new HavenException(ErrorCode.Conflict, $"cannot listen on {next.Listen}: {e.Message}", e);
                    }
                }
            }
            try
            {
                next.Save(settingsFile);
            }
            catch
            {
                if (started is not null) await started.DisposeAsync();
                throw;
            }
            settings = next;
            if (started is not null || !next.Enabled)
            {
                var old = listener;
                listener = started;
                listening = started is null ? null : endpoint;
                ListenError = null;
                if (old is not null)
                {
                    await old.StopAsync(CancellationToken.None);
                    await old.DisposeAsync();
                }
            }
            return next;
        }
        finally
        {
            gate.Release();
        }
    }

    async Task<WebApplication> StartListenerAsync(IPEndPoint endpoint)
    {
        var builder = WebApplication.CreateSlimBuilder();
        DaemonLogging.Configure(builder.Logging);
        builder.WebHost.UseKestrelHttpsConfiguration();
        builder.WebHost.ConfigureKestrel(k =>
        {
            // A cycle is one stream of extents of up to 1 MiB (4 MiB zeroes): windows of a few extents let the primary
            // send the next while this side writes the previous one (the defaults, 768 KiB, stall every extent).
            k.Limits.Http2.InitialStreamWindowSize = 4 << 20;
            k.Limits.Http2.InitialConnectionWindowSize = 8 << 20;
        });
        builder.WebHost.ConfigureKestrel(k => k.Listen(endpoint, listen =>
        {
            listen.Protocols = HttpProtocols.Http2;
            listen.UseHttps(new HttpsConnectionAdapterOptions
            {
                // Read at every handshake, so a replaced certificate is used by the next connection.
                ServerCertificateSelector = (_, _) => Identity.Certificate,
                ClientCertificateMode = ClientCertificateMode.RequireCertificate,
                CheckCertificateRevocation = false,
                ClientCertificateValidation = (certificate, _, _) =>
                {
                    if (Trust.Validate(certificate, out var error)) return true;
                    Log.LogWarning("replica server refused a TLS connection: {Error}", error);
                    return false;
                },
            });
        }));
        builder.Services.AddGrpc(o =>
        {
            o.MaxReceiveMessageSize = ReplicaChannel.MaxMessageSize;
            o.MaxSendMessageSize = ReplicaChannel.MaxMessageSize;
            o.EnableDetailedErrors = false;
        });
        builder.Services.AddSingleton(this);
        var app = builder.Build();
        app.MapGrpcService<ReplicaGrpcService>();
        try
        {
            await app.StartAsync();
        }
        catch
        {
            await app.DisposeAsync();
            throw;
        }
        return app;
    }

    public async ValueTask DisposeAsync()
    {
        if (listener is { } l)
        {
            listener = null;
            await l.StopAsync(CancellationToken.None);
            await l.DisposeAsync();
        }
        gate.Dispose();
    }
}
