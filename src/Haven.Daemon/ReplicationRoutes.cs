using System.Diagnostics;
using System.Security.Cryptography.X509Certificates;
using Haven.Api;
using Haven.Host;
using Haven.Replication;

namespace Haven.Daemon;

/// <summary>Routes for host identity, trust, the replica server and host-to-host tests (docs/api.md, docs/replication.md).</summary>
public static class ReplicationRoutes
{
    public static void Map(RouteGroupBuilder v1)
    {
        v1.MapGet("/host/certificate", (ReplicaEndpoint r) => CertificateInfo(r.Identity));
        v1.MapPut("/host/certificate", (ReplicaEndpoint r, HostCertificateSetRequest req) =>
        {
            Checked(() => r.Identity.Replace(req.CertificatePem ?? "", req.KeyPem ?? ""));
            return CertificateInfo(r.Identity);
        });

        v1.MapGet("/host/trusted", (ReplicaEndpoint r) => r.Trust.List().Select(Trusted).ToList());
        v1.MapPost("/host/trusted", (ReplicaEndpoint r, TrustAddRequest req) => Trusted(Checked(() => r.Trust.Add(req.Pem ?? "", req.CertificateAuthority))));
        v1.MapDelete("/host/trusted/{thumbprint}", (ReplicaEndpoint r, string thumbprint) =>
        {
            if (!Checked(() => r.Trust.Remove(thumbprint)))
                throw new HavenException(ErrorCode.NotFound, $"no trusted certificate has the thumbprint {thumbprint}");
            return Results.NoContent();
        });

        v1.MapGet("/replica-server", (ReplicaEndpoint r) => ServerInfo(r));
        v1.MapPost("/replica-server/enable", async (ReplicaEndpoint r, ReplicaServerEnableRequest? req, CancellationToken ct) =>
        {
            req ??= new ReplicaServerEnableRequest();
            if (req.DefaultStorage is { } storage) Storage(storage);
            await r.UpdateAsync(s => s with
            {
                Enabled = true,
                Listen = req.Listen ?? s.Listen,
                AllowAnyAuthenticated = req.AllowAny ?? s.AllowAnyAuthenticated,
                DefaultStorage = req.DefaultStorage ?? s.DefaultStorage,
                DefaultTrustGroup = req.DefaultTrustGroup ?? s.DefaultTrustGroup,
            }, ct);
            return ServerInfo(r);
        });
        v1.MapPost("/replica-server/disable", async (ReplicaEndpoint r, CancellationToken ct) =>
        {
            await r.UpdateAsync(s => s with { Enabled = false }, ct);
            return ServerInfo(r);
        });
        v1.MapPost("/replica-server/authorizations", async (ReplicaEndpoint r, ReplicaAuthorizationRequest req, CancellationToken ct) =>
        {
            if (HostNames.PatternProblem(req.Primary) is { } problem) throw new HavenException(ErrorCode.InvalidArgument, problem);
            Storage(req.Storage ?? "");
            var (thumbprint, ca) = Pin(r.Trust, req);
            await r.UpdateAsync(s => s.WithEntry(new ReplicaAuthorizationEntry(req.Primary, req.Storage!, req.TrustGroup, thumbprint, ca)), ct);
            return ServerInfo(r);
        });
        v1.MapDelete("/replica-server/authorizations/{primary}", async (ReplicaEndpoint r, string primary, CancellationToken ct) =>
        {
            if (HostNames.PatternProblem(primary) is { } problem) throw new HavenException(ErrorCode.InvalidArgument, problem);
            await r.UpdateAsync(s => s.WithoutEntry(primary)
                ?? throw new HavenException(ErrorCode.NotFound, $"the replica server has no authorization entry for '{primary}'"), ct);
            return ServerInfo(r);
        });

        v1.MapPost("/replication/test-connection", async (ReplicaEndpoint r, ReplicationTestConnectionRequest req, CancellationToken ct) =>
        {
            using var channel = Checked(() => ReplicaChannel.Create(req.Replica ?? "", r.Identity, r.Trust, req.ExpectedName));
            var clock = Stopwatch.StartNew();
            try
            {
                var reply = await channel.HelloAsync(null, ct);
                return new ReplicationTestConnectionResult
                {
                    Replica = req.Replica!,
                    // The name the TLS handshake proved, not the one the replica reports about itself.
                    ReplicaHost = channel.ServerCertificate is { } proved ? HostIdentity.CommonName(proved) : reply.ReplicaHost,
                    ReplicaThumbprint = channel.ServerCertificate is { } c ? HostIdentity.ThumbprintOf(c) : "",
                    ProtocolVersion = reply.ProtocolVersion,
                    StorageLocation = reply.StorageLocation,
                    TrustGroup = reply.TrustGroup.Length == 0 ? null : reply.TrustGroup,
                    PrimaryName = r.Identity.Name,
                    ElapsedMs = clock.Elapsed.TotalMilliseconds,
                };
            }
            catch (ReplicationException e)
            {
                throw new HavenException(ErrorCode.Failed, e.Message, e);
            }
        });
    }

