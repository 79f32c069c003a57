using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Microsoft.Extensions.Logging;

namespace Haven.Replication;

/// <summary>A certificate this host trusts: a peer's self-signed certificate, or a CA that signs peers' certificates.</summary>
public sealed record TrustedCertificate(string Thumbprint, string Name, string Subject, string Issuer, DateTimeOffset NotAfter, bool IsCertificateAuthority);

/// <summary>
/// A peer as its validated certificate names it: its CN, its own thumbprint, and the thumbprints of the trusted CAs
/// its chain runs through (empty for a trusted self-signed certificate). Authorization entries and replica
/// ownership pin one of these (docs/replication.md, "Authorization").
/// </summary>
public sealed record PeerCredential(string Name, string Thumbprint, IReadOnlyList<string> CaThumbprints);

/// <summary>
/// The certificates this host trusts for host-to-host TLS: <c>&lt;tlsDir&gt;/trusted/&lt;thumbprint&gt;.crt</c>. A peer is
/// trusted when its certificate chains (no revocation check) to one of them, which also holds for a trusted
/// self-signed certificate itself. The operating system's CA store plays no part.
/// </summary>
public sealed class TrustStore
{
    readonly string dir;
    readonly Lock gate = new();
    volatile X509Certificate2Collection snapshot = [];

    public TrustStore(string tlsDir)
    {
        dir = Path.Combine(tlsDir, "trusted");
        Directory.CreateDirectory(dir);
        Reload();
    }

    /// <summary>
    /// Adds the (first) certificate of <paramref name="pem"/>; adding one already trusted changes nothing. A CA
    /// certificate (which trusts everything it issues) is refused unless <paramref name="certificateAuthority"/>;
    /// with it, only a CA is accepted.
    /// </summary>
    public TrustedCertificate Add(string pem, bool certificateAuthority = false)
    {
        X509Certificate2 cert;
        try
        {
            if (!PemEncoding.TryFind(pem, out var fields) || pem[fields.Label] != "CERTIFICATE")
                throw new ArgumentException("no PEM certificate found (expected -----BEGIN CERTIFICATE-----)");
            cert = X509Certificate2.CreateFromPem(pem[fields.Location]);
        }
        catch (CryptographicException e)
        {
            throw new ArgumentException("the certificate is not readable: " + e.Message, e);
        }
        using (cert)
        {
            var info = Describe(cert);
            if (info.IsCertificateAuthority && !certificateAuthority)
                throw new ArgumentException($"CN={info.Name} (thumbprint {info.Thumbprint}) is a CA certificate: trusting it trusts every certificate it issues; add it with --ca if that is what you want");
            if (!info.IsCertificateAuthority && certificateAuthority)
                throw new ArgumentException($"CN={info.Name} (thumbprint {info.Thumbprint}) is not a CA certificate (no basic constraints CA=true); add it without --ca");
            lock (gate)
            {
                HostIdentity.WriteAtomically(Path.Combine(dir, info.Thumbprint + ".crt"), cert.ExportCertificatePem() + "\n", secret: false);
                Reload();
            }
            return info;
        }
    }

    /// <summary>Stops trusting a certificate; false when none has that thumbprint (case does not matter).</summary>
    public bool Remove(string thumbprint)
    {
        if (thumbprint.Length == 0 || !thumbprint.All(char.IsAsciiHexDigit))
            throw new ArgumentException($"'{thumbprint}' is not a thumbprint (hexadecimal SHA-256 of a certificate)");
        lock (gate)
        {
            var file = Path.Combine(dir, thumbprint.ToUpperInvariant() + ".crt");
            if (!File.Exists(file)) return false;
            File.Delete(file);
            Reload();
            return true;
        }
    }

    public IReadOnlyList<TrustedCertificate> List() =>
        snapshot.Select(Describe).OrderBy(c => c.Name, StringComparer.OrdinalIgnoreCase).ThenBy(c => c.Thumbprint, StringComparer.Ordinal).ToList();

    /// <summary>Whether <paramref name="peer"/> chains to a trusted certificate now; else a one-line reason.</summary>
    public bool Validate(X509Certificate2 peer, out string error) => Identify(peer, out error) is not null;

