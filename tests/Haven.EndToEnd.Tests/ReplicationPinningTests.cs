using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Haven.Api;

namespace Haven.EndToEnd.Tests;

/// <summary>
/// The primary pins its replica's certificate (real havend processes over mutual TLS): a replica that comes back with
/// another certificate, even one the primary trusts, gets nothing until the user re-pins; reverse replication is pinned
/// to the caller's own certificate, so naming another host's address sends it nothing.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class ReplicationPinningTests
{
    private const long M = 1 << 20;
    private static readonly string Later = DateTimeOffset.UtcNow.AddDays(1).ToString("O");

    private static string ThumbprintOf(string pemFile) =>
        X509Certificate2.CreateFromPem(File.ReadAllText(pemFile)).GetCertHashString(HashAlgorithmName.SHA256);

    [Fact]
    public async Task A_replica_with_another_trusted_certificate_gets_nothing_until_the_user_repins()
    {
        var ct = TestContext.Current.CancellationToken;
        var primary = new HavenWorld(ct);
        var replica = new HavenWorld(ct);
        await using var _ = primary;
        await using var __ = replica;
        var url = await ReplicationSetup.PairAsync(primary, replica);
        await primary.CreateVmAsync("web");
        var now = primary.NewModel("now");
        await primary.WriteAsync("web", now, new W(0x11, 0, 2 * M));
        await primary.OkAsync("replication", "enable", "web", "--replica", url, "--frequency", "15m", "--start-at", Later);
        var pinned = ThumbprintOf(replica.Dir.File("replica.crt"));
        Assert.Equal(pinned, (await primary.JsonAsync<ReplicationStatusInfo>("replication", "status", "web")).ReplicaThumbprint);
        Assert.Contains($"Pinned certificate  {pinned}", await primary.OkAsync("replication", "status", "web"));
        await primary.OkAsync("replication", "run", "web");

        // The replica havend comes back with a new host certificate (same name), and the primary trusts it too.
        await replica.StopDaemonAsync();
        File.Delete(Path.Combine(replica.Data, "tls", "host.crt"));
        File.Delete(Path.Combine(replica.Data, "tls", "host.key"));
        await replica.StartDaemonAsync();
        await replica.OkAsync("host", "certificate", "--out", replica.Dir.File("replica2.crt"));
        await primary.OkAsync("host", "trust", "add", replica.Dir.File("replica2.crt"));
        var presented = ThumbprintOf(replica.Dir.File("replica2.crt"));
        Assert.NotEqual(pinned, presented);

        await primary.WriteAsync("web", now, new W(0x22, 8 * M, M));
        var refused = await primary.Cli("replication", "run", "web");
        Assert.Equal(1, refused.ExitCode);
        var line = Assert.Single(refused.StderrLines);
        Assert.StartsWith("haven: TLS with the replica server at " + url + " failed: the replica server presented certificate CN=replica.test (thumbprint "
            + presented + "), not the certificate pinned for this replication (thumbprint " + pinned + "); nothing was sent.", line);
        Assert.Equal(1, (await replica.JsonAsync<ReplicationStatusInfo>("replication", "status", "web")).LastCycle);
        var failed = await primary.JsonAsync<ReplicationStatusInfo>("replication", "status", "web");
        Assert.Equal((pinned, 1L, 1L), (failed.ReplicaThumbprint, failed.LastCycle, failed.FailedCycles));

        // Re-pinning is the user's explicit step; a malformed thumbprint changes nothing.
        var bad = await primary.Cli("replication", "repin", "web", "--thumbprint", "not-a-thumbprint");
        Assert.NotEqual(0, bad.ExitCode);
        Assert.Contains("64 hex digits", Assert.Single(bad.StderrLines));
        Assert.Equal(pinned, (await primary.JsonAsync<ReplicationStatusInfo>("replication", "status", "web")).ReplicaThumbprint);
        var repinned = await primary.JsonAsync<ReplicationStatusInfo>("replication", "repin", "web");
        Assert.Equal(presented, repinned.ReplicaThumbprint);
        var next = await primary.JsonAsync<ReplicationCycleResult>("replication", "run", "web");
        Assert.Equal((2L, M), (next.Cycle, next.DataBytes));
        await replica.AssertCheckpointDataAsync("web", "rp-00000002", now);
    }

    [Fact]
    public async Task A_reverse_naming_another_hosts_address_is_pinned_to_the_caller_and_sends_that_host_nothing()
    {
        var ct = TestContext.Current.CancellationToken;
        var primary = new HavenWorld(ct);
        var replica = new HavenWorld(ct);
        var third = new HavenWorld(ct);
        await using var _ = primary;
        await using var __ = replica;
        await using var ___ = third;
        var url = await ReplicationSetup.PairAsync(primary, replica);
        var thirdUrl = await ReplicationSetup.AddThirdAsync(replica, third); // the replica trusts it and may replicate to it
        await primary.CreateVmAsync("web");
        var now = primary.NewModel("now");
        await primary.WriteAsync("web", now, new W(0x31, 0, M));
        await primary.OkAsync("replication", "enable", "web", "--replica", url, "--frequency", "15m", "--start-at", Later);
        await primary.OkAsync("replication", "run", "web");

        // "primary.test" speaks the protocol itself, with its own certificate, and names the third host as its address.
        var tls = Path.Combine(primary.Data, "tls");
        var identity = Haven.Replication.HostIdentity.LoadOrCreate(tls, "primary.test");
        using var channel = Haven.Replication.ReplicaChannel.Create(url, identity, new Haven.Replication.TrustStore(tls), "replica.test");
        var vmId = primary.VmId("web");
        var malformed = await Assert.ThrowsAsync<Grpc.Core.RpcException>(() => channel.Client.ReverseAsync(
            new Haven.Replication.V1.ReverseRequest { VmId = vmId, ReplicaAddress = "http://127.0.0.1:1/x", FrequencySeconds = 900 }, cancellationToken: ct).ResponseAsync);
        Assert.Equal(Grpc.Core.StatusCode.InvalidArgument, malformed.StatusCode);
        await channel.Client.FailoverAsync(new Haven.Replication.V1.FailoverRequest { VmId = vmId, Start = false }, cancellationToken: ct);
        await channel.Client.ReverseAsync(new Haven.Replication.V1.ReverseRequest { VmId = vmId, ReplicaAddress = thirdUrl, FrequencySeconds = 900 }, cancellationToken: ct);

        var reversed = await replica.JsonAsync<ReplicationStatusInfo>("replication", "status", "web");
        Assert.Equal(("primary", thirdUrl, identity.Thumbprint), (reversed.Role, reversed.Partner, reversed.ReplicaThumbprint));
        var refused = await replica.Cli("replication", "run", "web");
        Assert.Equal(1, refused.ExitCode);
        var line = Assert.Single(refused.StderrLines);
        Assert.Contains($"presented certificate CN=third.test (thumbprint {ThumbprintOf(third.Dir.File("third.crt"))}), not the certificate pinned for this replication (thumbprint {identity.Thumbprint})", line);
        Assert.Equal("[]", (await third.OkAsync("vm", "list", "--json")).Trim());
    }
}
