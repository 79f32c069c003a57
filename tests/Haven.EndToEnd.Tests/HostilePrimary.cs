using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Google.Protobuf;
using Grpc.Core;
using Haven.Replication;
using Haven.Replication.V1;

namespace Haven.EndToEnd.Tests;

/// <summary>
/// A primary written for tests: the generated gRPC client on an mTLS channel with a certificate of the test's
/// choosing (self-signed, or issued by a test CA with any name), so it can send what a real primary never would.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class HostilePrimary : IDisposable
{
    readonly ReplicaChannel channel;

    public HostilePrimary(string tlsDir, string name, string replicaUrl, string replicaCertificatePem, (X509Certificate2 Cert, ECDsa Key)? certificate = null)
    {
        Identity = HostIdentity.LoadOrCreate(tlsDir, name);
        if (certificate is { } c) Identity.Replace(c.Cert.ExportCertificatePem(), c.Key.ExportPkcs8PrivateKeyPem());
        var trust = new TrustStore(tlsDir);
        trust.Add(replicaCertificatePem);
        channel = ReplicaChannel.Create(replicaUrl, Identity, trust);
    }

    public HostIdentity Identity { get; }
    public Replica.ReplicaClient Client => channel.Client;

    public static (X509Certificate2 Cert, ECDsa Key) CreateCa(string name)
    {
        var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=" + name, key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        return (request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddYears(5)), key);
    }

    /// <summary>A host certificate named <paramref name="name"/> issued by <paramref name="ca"/>.</summary>
    public static (X509Certificate2 Cert, ECDsa Key) Issue((X509Certificate2 Cert, ECDsa Key) ca, string name)
    {
        var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=" + name, key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid(HostIdentity.ServerAuthOid), new Oid(HostIdentity.ClientAuthOid)], false));
        request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(ca.Cert, true, false));
        var serial = new byte[8];
        RandomNumberGenerator.Fill(serial);
        serial[0] &= 0x7f;
        return (request.Create(ca.Cert, DateTimeOffset.UtcNow.AddHours(-1), DateTimeOffset.UtcNow.AddYears(1), serial), key);
    }

    public static EnsureReplicaRequest Vm(string vmId, string name, long diskBytes = 16 << 20) => new()
    {
        VmId = vmId, VmName = name, Vcpus = 1, MemoryMib = 64, Accelerator = "tcg", Disks = { new DiskInfo { Index = 0, SizeBytes = (ulong)diskBytes } },
    };

    public static CycleBegin Begin(string vmId, ulong cycle, ulong baseCycle, long diskBytes = 16 << 20) => new()
    {
        VmId = vmId, CycleNumber = cycle, BaseCycleNumber = baseCycle, Consistency = "crash",
        PointInTimeUnixMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(), Disks = { new DiskInfo { Index = 0, SizeBytes = (ulong)diskBytes } },
    };

    public static Extent Data(ulong offset, int length, byte fill, uint disk = 0) => new()
    {
        Disk = disk, Offset = offset, Length = (uint)length, Data = ByteString.CopyFrom(Enumerable.Repeat(fill, length).ToArray()),
    };

    /// <summary>Sends the messages as one cycle stream, optionally without completing it cleanly; the call's status code.</summary>
    public async Task<(StatusCode Code, string Detail, CycleAck? Ack)> SendCycleAsync(IEnumerable<CycleMessage> messages, CancellationToken ct)
    {
        using var call = Client.SendCycle(cancellationToken: ct);
        try
        {
            foreach (var m in messages) await call.RequestStream.WriteAsync(m, ct);
            await call.RequestStream.CompleteAsync();
            var ack = await call.ResponseAsync;
            return (StatusCode.OK, "", ack);
        }
        catch (RpcException e) { return (e.StatusCode, e.Status.Detail, null); }
    }

    /// <summary>A boot file stream: first chunk names VM, kind and size; then the data as given.</summary>
    public async Task<StatusCode> SendBootFileAsync(string vmId, BootFileKind kind, ulong size, IEnumerable<byte[]> chunks, CancellationToken ct)
    {
        using var call = Client.SendBootFile(cancellationToken: ct);
        try
        {
            var first = new BootFileChunk { VmId = vmId, Kind = kind, Size = size };
            foreach (var chunk in chunks)
            {
                first.Data = ByteString.CopyFrom(chunk);
                await call.RequestStream.WriteAsync(first, ct);
                first = new BootFileChunk();
            }
            if (first.VmId.Length > 0) await call.RequestStream.WriteAsync(first, ct);
            await call.RequestStream.CompleteAsync();
            await call.ResponseAsync;
            return StatusCode.OK;
        }
        catch (RpcException e) { return e.StatusCode; }
    }

    public static async Task<StatusCode> CodeOf(Func<Task> call)
    {
        try
        {
            await call();
            return StatusCode.OK;
        }
        catch (RpcException e) { return e.StatusCode; }
    }

    public void Dispose() => channel.Dispose();
}
