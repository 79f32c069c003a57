using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Haven.Replication;

/// <summary>
/// This host's TLS identity for host-to-host traffic: <c>&lt;tlsDir&gt;/host.crt</c> and <c>host.key</c> (PEM, the key
/// mode 0600). Made on first start (self-signed ECDSA P-256, CN and SAN DNS = the host name, 10 years, EKU server and
/// client authentication) and reused after; <see cref="Replace"/> installs a certificate the user brings. The same
/// certificate is the replica server's TLS certificate and the primary's client certificate.
/// </summary>
public sealed class HostIdentity
{
    public const string ServerAuthOid = "1.3.6.1.5.5.7.3.1";
    public const string ClientAuthOid = "1.3.6.1.5.5.7.3.2";

    readonly string certFile;
    readonly string keyFile;
    readonly Lock gate = new();
    volatile Loaded current;

    sealed record Loaded(X509Certificate2 Certificate, string Pem, string Name, string Thumbprint);

    HostIdentity(string tlsDir, Loaded loaded)
    {
        TlsDirectory = tlsDir;
        certFile = Path.Combine(tlsDir, "host.crt");
        keyFile = Path.Combine(tlsDir, "host.key");
        current = loaded;
    }

    public string TlsDirectory { get; }

    /// <summary>The certificate's common name: who this host is to its peers.</summary>
    public string Name => current.Name;

    /// <summary>With its private key, usable by Kestrel and SslStream. A new object after <see cref="Replace"/>.</summary>
    public X509Certificate2 Certificate => current.Certificate;

    /// <summary>SHA-256 of the certificate, upper-case hex (the name of its file in a peer's trust store).</summary>
    public string Thumbprint => current.Thumbprint;

    public string CertificatePem => current.Pem;

    /// <summary>Loads <c>host.crt</c>/<c>host.key</c> from <paramref name="tlsDir"/>, or creates them for <paramref name="hostName"/>.
    /// An existing certificate is kept even when <paramref name="hostName"/> differs from its name.</summary>
    public static HostIdentity LoadOrCreate(string tlsDir, string hostName)
    {
        Directory.CreateDirectory(tlsDir);
        var certFile = Path.Combine(tlsDir, "host.crt");
        var keyFile = Path.Combine(tlsDir, "host.key");
        if (File.Exists(certFile) && File.Exists(keyFile))
        {
            try
            {
                return new HostIdentity(tlsDir, Load(File.ReadAllText(certFile), File.ReadAllText(keyFile)));
            }
            catch (Exception e) when (e is CryptographicException or ArgumentException)
            {
                throw new InvalidDataException($"cannot load this host's certificate {certFile} with key {keyFile}: {e.Message}", e);
            }
        }
        if (HostNames.Problem(hostName) is { } problem)
            throw new ArgumentException(problem);
        var (certPem, keyPem) = CreateSelfSigned(hostName, DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddYears(10));
        WriteAtomically(keyFile, keyPem, secret: true);
        WriteAtomically(certFile, certPem, secret: false);
        return new HostIdentity(tlsDir, Load(certPem, keyPem));
    }

