using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;
using Grpc.Core;
using Grpc.Net.Client;
using Haven.Replication.V1;

namespace Haven.Replication;

/// <summary>
/// The primary's connection to a replica server: gRPC over HTTP/2 and mutual TLS, this host's identity as the
/// client certificate, the replica's certificate checked against this host's <see cref="TrustStore"/> (and, when
/// given, against the replica name expected and the certificate pinned for the replication: any other certificate
/// fails the handshake, trusted or not). Failures become <see cref="ReplicationException"/>s with one line.
/// </summary>
public sealed class ReplicaChannel : IDisposable
{
    /// <summary>Largest gRPC message either side accepts (an extent carries at most 4 MiB of data).</summary>
    public const int MaxMessageSize = 8 << 20;
    public const uint ProtocolVersion = 1;
    static readonly TimeSpan ConnectTimeout = TimeSpan.FromSeconds(10);

    readonly GrpcChannel channel;
    readonly HostIdentity identity;
    readonly TrustStore trust;
    volatile string? tlsError;
    volatile bool serverCertificateAccepted;
    volatile bool answered;

    /// <summary>Records that a call got an answer: a later broken connection is then not a certificate the replica refused.</summary>
    public void NoteAnswered() => answered = true;

    ReplicaChannel(Uri address, HostIdentity identity, TrustStore trust, string? expectedName, string? pinnedThumbprint)
    {
        Address = address;
        ExpectedName = expectedName;
        PinnedThumbprint = pinnedThumbprint;
        this.identity = identity;
        this.trust = trust;
        var handler = new SocketsHttpHandler
        {
            ConnectTimeout = ConnectTimeout,
            EnableMultipleHttp2Connections = true,
            SslOptions = new SslClientAuthenticationOptions
            {
                // The identity's certificate may be replaced while havend runs: pick it at handshake time.
                LocalCertificateSelectionCallback = (_, _, _, _, _) => this.identity.Certificate,
                RemoteCertificateValidationCallback = (_, certificate, _, _) => ValidateServer(certificate),
                CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
            },
        };
        channel = GrpcChannel.ForAddress(address, new GrpcChannelOptions
        {
            HttpHandler = handler,
            DisposeHttpClient = true,
            MaxReceiveMessageSize = MaxMessageSize,
            MaxSendMessageSize = MaxMessageSize,
        });
        Client = new Replica.ReplicaClient(channel);
    }

    public Uri Address { get; }
    public string? ExpectedName { get; }
    /// <summary>The only certificate (SHA-256 thumbprint) the replica server may present, when pinned.</summary>
    public string? PinnedThumbprint { get; }
    public Replica.ReplicaClient Client { get; }

    /// <summary>The replica server's certificate as seen in the last handshake (null before one).</summary>
    public X509Certificate2? ServerCertificate { get; private set; }

    /// <summary>
    /// A channel to <paramref name="address"/> (https://HOST:PORT). Connects lazily, at the first call. With
    /// <paramref name="pinnedThumbprint"/>, only the certificate of that SHA-256 thumbprint is accepted from the replica.
    /// </summary>
    public static ReplicaChannel Create(string address, HostIdentity identity, TrustStore trust, string? expectedName = null, string? pinnedThumbprint = null)
    {
        if (AddressProblem(address) is { } bad) throw new ArgumentException(bad);
        if (expectedName is not null && HostNames.Problem(expectedName) is { } problem)
            throw new ArgumentException("expected replica name: " + problem);
        return new ReplicaChannel(new Uri(address), identity, trust, expectedName, pinnedThumbprint);
    }

    /// <summary>Why <paramref name="address"/> is not a replica server address (https://HOST:PORT), or null.</summary>
    public static string? AddressProblem(string address) =>
        Uri.TryCreate(address, UriKind.Absolute, out var uri) && uri.Scheme == Uri.UriSchemeHttps && uri.AbsolutePath == "/"
            && uri.Query.Length == 0 && uri.UserInfo.Length == 0 && uri.Host.Length > 0 ? null
            : $"the replica server address must be https://HOST:PORT, e.g. https://127.0.0.1:9443 (not '{address}')";

    /// <summary>Hello: who the replica is, and whether and where it accepts this primary.</summary>
    public async Task<HelloReply> HelloAsync(string? primaryVmName, CancellationToken ct)
    {
        var request = new HelloRequest { ProtocolVersion = ProtocolVersion };
        if (primaryVmName is not null) request.PrimaryVmName = primaryVmName;
        HelloReply reply;
        try
        {
            reply = await Client.HelloAsync(request, deadline: DateTime.UtcNow.AddSeconds(60), cancellationToken: ct);
        }
        catch (RpcException e) when (!ct.IsCancellationRequested)
        {
            throw Map(e);
        }
        if (reply.ProtocolVersion != ProtocolVersion)
            throw new ReplicationException(ReplicationFailure.Protocol,
                $"the replica server at {Display} speaks replication protocol {reply.ProtocolVersion}, this host {ProtocolVersion}");
        NoteAnswered();
        return reply;
    }

