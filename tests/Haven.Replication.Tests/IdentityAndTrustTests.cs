using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Haven.Replication;

[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]

namespace Haven.Replication.Tests;

public sealed class IdentityAndTrustTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("hvrepl").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    string Tls(string name) => Path.Combine(dir, name, "tls");

    [Fact]
    public void Identity_is_created_on_first_start_and_reused_after()
    {
        var tls = Tls("a");
        var first = HostIdentity.LoadOrCreate(tls, "primary-a.test");
        Assert.Equal("primary-a.test", first.Name);
        Assert.True(first.Certificate.HasPrivateKey);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(tls, "host.key")));
        Assert.True(first.Certificate.MatchesHostname("primary-a.test", allowWildcards: false, allowCommonName: false), "SAN DNS");
        var eku = first.Certificate.Extensions.OfType<X509EnhancedKeyUsageExtension>().Single().EnhancedKeyUsages.Cast<Oid>().Select(o => o.Value).ToList();
        Assert.Contains(HostIdentity.ServerAuthOid, eku);
        Assert.Contains(HostIdentity.ClientAuthOid, eku);
        Assert.InRange(first.Certificate.NotAfter, DateTime.Now.AddYears(10).AddDays(-2), DateTime.Now.AddYears(10).AddDays(2));
        Assert.IsType<ECDsa>(first.Certificate.GetECDsaPrivateKey(), exactMatch: false);

        var again = HostIdentity.LoadOrCreate(tls, "another-name");
        Assert.Equal(first.Thumbprint, again.Thumbprint);
        Assert.Equal("primary-a.test", again.Name);
        Assert.Equal(first.CertificatePem, again.CertificatePem);
    }

    [Fact]
    public void A_bad_host_name_is_refused() =>
        Assert.Throws<ArgumentException>(() => HostIdentity.LoadOrCreate(Tls("bad"), "no such/name"));

    [Fact]
    public void Replace_installs_a_matching_certificate_and_refuses_a_mismatched_key_changing_nothing()
    {
        var tls = Tls("r");
        var identity = HostIdentity.LoadOrCreate(tls, "old.test");
        var (certPem, keyPem) = HostIdentity.CreateSelfSigned("new.test", DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddYears(1));
        var (_, otherKey) = HostIdentity.CreateSelfSigned("other.test", DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddYears(1));
        var before = (identity.Thumbprint, File.ReadAllText(Path.Combine(tls, "host.crt")), File.ReadAllText(Path.Combine(tls, "host.key")));

        Assert.Throws<ArgumentException>(() => identity.Replace(certPem, otherKey));
        Assert.Throws<ArgumentException>(() => identity.Replace("garbage", keyPem));
        Assert.Equal(before, (identity.Thumbprint, File.ReadAllText(Path.Combine(tls, "host.crt")), File.ReadAllText(Path.Combine(tls, "host.key"))));

        identity.Replace(certPem, keyPem);
        Assert.Equal("new.test", identity.Name);
        Assert.True(identity.Certificate.HasPrivateKey);
        Assert.Equal(identity.Thumbprint, HostIdentity.LoadOrCreate(tls, "ignored").Thumbprint);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(tls, "host.key")));
    }

    [Fact]
    public void Replace_refuses_expired_certificates_and_ones_without_client_and_server_authentication()
    {
        var identity = HostIdentity.LoadOrCreate(Tls("x"), "x.test");
        var thumbprint = identity.Thumbprint;
        var (expired, expiredKey) = HostIdentity.CreateSelfSigned("old.test", DateTimeOffset.UtcNow.AddYears(-2), DateTimeOffset.UtcNow.AddDays(-1));
        Assert.Contains("expired", Assert.Throws<ArgumentException>(() => identity.Replace(expired, expiredKey)).Message);

        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=serveronly.test", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid(HostIdentity.ServerAuthOid)], false));
        using var serverOnly = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddYears(1));
        var e = Assert.Throws<ArgumentException>(() => identity.Replace(serverOnly.ExportCertificatePem(), key.ExportPkcs8PrivateKeyPem()));
        Assert.Contains("client authentication", e.Message);
        Assert.Equal(thumbprint, identity.Thumbprint);
    }

    /// <summary>
    /// A host that made a new certificate under the same name while its old one is still trusted: each is valid as
    /// itself, whatever order the store lists them in (a chain builder may pick the other one as the issuer).
    /// </summary>
    [Fact]
    public void Two_trusted_self_signed_certificates_of_one_name_are_each_valid()
    {
        var trust = new TrustStore(Tls("replica"));
        var certs = Enumerable.Range(0, 6).Select(i => HostIdentity.LoadOrCreate(Tls("peer" + i), "same-name.test")).ToList();
        foreach (var c in certs) trust.Add(c.CertificatePem);
        foreach (var c in certs)
        {
            Assert.True(trust.Validate(c.Certificate, out var error), error);
            Assert.Equal(c.Thumbprint, trust.Identify(c.Certificate, out _)!.Thumbprint);
        }
        var stranger = HostIdentity.LoadOrCreate(Tls("stranger"), "same-name.test");
        Assert.False(trust.Validate(stranger.Certificate, out _));
    }

    [Fact]
    public void A_trusted_self_signed_peer_is_valid_and_an_untrusted_one_is_refused_with_one_line()
    {
        var trust = new TrustStore(Tls("replica"));
        var peer = HostIdentity.LoadOrCreate(Tls("peer"), "primary-a.test");
        var stranger = HostIdentity.LoadOrCreate(Tls("stranger"), "stranger.test");

        Assert.False(trust.Validate(peer.Certificate, out var error));
        Assert.StartsWith($"certificate CN=primary-a.test (thumbprint {peer.Thumbprint}) is not trusted by this host: ", error);
        Assert.DoesNotContain('\n', error);

        var added = trust.Add(peer.CertificatePem);
        Assert.Equal(peer.Thumbprint, added.Thumbprint);
        Assert.Equal("primary-a.test", added.Name);
        Assert.False(added.IsCertificateAuthority);
        Assert.True(trust.Validate(peer.Certificate, out error), error);
        Assert.False(trust.Validate(stranger.Certificate, out _));
        Assert.Equal([peer.Thumbprint], trust.List().Select(c => c.Thumbprint));

        // Reloaded from its folder.
        var reopened = new TrustStore(Tls("replica"));
        Assert.True(reopened.Validate(peer.Certificate, out _));
        Assert.True(reopened.Remove(peer.Thumbprint.ToLowerInvariant()));
        Assert.False(reopened.Remove(peer.Thumbprint));
        Assert.False(reopened.Validate(peer.Certificate, out _));
        Assert.Empty(reopened.List());
    }

    [Fact]
    public void An_expired_trusted_certificate_is_refused()
    {
        var trust = new TrustStore(Tls("t"));
        var (pem, keyPem) = HostIdentity.CreateSelfSigned("expired.test", DateTimeOffset.UtcNow.AddYears(-2), DateTimeOffset.UtcNow.AddDays(-1));
        trust.Add(pem);
        using var cert = X509Certificate2.CreateFromPem(pem, keyPem);
        Assert.False(trust.Validate(cert, out var error));
        Assert.Contains("expired", error);
    }

    [Fact]
    public void A_certificate_signed_by_a_trusted_ca_is_valid()
    {
        using var caKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var caRequest = new CertificateRequest("CN=Haven Test CA", caKey, HashAlgorithmName.SHA256);
        caRequest.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        caRequest.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        caRequest.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(caRequest.PublicKey, false));
        using var ca = caRequest.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddYears(5));

        using var leafKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var leafRequest = new CertificateRequest("CN=host9.example.com", leafKey, HashAlgorithmName.SHA256);
        leafRequest.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid(HostIdentity.ServerAuthOid), new Oid(HostIdentity.ClientAuthOid)], false));
        leafRequest.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(ca, true, false));
        using var leaf = leafRequest.Create(ca, DateTimeOffset.UtcNow.AddHours(-1), DateTimeOffset.UtcNow.AddYears(1), [1, 2, 3, 4]);

        var trust = new TrustStore(Tls("ca"));
        Assert.False(trust.Validate(leaf, out _));
        // A CA trusts everything it issues: refused unless asked for explicitly, and then only a CA.
        var refused = Assert.Throws<ArgumentException>(() => trust.Add(ca.ExportCertificatePem()));
        Assert.Contains("is a CA certificate", refused.Message);
        Assert.Empty(trust.List());
        Assert.Throws<ArgumentException>(() => trust.Add(leaf.ExportCertificatePem(), certificateAuthority: true));
        Assert.Empty(trust.List());
        Assert.True(trust.Add(ca.ExportCertificatePem(), certificateAuthority: true).IsCertificateAuthority);
        Assert.True(trust.Validate(leaf, out var error), error);
        var peer = trust.Identify(leaf, out _)!;
        Assert.Equal(("host9.example.com", HostIdentity.ThumbprintOf(leaf)), (peer.Name, peer.Thumbprint));
        Assert.Equal([HostIdentity.ThumbprintOf(ca)], peer.CaThumbprints);
        // The CA itself, presented as a peer's certificate, is not a host.
        Assert.Null(trust.Identify(ca, out var caError));
        Assert.Contains("is a CA certificate", caError);

        // And a host can use such a certificate as its identity.
        var identity = HostIdentity.LoadOrCreate(Tls("host9"), "host9.example.com");
        identity.Replace(leaf.ExportCertificatePem(), leafKey.ExportPkcs8PrivateKeyPem());
        Assert.Equal("host9.example.com", identity.Name);
        Assert.True(trust.Validate(identity.Certificate, out _));
    }

    [Fact]
    public void A_ca_certificate_is_refused_as_a_host_certificate()
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=sneaky.test", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        using var cert = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddYears(1));
        var identity = HostIdentity.LoadOrCreate(Tls("sneaky"), "sneaky.test");
        var before = identity.Thumbprint;
        var e = Assert.Throws<ArgumentException>(() => identity.Replace(cert.ExportCertificatePem(), key.ExportPkcs8PrivateKeyPem()));
        Assert.Contains("is a CA certificate", e.Message);
        Assert.Equal(before, HostIdentity.LoadOrCreate(Tls("sneaky"), "sneaky.test").Thumbprint);
    }

    [Fact]
    public void Adding_something_that_is_not_a_certificate_is_refused()
    {
        var trust = new TrustStore(Tls("n"));
        Assert.Throws<ArgumentException>(() => trust.Add("hello"));
        Assert.Throws<ArgumentException>(() => trust.Add("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"));
        Assert.Throws<ArgumentException>(() => trust.Remove("not/hex"));
        Assert.Empty(trust.List());
    }
}