    /// <summary>A self-signed ECDSA P-256 certificate for <paramref name="hostName"/> (CN and SAN DNS), EKU server+client auth.</summary>
    public static (string CertificatePem, string KeyPem) CreateSelfSigned(string hostName, DateTimeOffset notBefore, DateTimeOffset notAfter)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(new X500DistinguishedName("CN=" + hostName), key, HashAlgorithmName.SHA256);
        var san = new SubjectAlternativeNameBuilder();
        san.AddDnsName(hostName);
        request.CertificateExtensions.Add(san.Build());
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid(ServerAuthOid), new Oid(ClientAuthOid)], false));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        using var cert = request.CreateSelfSigned(notBefore, notAfter);
        return (cert.ExportCertificatePem(), key.ExportPkcs8PrivateKeyPem());
    }

    /// <summary>
    /// Installs a certificate and key the user supplies (PEM; the first certificate in <paramref name="certPem"/> is
    /// this host's). Refused, with nothing changed, when the key does not belong to the certificate, when it is not
    /// valid now, when it has no common name, or when it has key-usage purposes but not both server and client
    /// authentication.
    /// </summary>
    public void Replace(string certPem, string keyPem)
    {
        Loaded loaded;
        try
        {
            loaded = Load(certPem, keyPem);
        }
        catch (CryptographicException e)
        {
            throw new ArgumentException("the certificate or key is not usable: " + e.Message, e);
        }
        var cert = loaded.Certificate;
        var now = DateTime.UtcNow;
        if (cert.NotAfter.ToUniversalTime() < now)
            throw new ArgumentException($"the certificate CN={loaded.Name} expired on {cert.NotAfter.ToUniversalTime():yyyy-MM-dd HH:mm} UTC");
        if (cert.NotBefore.ToUniversalTime() > now)
            throw new ArgumentException($"the certificate CN={loaded.Name} is not valid before {cert.NotBefore.ToUniversalTime():yyyy-MM-dd HH:mm} UTC");
        if (loaded.Name.Length == 0)
            throw new ArgumentException("the certificate has no common name (CN): peers know a host by it");
        if (IsCertificateAuthority(cert))
            throw new ArgumentException($"the certificate CN={loaded.Name} is a CA certificate (basic constraints CA=true): a host certificate must not be able to issue others");
        if (cert.Extensions.OfType<X509EnhancedKeyUsageExtension>().FirstOrDefault() is { } eku)
        {
            var oids = eku.EnhancedKeyUsages.Cast<Oid>().Select(o => o.Value).ToHashSet();
            var missing = new[] { (ServerAuthOid, "server authentication"), (ClientAuthOid, "client authentication") }
                .Where(p => !oids.Contains(p.Item1)).Select(p => p.Item2).ToList();
            if (missing.Count > 0)
                throw new ArgumentException($"the certificate CN={loaded.Name} is not for {string.Join(" and ", missing)} (extended key usage): a host needs both");
        }
        lock (gate)
        {
            // Key first: a crash between the two leaves a key that does not match host.crt, which LoadOrCreate reports.
            WriteAtomically(keyFile, NormalizedKeyPem(keyPem), secret: true);
            WriteAtomically(certFile, loaded.Pem, secret: false);
            current = loaded;
        }
    }

    static Loaded Load(string certPem, string keyPem)
    {
        using var fromPem = X509Certificate2.CreateFromPem(FirstCertificatePem(certPem), keyPem);
        // A key imported from PEM is ephemeral; a PKCS#12 round trip gives one every TLS stack can use.
        var cert = X509CertificateLoader.LoadPkcs12(fromPem.Export(X509ContentType.Pkcs12), null);
        return new Loaded(cert, cert.ExportCertificatePem() + "\n", CommonName(cert), ThumbprintOf(cert));
    }

    static string FirstCertificatePem(string pem)
    {
        if (!PemEncoding.TryFind(pem, out var fields))
            throw new ArgumentException("no PEM certificate found (expected -----BEGIN CERTIFICATE-----)");
        var label = pem[fields.Label];
        if (label != "CERTIFICATE")
            throw new ArgumentException($"expected a PEM CERTIFICATE, found '{label}'");
        return pem[fields.Location];
    }

    static string NormalizedKeyPem(string keyPem)
    {
        if (!PemEncoding.TryFind(keyPem, out var fields))
            throw new ArgumentException("no PEM private key found");
        return keyPem[fields.Location] + "\n";
    }

    /// <summary>Whether the certificate may issue others (basic constraints CA=true).</summary>
    public static bool IsCertificateAuthority(X509Certificate2 cert) =>
        cert.Extensions.OfType<X509BasicConstraintsExtension>().Any(b => b.CertificateAuthority);

    /// <summary>The CN of a certificate's subject ("" when there is none).</summary>
    public static string CommonName(X509Certificate2 cert) =>
        cert.SubjectName.EnumerateRelativeDistinguishedNames()
            .Where(r => !r.HasMultipleElements && r.GetSingleElementType().Value == "2.5.4.3")
            .Select(r => r.GetSingleElementValue() ?? "")
            .LastOrDefault() ?? "";

    /// <summary>SHA-256 of the certificate's DER bytes, upper-case hex.</summary>
    public static string ThumbprintOf(X509Certificate2 cert) => cert.GetCertHashString(HashAlgorithmName.SHA256);

    /// <summary>Writes a file through a temporary file, fsync and rename; <paramref name="secret"/> files are mode 0600 from the start.</summary>
    public static void WriteAtomically(string path, string content, bool secret)
    {
        var tmp = path + ".tmp";
        var options = new FileStreamOptions { Mode = FileMode.Create, Access = FileAccess.Write, Share = FileShare.None };
        if (!OperatingSystem.IsWindows())
            options.UnixCreateMode = secret ? UnixFileMode.UserRead | UnixFileMode.UserWrite
                : UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead;
        using (var stream = new FileStream(tmp, options))
        {
            stream.Write(System.Text.Encoding.UTF8.GetBytes(content));
            stream.Flush(flushToDisk: true);
        }
        if (secret && !OperatingSystem.IsWindows())
            File.SetUnixFileMode(tmp, UnixFileMode.UserRead | UnixFileMode.UserWrite); // an old .tmp may have had another mode
        File.Move(tmp, path, overwrite: true);
    }
}
