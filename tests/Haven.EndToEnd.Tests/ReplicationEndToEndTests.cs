using Haven.Api;

namespace Haven.EndToEnd.Tests;

/// <summary>
/// Replication between two havend hosts on loopback over mutual TLS, driven by the CLI: cycles keep the replica's
/// latest point equal to the primary's disk at that cycle; kill -9 of the replica or the primary mid-cycle loses
/// nothing committed and the next cycle catches up; test failover; planned failover with reverse replication.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class ReplicationEndToEndTests
{
    private const long M = 1 << 20;

    private static async Task<(HavenWorld Primary, HavenWorld Replica, string Url)> SetUpAsync(CancellationToken ct)
    {
        var primary = new HavenWorld(ct);
        var replica = new HavenWorld(ct);
        primary.DaemonArgs.AddRange(["--host-name", "primary.test"]);
        replica.DaemonArgs.AddRange(["--host-name", "replica.test"]);
        await primary.StartDaemonAsync();
        await replica.StartDaemonAsync();
        var primaryCert = primary.Dir.File("primary.crt");
        var replicaCert = replica.Dir.File("replica.crt");
        await primary.OkAsync("host", "certificate", "--out", primaryCert);
        await replica.OkAsync("host", "certificate", "--out", replicaCert);
        await primary.OkAsync("host", "trust", "add", replicaCert);
        await replica.OkAsync("host", "trust", "add", primaryCert);
        var url = $"https://127.0.0.1:{ReplicaServerFixture.FreePort()}";
        var storage = replica.Dir.File("replicas");
        Directory.CreateDirectory(storage);
        await replica.OkAsync("replica-server", "enable", "--listen", url);
        await replica.OkAsync("replica-server", "allow", "--primary", "primary.test", "--storage", storage, "--trust-group", "g1");
        return (primary, replica, url);
    }

    private static Task<ReplicationCycleResult> RunAsync(HavenWorld primary) => primary.JsonAsync<ReplicationCycleResult>("replication", "run", "web");

    [Fact]
    public async Task Cycles_over_mtls_survive_kill_9_of_either_host_and_every_point_equals_the_primarys_disk()
    {
        var ct = TestContext.Current.CancellationToken;
        var (primary, replica, url) = await SetUpAsync(ct);
        await using var _ = primary;
        await using var __ = replica;
        await primary.CreateVmAsync("web", start: true);
        var now = primary.NewModel("now");
        await primary.WriteAsync("web", now, new W(0x11, 0, 3 * M), new W(0x12, 20 * M, M / 2));
        // Scheduled a day ahead, so only this test starts cycles.
        await primary.OkAsync("replication", "enable", "web", "--replica", url, "--replica-name", "replica.test", "--frequency", "15m",
            "--start-at", DateTimeOffset.UtcNow.AddDays(1).ToString("O"));

        var first = await RunAsync(primary);
        Assert.Equal((1L, true), (first.Cycle, first.Full));
        await replica.AssertCheckpointDataAsync("web", "rp-00000001", now);

        await primary.WriteAsync("web", now, new W(0x21, 8 * M, 128 << 10));
        var second = await RunAsync(primary);
        Assert.Equal((2L, false), (second.Cycle, second.Full));
        Assert.Equal(128 << 10, second.DataBytes); // only the changed blocks travel
        await replica.AssertCheckpointDataAsync("web", "rp-00000002", now);

        // The replica dies after receiving the data, before the point is committed: the cycle never happened.
        var atCycle2 = await primary.Remember(now, "at2");
        await primary.WriteAsync("web", now, new W(0x31, 12 * M, M));
        var report = await replica.CrashDuringAsync("replica.after-data", async () =>
        {
            var failed = await primary.Cli("replication", "run", "web");
            Assert.Equal(1, failed.ExitCode);
            Assert.Single(failed.StderrLines);
        });
        Assert.Contains("repaired 1 operation(s)", report);
        await replica.AssertCheckpointDataAsync("web", "rp-00000002", atCycle2);
        await replica.LearnVmAsync("web");
        await replica.AssertCleanAsync("web", atCycle2); // no journal row, no orphan file, a valid chain ending in an empty layer
        var third = await RunAsync(primary);
        Assert.Equal((3L, false, M), (third.Cycle, third.Full, third.DataBytes));
        await replica.AssertCheckpointDataAsync("web", "rp-00000003", now);

        // The primary dies after the replica committed, before it recorded the cycle: the next one catches up.
        await primary.WriteAsync("web", now, new W(0x41, 16 * M, M));
        report = await primary.CrashDuringAsync("replication.after-ack", async () =>
        {
            var cut = await primary.Cli("replication", "run", "web");
            Assert.NotEqual(0, cut.ExitCode);
        });
        Assert.Contains("repaired 1 operation(s)", report);
        await primary.WriteAsync("web", now, new W(0x42, 24 * M, M));
        var fifth = await RunAsync(primary);
        Assert.Equal(5L, fifth.Cycle); // the replica had committed cycle 4
        Assert.False(fifth.Full);
        await replica.AssertCheckpointDataAsync("web", "rp-00000005", now);
        await primary.AssertCleanAsync("web", now);

        var status = await primary.JsonAsync<ReplicationStatusInfo>("replication", "status", "web");
        Assert.Equal(("primary", 5L), (status.Role, status.LastCycle));
        var replicaStatus = await replica.JsonAsync<ReplicationStatusInfo>("replication", "status", "web");
        Assert.Equal(("replica", "primary.test", "Normal"), (replicaStatus.Role, replicaStatus.Partner, replicaStatus.Health));
        var overview = await replica.JsonAsync<List<ReplicationStatusInfo>>("replication", "status");
        Assert.Equal(("web", "replica"), (Assert.Single(overview).Vm, overview[0].Role));

        // Test failover: a copy of the latest point, without network; replication goes on meanwhile.
        var test = await replica.JsonAsync<VmInfo>("replication", "test-failover", "web", "--no-start");
        Assert.Equal("web - Test", test.Name);
        Assert.True(await now.EqualsImageAsync(test.Disks[0].Chain[0].Path));
        await primary.WriteAsync("web", now, new W(0x51, 2 * M, M));
        Assert.Equal(6L, (await RunAsync(primary)).Cycle);
        await replica.OkAsync("replication", "stop-test-failover", "web");
    }

    [Fact]
    public async Task Planned_failover_over_the_network_starts_the_replica_with_every_write_and_reverses()
    {
        var ct = TestContext.Current.CancellationToken;
        var (primary, replica, url) = await SetUpAsync(ct);
        await using var _ = primary;
        await using var __ = replica;
        // Reverse replication needs the old primary to be a replica server the new primary may use.
        var primaryUrl = $"https://127.0.0.1:{ReplicaServerFixture.FreePort()}";
        var storage = primary.Dir.File("replicas");
        Directory.CreateDirectory(storage);
        await primary.OkAsync("replica-server", "enable", "--listen", primaryUrl);
        await primary.OkAsync("replica-server", "allow", "--primary", "replica.test", "--storage", storage, "--trust-group", "g1");

        await primary.CreateVmAsync("web", start: true);
        var now = primary.NewModel("now");
        await primary.WriteAsync("web", now, new W(0x61, 0, 2 * M));
        await primary.OkAsync("replication", "enable", "web", "--replica", url, "--frequency", "15m", "--start-at", DateTimeOffset.UtcNow.AddDays(1).ToString("O"));
        await RunAsync(primary);
        await primary.WriteAsync("web", now, new W(0x62, 10 * M, M)); // after the last cycle

        var last = await primary.JsonAsync<ReplicationCycleResult>("replication", "planned-failover", "web", "--reverse", "--shutdown-timeout", "2");
        Assert.Equal(M, last.DataBytes);
        Assert.Equal(VmState.Off, (await primary.ShowAsync("web")).State);
        var onReplica = await replica.ShowAsync("web");
        Assert.Equal(VmState.Running, onReplica.State);

        var newPrimary = await replica.JsonAsync<ReplicationStatusInfo>("replication", "status", "web");
        Assert.Equal(("primary", primaryUrl), (newPrimary.Role, newPrimary.Partner));
        // The reverse replication is pinned to the old primary's own certificate (the caller's, from the mTLS connection).
        var primaryThumbprint = System.Security.Cryptography.X509Certificates.X509Certificate2.CreateFromPem(File.ReadAllText(primary.Dir.File("primary.crt")))
            .GetCertHashString(System.Security.Cryptography.HashAlgorithmName.SHA256);
        Assert.Equal(primaryThumbprint, newPrimary.ReplicaThumbprint);
        var newReplica = await primary.JsonAsync<ReplicationStatusInfo>("replication", "status", "web");
        Assert.Equal(("replica", "replica.test"), (newReplica.Role, newReplica.Partner));

        // Nothing changed on the new primary yet: the reverse cycle moves no data, and the old primary's disk equals it.
        var back = await replica.JsonAsync<ReplicationCycleResult>("replication", "run", "web");
        Assert.False(back.Full);
        Assert.Equal(0, back.DataBytes);
        await primary.AssertCheckpointDataAsync("web", $"rp-{back.Cycle:D8}", now);
    }
}