    string Display => $"{Address.Scheme}://{Address.Authority}";

    bool ValidateServer(X509Certificate? certificate)
    {
        if (certificate is null)
        {
            tlsError = "it sent no certificate";
            return false;
        }
        var cert = certificate as X509Certificate2 ?? X509CertificateLoader.LoadCertificate(certificate.GetRawCertData());
        ServerCertificate = cert;
        if (!trust.Validate(cert, out var error))
        {
            tlsError = "the replica server's " + error;
            return false;
        }
        if (ExpectedName is not null && !cert.MatchesHostname(ExpectedName, allowWildcards: true, allowCommonName: true))
        {
            tlsError = $"the replica server's certificate is for '{HostIdentity.CommonName(cert)}', not for the expected '{ExpectedName}'";
            return false;
        }
        if (PinnedThumbprint is not null && !string.Equals(HostIdentity.ThumbprintOf(cert), PinnedThumbprint, StringComparison.OrdinalIgnoreCase))
        {
            tlsError = $"the replica server presented certificate CN={HostIdentity.CommonName(cert)} (thumbprint {HostIdentity.ThumbprintOf(cert)}), "
                + $"not the certificate pinned for this replication (thumbprint {PinnedThumbprint}); nothing was sent. If the replica server changed its "
                + "certificate on purpose, pin the new one with 'haven replication repin VM'";
            return false;
        }
        tlsError = null;
        serverCertificateAccepted = true;
        return true;
    }

    /// <summary>One-line exception for a failed call.</summary>
    public ReplicationException Map(RpcException e)
    {
        var where = Display;
        if (e.StatusCode == StatusCode.PermissionDenied)
            return new ReplicationException(ReplicationFailure.Refused, "the replica server refused this primary: " + e.Status.Detail, e);
        if (e.StatusCode == StatusCode.DeadlineExceeded)
            return new ReplicationException(ReplicationFailure.Unreachable, $"the replica server at {where} did not answer in time", e);
        if (e.StatusCode is StatusCode.Unavailable or StatusCode.Internal or StatusCode.Unknown && e.Status.DebugException is { } cause)
        {
            if (tlsError is { } tls)
                return new ReplicationException(ReplicationFailure.Tls, $"TLS with the replica server at {where} failed: {tls}", e);
            var inner = Chain(cause).ToList();
            // We accepted the replica's certificate and it has never answered us: with TLS 1.3 a replica that does not
            // trust our certificate just closes the connection after the handshake, which reaches us as an I/O error,
            // a reset, or an HTTP/2 handshake that never completes, whichever comes first.
            var closedAfterHandshake = serverCertificateAccepted && !answered
                && !inner.OfType<TaskCanceledException>().Any() && !inner.OfType<TimeoutException>().Any();
            if (!closedAfterHandshake && inner.OfType<SocketException>().FirstOrDefault() is { } socket)
                return new ReplicationException(ReplicationFailure.Unreachable, $"cannot reach the replica server at {where}: {SocketReason(socket)}", e);
            if (inner.OfType<TaskCanceledException>().Any() || inner.OfType<TimeoutException>().Any())
                return new ReplicationException(ReplicationFailure.Unreachable, $"cannot reach the replica server at {where}: timed out connecting", e);
            if (inner.OfType<AuthenticationException>().Any() || inner.OfType<HttpRequestException>().Any(h => h.HttpRequestError == HttpRequestError.SecureConnectionError)
                || closedAfterHandshake)
                return new ReplicationException(ReplicationFailure.Tls,
                    $"TLS with the replica server at {where} failed: it closed the connection, most likely because it does not trust this host's certificate "
                    + $"(CN={identity.Name}, thumbprint {identity.Thumbprint}; add it there with 'haven host trust add'): {inner[^1].Message}", e);
            return new ReplicationException(ReplicationFailure.Unreachable, $"cannot reach the replica server at {where}: {inner[^1].Message}", e);
        }
        return new ReplicationException(ReplicationFailure.Protocol, $"the replica server at {where} answered {e.StatusCode}: {e.Status.Detail}", e);
    }

    static string SocketReason(SocketException e) => e.SocketErrorCode switch
    {
        SocketError.ConnectionRefused => "connection refused (is its replica server enabled and listening there?)",
        SocketError.TimedOut => "timed out connecting",
        SocketError.HostNotFound or SocketError.NoData => "no such host",
        _ => e.Message,
    };

    static IEnumerable<Exception> Chain(Exception e)
    {
        for (Exception? x = e; x is not null; x = x.InnerException)
            yield return x;
    }

    public void Dispose() => channel.Dispose();
}
