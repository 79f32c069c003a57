namespace Haven.Api;

// Host identity, trust and the replica server (docs/replication.md, routes in docs/api.md).

/// <summary>This host's certificate for host-to-host TLS (GET/PUT /v1/host/certificate).</summary>
public sealed record HostCertificateInfo
{
    /// <summary>The certificate's CN: the name peers know this host by (what replica servers authorize).</summary>
    public required string Name { get; init; }
    /// <summary>SHA-256 of the certificate, upper-case hex.</summary>
    public required string Thumbprint { get; init; }
    public required string Subject { get; init; }
    public required string Issuer { get; init; }
    public required DateTimeOffset NotBefore { get; init; }
    public required DateTimeOffset NotAfter { get; init; }
    /// <summary>The certificate (no key), PEM: give it to the hosts that should trust this one.</summary>
    public required string Pem { get; init; }
}

/// <summary>PUT /v1/host/certificate: a certificate and its private key, both PEM.</summary>
public sealed record HostCertificateSetRequest
{
    public required string CertificatePem { get; init; }
    public required string KeyPem { get; init; }
}

/// <summary>A certificate this host trusts (a peer's self-signed certificate, or a CA).</summary>
public sealed record TrustedCertificateInfo
{
    public required string Thumbprint { get; init; }
    public required string Name { get; init; }
    public required string Subject { get; init; }
    public required string Issuer { get; init; }
    public required DateTimeOffset NotAfter { get; init; }
    public bool IsCertificateAuthority { get; init; }
}

/// <summary>POST /v1/host/trusted: a PEM certificate to trust.</summary>
public sealed record TrustAddRequest
{
    public required string Pem { get; init; }
    /// <summary>The certificate is a CA, trusted for everything it issues; without it a CA certificate is refused.</summary>
    public bool CertificateAuthority { get; init; }
}

/// <summary>One authorization entry of the replica server.</summary>
public sealed record ReplicaAuthorizationInfo
{
    /// <summary>Primary server name or pattern ('*' matches any run of characters), case-insensitive.</summary>
    public required string Primary { get; init; }
    public required string Storage { get; init; }
    public string? TrustGroup { get; init; }
    /// <summary>The pinned certificate (SHA-256 thumbprint), or null for a CA entry.</summary>
    public string? Thumbprint { get; init; }
    /// <summary>The pinned issuing CA's thumbprint (CA entry), or null.</summary>
    public string? Ca { get; init; }
}

/// <summary>GET /v1/replica-server.</summary>
public sealed record ReplicaServerInfo
{
    public bool Enabled { get; init; }
    public string? Listen { get; init; }
    /// <summary>Whether havend listens for primaries now (false when disabled, or when it could not bind: see <see cref="ListenError"/>).</summary>
    public bool Listening { get; init; }
    public string? ListenError { get; init; }
    public bool AllowAnyAuthenticated { get; init; }
    public string? DefaultStorage { get; init; }
    public string? DefaultTrustGroup { get; init; }
    public List<ReplicaAuthorizationInfo> Authorizations { get; init; } = [];
    /// <summary>This host's name (its certificate's CN) and certificate thumbprint, as primaries see them.</summary>
    public required string HostName { get; init; }
    public required string Thumbprint { get; init; }
}

/// <summary>POST /v1/replica-server/enable. Null fields keep their current value.</summary>
public sealed record ReplicaServerEnableRequest
{
    /// <summary>https://LOOPBACK-IP:PORT, e.g. https://127.0.0.1:9443. Required the first time.</summary>
    public string? Listen { get; init; }
    public bool? AllowAny { get; init; }
    public string? DefaultStorage { get; init; }
    public string? DefaultTrustGroup { get; init; }
}

/// <summary>POST /v1/replica-server/authorizations: adds (or replaces) the entry for <see cref="Primary"/>.</summary>
public sealed record ReplicaAuthorizationRequest
{
    public required string Primary { get; init; }
    public required string Storage { get; init; }
    public string? TrustGroup { get; init; }
    /// <summary>Pin this certificate (SHA-256 thumbprint). Without it and <see cref="Ca"/>, the one trusted certificate named <see cref="Primary"/> is pinned.</summary>
    public string? Thumbprint { get; init; }
    /// <summary>Pin an issuing CA (its thumbprint; a CA in the trust store): primaries with certificates from it whose name matches.</summary>
    public string? Ca { get; init; }
}

/// <summary>POST /v1/replication/test-connection: this host, as a primary, says Hello to a replica server.</summary>
public sealed record ReplicationTestConnectionRequest
{
    /// <summary>https://HOST:PORT of the replica server.</summary>
    public required string Replica { get; init; }
    /// <summary>When given, the replica's certificate must be for this name (CN or SAN).</summary>
    public string? ExpectedName { get; init; }
}

/// <summary>The replica server's Hello answer.</summary>
public sealed record ReplicationTestConnectionResult
{
    public required string Replica { get; init; }
    public required string ReplicaHost { get; init; }
    public required string ReplicaThumbprint { get; init; }
    public uint ProtocolVersion { get; init; }
    public required string StorageLocation { get; init; }
    public string? TrustGroup { get; init; }
    /// <summary>This host's name as the replica saw it.</summary>
    public required string PrimaryName { get; init; }
    public double ElapsedMs { get; init; }
}