[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class ReplicationFaultTests
{
    private const long M = 1 << 20;

    [Fact]
    public async Task A_connection_cut_mid_cycle_is_discarded_and_the_next_cycle_sends_it_all()
    {
        var ct = TestContext.Current.CancellationToken;
        var primary = new HavenWorld(ct);
        var replica = new HavenWorld(ct);
        await using var _ = primary;
        await using var __ = replica;
        var url = await ReplicationSetup.PairAsync(primary, replica);
        await using var relay = new Haven.TestSupport.TcpRelay(new Uri(url).Port);
        await primary.CreateVmAsync("web", start: true);
        var now = primary.NewModel("now");
        await primary.WriteAsync("web", now, new W(0x11, 0, 2 * M));
        await primary.OkAsync("replication", "enable", "web", "--replica", $"https://127.0.0.1:{relay.Port}", "--replica-name", "replica.test",
            "--frequency", "15m", "--start-at", DateTimeOffset.UtcNow.AddDays(1).ToString("O"));
        await primary.OkAsync("replication", "run", "web");
        var atFirst = await primary.Remember(now, "first");

        await primary.WriteAsync("web", now, new W(0x21, 4 * M, 8 * M), new W(0x22, 16 * M, 8 * M));
        relay.CutAfter(3 * M);
        var cut = await primary.Cli("replication", "run", "web");
        Assert.Equal(1, cut.ExitCode);
        Assert.Single(cut.StderrLines);
        Assert.Equal(1, relay.Cuts);
        await replica.AssertCheckpointDataAsync("web", "rp-00000001", atFirst);
        Assert.Equal(1, (await replica.JsonAsync<ReplicationStatusInfo>("replication", "status", "web")).LastCycle);

        var next = await primary.JsonAsync<ReplicationCycleResult>("replication", "run", "web");
        Assert.Equal((2L, 16 * M), (next.Cycle, next.DataBytes));
        await replica.AssertCheckpointDataAsync("web", "rp-00000002", now);
        var status = await primary.JsonAsync<ReplicationStatusInfo>("replication", "status", "web");
        Assert.Equal((2L, 1L), (status.SuccessfulCycles, status.FailedCycles));
    }

    [Fact]
    public async Task A_primary_of_another_trust_group_and_bad_vm_names_are_refused_and_write_nothing()
    {
        var ct = TestContext.Current.CancellationToken;
        var primary = new HavenWorld(ct);
        var replica = new HavenWorld(ct);
        var other = new HavenWorld(ct);
        await using var _ = primary;
        await using var __ = replica;
        await using var ___ = other;
        var url = await ReplicationSetup.PairAsync(primary, replica);
        other.DaemonArgs.AddRange(["--host-name", "other.test"]);
        await other.StartDaemonAsync();
        await other.OkAsync("host", "certificate", "--out", other.Dir.File("other.crt"));
        await replica.OkAsync("host", "trust", "add", other.Dir.File("other.crt"));
        await other.OkAsync("host", "trust", "add", replica.Dir.File("replica.crt"));
        var storage = replica.Dir.File("other-replicas");
        Directory.CreateDirectory(storage);
        await replica.OkAsync("replica-server", "allow", "--primary", "other.test", "--storage", storage, "--trust-group", "g2");

        await primary.CreateVmAsync("web", start: true);
        var now = primary.NewModel("now");
        await primary.WriteAsync("web", now, new W(0x31, 0, M));
        await primary.OkAsync("replication", "enable", "web", "--replica", url, "--frequency", "15m", "--start-at", DateTimeOffset.UtcNow.AddDays(1).ToString("O"));
        await primary.OkAsync("replication", "run", "web");
        var before = await replica.OkAsync("vm", "list", "--json");

        // "other.test" speaks the protocol itself, with its own certificate.
        var identity = Haven.Replication.HostIdentity.LoadOrCreate(Path.Combine(other.Data, "tls"), "other.test");
        var trust = new Haven.Replication.TrustStore(Path.Combine(other.Data, "tls"));
        using var channel = Haven.Replication.ReplicaChannel.Create(url, identity, trust, "replica.test");
        var vmId = primary.VmId("web");
        var denied = await Assert.ThrowsAsync<Grpc.Core.RpcException>(() => channel.Client.GetReplicaAsync(new Haven.Replication.V1.ReplicaRef { VmId = vmId }, cancellationToken: ct).ResponseAsync);
        Assert.Equal(Grpc.Core.StatusCode.PermissionDenied, denied.StatusCode);
        Assert.Contains("belongs to another primary", denied.Status.Detail);
        using (var call = channel.Client.SendCycle(cancellationToken: ct))
        {
            var begin = new Haven.Replication.V1.CycleBegin { VmId = vmId, CycleNumber = 2, BaseCycleNumber = 1 };
            begin.Disks.Add(new Haven.Replication.V1.DiskInfo { Index = 0, SizeBytes = (ulong)HavenWorld.DiskSize });
            // The replica may answer as soon as it has read CycleBegin: the refusal surfaces at whichever step comes next.
            var refused = await Assert.ThrowsAsync<Grpc.Core.RpcException>(async () =>
            {
                await call.RequestStream.WriteAsync(new Haven.Replication.V1.CycleMessage { Begin = begin }, ct);
                await call.RequestStream.WriteAsync(new Haven.Replication.V1.CycleMessage { Extent = new Haven.Replication.V1.Extent { Disk = 0, Offset = 0, Length = 4096, Data = Google.Protobuf.ByteString.CopyFrom(new byte[4096]) } }, ct);
                await call.RequestStream.CompleteAsync();
                await call.ResponseAsync;
            });
            Assert.Equal(Grpc.Core.StatusCode.PermissionDenied, refused.StatusCode);
        }
        foreach (var bad in new[] { "../evil", "a/b", ".." })
        {
            var request = new Haven.Replication.V1.EnsureReplicaRequest { VmId = "x-" + bad.Length, VmName = bad, MemoryMib = 64, Vcpus = 1 };
            request.Disks.Add(new Haven.Replication.V1.DiskInfo { Index = 0, SizeBytes = (ulong)M });
            var invalid = await Assert.ThrowsAsync<Grpc.Core.RpcException>(() => channel.Client.EnsureReplicaAsync(request, cancellationToken: ct).ResponseAsync);
            Assert.Equal(Grpc.Core.StatusCode.InvalidArgument, invalid.StatusCode);
        }
        Assert.Equal(before, await replica.OkAsync("vm", "list", "--json"));
        await replica.AssertCheckpointDataAsync("web", "rp-00000001", now);
        Assert.Empty(Directory.GetFileSystemEntries(storage));

        // One replica server, many primaries: "other.test" replicates a VM of its own, into its own storage location.
        await other.CreateVmAsync("db");
        var db = other.NewModel("db");
        await other.WriteAsync("db", db, new W(0x41, 0, M));
        await other.OkAsync("replication", "enable", "db", "--replica", url, "--frequency", "15m", "--start-at", DateTimeOffset.UtcNow.AddDays(1).ToString("O"));
        await other.OkAsync("replication", "run", "db");
        await replica.AssertCheckpointDataAsync("db", "rp-00000001", db);
        Assert.Single(Directory.GetDirectories(storage));
        var overview = await replica.JsonAsync<List<ReplicationStatusInfo>>("replication", "status");
        Assert.Equal([("db", "other.test"), ("web", "primary.test")], overview.Select(s => (s.Vm, s.Partner)).Order());
    }
}

internal static class ReplicationSetup
{
    /// <summary>Two hosts that trust each other; the replica's server allows *.test (trust group g1). Returns its URL.</summary>
    public static async Task<string> PairAsync(HavenWorld primary, HavenWorld replica)
    {
        primary.DaemonArgs.AddRange(["--host-name", "primary.test"]);
        replica.DaemonArgs.AddRange(["--host-name", "replica.test"]);
        await primary.StartDaemonAsync();
        await replica.StartDaemonAsync();
        await primary.OkAsync("host", "certificate", "--out", primary.Dir.File("primary.crt"));
        await replica.OkAsync("host", "certificate", "--out", replica.Dir.File("replica.crt"));
        await primary.OkAsync("host", "trust", "add", replica.Dir.File("replica.crt"));
        await replica.OkAsync("host", "trust", "add", primary.Dir.File("primary.crt"));
        return await ServeAsync(replica, "primary.test");
    }

    /// <summary>Enables <paramref name="server"/>'s replica server on a free port, allowing <paramref name="primaries"/> (trust group g1).</summary>
    public static async Task<string> ServeAsync(HavenWorld server, string primaries)
    {
        var url = $"https://127.0.0.1:{ReplicaServerFixture.FreePort()}";
        var storage = server.Dir.File("replicas");
        Directory.CreateDirectory(storage);
        await server.OkAsync("replica-server", "enable", "--listen", url);
        await server.OkAsync("replica-server", "allow", "--primary", primaries, "--storage", storage, "--trust-group", "g1");
        return url;
    }

    /// <summary>A third host "third.test" that the replica trusts and whose replica server allows it. Returns its URL.</summary>
    public static async Task<string> AddThirdAsync(HavenWorld replica, HavenWorld third)
    {
        third.DaemonArgs.AddRange(["--host-name", "third.test"]);
        await third.StartDaemonAsync();
        await third.OkAsync("host", "certificate", "--out", third.Dir.File("third.crt"));
        await replica.OkAsync("host", "trust", "add", third.Dir.File("third.crt"));
        await third.OkAsync("host", "trust", "add", replica.Dir.File("replica.crt"));
        return await ServeAsync(third, "replica.test");
    }
}

[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class ExtendedReplicationEndToEndTests
{
    private const long M = 1 << 20;

    [Fact]
    public async Task Three_hosts_primary_to_replica_to_third_and_every_point_on_the_third_equals_the_primarys_disk()
    {
        var ct = TestContext.Current.CancellationToken;
        var primary = new HavenWorld(ct);
        var replica = new HavenWorld(ct);
        var third = new HavenWorld(ct);
        await using var _ = primary;
        await using var __ = replica;
        await using var ___ = third;
        var url = await ReplicationSetup.PairAsync(primary, replica);
        var thirdUrl = await ReplicationSetup.AddThirdAsync(replica, third);

        await primary.CreateVmAsync("web", start: true);
        var now = primary.NewModel("now");
        await primary.WriteAsync("web", now, new W(0x71, 0, 4 * M));
        var later = DateTimeOffset.UtcNow.AddDays(1).ToString("O");
        await primary.OkAsync("replication", "enable", "web", "--replica", url, "--frequency", "15m", "--start-at", later);
        await primary.OkAsync("replication", "run", "web");
        await replica.OkAsync("replication", "extend", "web", "--replica", thirdUrl, "--replica-name", "third.test", "--frequency", "15m", "--start-at", later);
        var first = await replica.JsonAsync<ReplicationCycleResult>("replication", "run", "web");
        Assert.True(first.Full);
        await third.AssertCheckpointDataAsync("web", $"rp-{first.Cycle:D8}", now);

        await primary.WriteAsync("web", now, new W(0x72, 8 * M, M));
        await primary.OkAsync("replication", "run", "web");
        await primary.WriteAsync("web", now, new W(0x73, 16 * M, M));
        await primary.OkAsync("replication", "run", "web");
        var second = await replica.JsonAsync<ReplicationCycleResult>("replication", "run", "web");
        Assert.False(second.Full);
        Assert.Equal(2 * M, second.DataBytes); // both primary cycles since the last extended one, nothing more
        await third.AssertCheckpointDataAsync("web", $"rp-{second.Cycle:D8}", now);
        await replica.AssertCheckpointDataAsync("web", "rp-00000003", now); // the extended replica equals the replica

        var status = await replica.JsonAsync<ReplicationStatusInfo>("replication", "status", "web");
        Assert.Equal(("replica", thirdUrl, second.Cycle), (status.Role, status.ExtendedTo, status.ExtendedLastCycle));
    }
}