    /// <summary>
    /// The peer's credential when its certificate chains to a trusted certificate now and is not itself a CA (a host
    /// certificate must not issue others); else null and a one-line reason.
    /// </summary>
    public PeerCredential? Identify(X509Certificate2 peer, out string error)
    {
        if (HostIdentity.IsCertificateAuthority(peer))
        {
            error = $"certificate CN={HostIdentity.CommonName(peer)} (thumbprint {HostIdentity.ThumbprintOf(peer)}) is a CA certificate; a host certificate must not be one";
            return null;
        }
        var trusted = snapshot;
        // A self-signed certificate trusted as itself needs no chain. Building one anyway is ambiguous when the store
        // also holds an older self-signed certificate of the same name (a host that made a new one): the builder may
        // pick the old one as the issuer and refuse a certificate that is trusted exactly.
        if (peer.SubjectName.RawData.AsSpan().SequenceEqual(peer.IssuerName.RawData) && peer.NotBefore <= DateTime.Now && DateTime.Now <= peer.NotAfter
            && trusted.Any(t => t.RawData.AsSpan().SequenceEqual(peer.RawData)))
        {
            error = "";
            return new PeerCredential(HostIdentity.CommonName(peer), HostIdentity.ThumbprintOf(peer), []);
        }
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.AddRange(trusted);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        chain.ChainPolicy.VerificationTime = DateTime.Now;
        chain.ChainPolicy.VerificationTimeIgnored = false;
        chain.ChainPolicy.DisableCertificateDownloads = true;
        if (chain.Build(peer))
        {
            error = "";
            // Above the peer's own certificate a chain holds only CAs (X509Chain checks basic constraints).
            var cas = chain.ChainElements.Skip(1).Select(e => HostIdentity.ThumbprintOf(e.Certificate)).ToList();
            return new PeerCredential(HostIdentity.CommonName(peer), HostIdentity.ThumbprintOf(peer), cas);
        }
        var statuses = chain.ChainElements.SelectMany(e => e.ChainElementStatus).Concat(chain.ChainStatus)
            .Select(s => s.Status).Where(s => s != X509ChainStatusFlags.NoError).Distinct().ToList();
        string reason;
        if (peer.NotAfter.ToUniversalTime() < DateTime.UtcNow)
            reason = $"it expired on {peer.NotAfter.ToUniversalTime():yyyy-MM-dd HH:mm} UTC";
        else if (peer.NotBefore.ToUniversalTime() > DateTime.UtcNow)
            reason = $"it is not valid before {peer.NotBefore.ToUniversalTime():yyyy-MM-dd HH:mm} UTC";
        else if (statuses.Contains(X509ChainStatusFlags.NotTimeValid))
            reason = "a certificate of its chain is outside its validity period";
        else if (statuses.Any(s => s is X509ChainStatusFlags.UntrustedRoot or X509ChainStatusFlags.PartialChain))
            reason = "neither it nor its issuer is in this host's trust store (add it with 'haven host trust add')";
        else
            reason = string.Join("; ", chain.ChainStatus.Select(s => s.StatusInformation.Trim()).Where(s => s.Length > 0).Distinct()) is { Length: > 0 } text
                ? text : string.Join(", ", statuses);
        error = $"certificate CN={HostIdentity.CommonName(peer)} (thumbprint {HostIdentity.ThumbprintOf(peer)}) is not trusted by this host: {reason}".ReplaceLineEndings(" ");
        return null;
    }

    public static TrustedCertificate Describe(X509Certificate2 cert) => new(
        HostIdentity.ThumbprintOf(cert),
        HostIdentity.CommonName(cert),
        cert.Subject,
        cert.Issuer,
        new DateTimeOffset(cert.NotAfter.ToUniversalTime(), TimeSpan.Zero),
        HostIdentity.IsCertificateAuthority(cert));

    /// <summary>Where unreadable trusted-certificate files are reported; nothing by default.</summary>
    public Microsoft.Extensions.Logging.ILogger Log { get; set; } = Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance;

    void Reload()
    {
        var certs = new X509Certificate2Collection();
        foreach (var file in Directory.EnumerateFiles(dir, "*.crt"))
        {
            try
            {
                certs.Add(X509Certificate2.CreateFromPem(File.ReadAllText(file)));
            }
            catch (Exception e) when (e is CryptographicException or ArgumentException or IOException)
            {
                // An unreadable file trusts nothing; List() does not show it. (Only havend writes this folder.)
                Log.LogWarning(e, "trusted certificate {File} is unreadable and trusts nothing: {Error}", file, e.Message.ReplaceLineEndings(" "));
            }
        }
        snapshot = certs;
    }
}