    /// <summary>
    /// What an authorization entry pins: the given certificate thumbprint; or a CA of the trust store; or, with
    /// neither, the one trusted (non-CA) certificate whose name is exactly the primary's. A pattern without a pin, or
    /// a name with no or several trusted certificates, is refused: an entry never trusts a bare name.
    /// </summary>
    static (string? Thumbprint, string? Ca) Pin(TrustStore trust, ReplicaAuthorizationRequest req)
    {
        static HavenException Bad(string m) => new(ErrorCode.InvalidArgument, m);
        if (req.Thumbprint is not null && req.Ca is not null) throw Bad("an authorization entry pins a certificate (--thumbprint) or a CA (--ca), not both");
        foreach (var t in new[] { req.Thumbprint, req.Ca })
            if (t is not null && ReplicaAuthorization.ThumbprintProblem(t) is { } problem) throw Bad(problem);
        if (req.Thumbprint is { } thumbprint) return (thumbprint.ToUpperInvariant(), null);
        var trusted = trust.List();
        if (req.Ca is { } ca)
        {
            if (!trusted.Any(c => c.IsCertificateAuthority && string.Equals(c.Thumbprint, ca, StringComparison.OrdinalIgnoreCase)))
                throw Bad($"no trusted CA has the thumbprint {ca}; add it first with 'haven host trust add --ca FILE'");
            return (null, ca.ToUpperInvariant());
        }
        if (req.Primary.Contains('*'))
            throw Bad($"the pattern '{req.Primary}' pins nothing: give --ca THUMBPRINT (primaries with certificates from that CA) or --thumbprint");
        var named = trusted.Where(c => !c.IsCertificateAuthority && string.Equals(c.Name, req.Primary, StringComparison.OrdinalIgnoreCase)).ToList();
        return named.Count switch
        {
            1 => (named[0].Thumbprint, null),
            0 => throw Bad($"no trusted certificate is named '{req.Primary}'; add it first with 'haven host trust add FILE', or give --thumbprint or --ca"),
            _ => throw Bad($"{named.Count} trusted certificates are named '{req.Primary}'; choose one with --thumbprint"),
        };
    }

    static void Storage(string path)
    {
        if (ReplicaAuthorization.StorageProblem(path, mustExist: true) is { } problem)
            throw new HavenException(ErrorCode.InvalidArgument, problem);
    }

    /// <summary>Runs a Haven.Replication call, turning its ArgumentExceptions (bad input) into invalid-argument errors.</summary>
    static T Checked<T>(Func<T> f)
    {
        try { return f(); }
        catch (ArgumentException e) { throw new HavenException(ErrorCode.InvalidArgument, e.Message, e); }
    }

    static void Checked(Action f) => Checked(() => { f(); return 0; });

    static HostCertificateInfo CertificateInfo(HostIdentity identity)
    {
        var cert = identity.Certificate;
        return new HostCertificateInfo
        {
            Name = identity.Name,
            Thumbprint = identity.Thumbprint,
            Subject = cert.Subject,
            Issuer = cert.Issuer,
            NotBefore = new DateTimeOffset(cert.NotBefore.ToUniversalTime(), TimeSpan.Zero),
            NotAfter = new DateTimeOffset(cert.NotAfter.ToUniversalTime(), TimeSpan.Zero),
            Pem = identity.CertificatePem,
        };
    }

    static TrustedCertificateInfo Trusted(TrustedCertificate c) => new()
    {
        Thumbprint = c.Thumbprint,
        Name = c.Name,
        Subject = c.Subject,
        Issuer = c.Issuer,
        NotAfter = c.NotAfter,
        IsCertificateAuthority = c.IsCertificateAuthority,
    };

    static ReplicaServerInfo ServerInfo(ReplicaEndpoint r)
    {
        var s = r.Settings;
        return new ReplicaServerInfo
        {
            Enabled = s.Enabled,
            Listen = s.Listen,
            Listening = r.Listening,
            ListenError = r.ListenError,
            AllowAnyAuthenticated = s.AllowAnyAuthenticated,
            DefaultStorage = s.DefaultStorage,
            DefaultTrustGroup = s.DefaultTrustGroup,
            Authorizations = [.. s.Entries.Select(e => new ReplicaAuthorizationInfo
            {
                Primary = e.PrimaryPattern, Storage = e.StorageLocation, TrustGroup = e.TrustGroup, Thumbprint = e.Thumbprint, Ca = e.CaThumbprint,
            })],
            HostName = r.Identity.Name,
            Thumbprint = r.Identity.Thumbprint,
        };
    }
}
