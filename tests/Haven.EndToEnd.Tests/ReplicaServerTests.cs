using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Haven.Api;
using Haven.Replication;
using Haven.TestSupport;

namespace Haven.EndToEnd.Tests;

/// <summary>
/// Four havend hosts on loopback: primaries "primary-a.test" and "primary-b.other", the replica server
/// "replica.test", and "rogue.test" whose certificate the replica does not trust. Certificates travel with the CLI
/// (host certificate --out, host trust add). The replica server allows "primary-a.test" (its certificate pinned) into a
/// temp folder, trust group g1.
/// </summary>
public sealed class ReplicaServerFixture : IAsyncLifetime
{
    public TempDir Dir { get; } = new();
    public Dictionary<string, DaemonProcess> Hosts { get; } = [];
    public int ReplicaPort { get; private set; }
    public string ReplicaUrl => $"https://127.0.0.1:{ReplicaPort}";
    public string Storage => Dir.File("replicas");
    public string AnyStorage => Dir.File("any-replicas");

    public string Data(string host) => Dir.File(host);

    public async ValueTask InitializeAsync()
    {
        Directory.CreateDirectory(Storage);
        Directory.CreateDirectory(AnyStorage);
        var names = new[] { "primary-a.test", "primary-b.other", "replica.test", "rogue.test" };
        var started = await Task.WhenAll(names.Select(n => DaemonProcess.StartAsync(Data(n), args: ["--host-name", n])));
        for (var i = 0; i < names.Length; i++) Hosts[names[i]] = started[i];

        foreach (var n in names) await OkAsync(n, "host", "certificate", "--out", Dir.File(n + ".crt"));
        foreach (var primary in new[] { "primary-a.test", "primary-b.other" })
        {
            await OkAsync("replica.test", "host", "trust", "add", Dir.File(primary + ".crt"));
            await OkAsync(primary, "host", "trust", "add", Dir.File("replica.test.crt"));
        }
        await OkAsync("rogue.test", "host", "trust", "add", Dir.File("replica.test.crt"));

        ReplicaPort = FreePort();
        await OkAsync("replica.test", "replica-server", "enable", "--listen", ReplicaUrl);
        await OkAsync("replica.test", "replica-server", "allow", "--primary", "primary-a.test", "--storage", Storage, "--trust-group", "g1");
    }

    public static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }

    public Task<CliResult> Cli(string host, params string[] args) =>
        DaemonProcess.HavenAsync(Data(host), TestContext.Current.CancellationToken, args);

    public async Task<string> OkAsync(string host, params string[] args)
    {
        var r = await Cli(host, args);
        Assert.True(r.ExitCode == 0 && r.Stderr == "", r.ToString());
        return r.Stdout;
    }

    public async Task<T> JsonAsync<T>(string host, params string[] args) =>
        JsonSerializer.Deserialize<T>(await OkAsync(host, [.. args, "--json"]), ApiJson.Options) ?? throw new InvalidDataException("null answer");

    public async ValueTask DisposeAsync()
    {
        foreach (var d in Hosts.Values) await d.DisposeAsync();
        Dir.Dispose();
    }
}

[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class ReplicaServerTests(ReplicaServerFixture f) : IClassFixture<ReplicaServerFixture>
{
    const string Replica = "replica.test";

    static void AssertOneLineFailure(CliResult r, string contains)
    {
        Assert.True(r.ExitCode != 0, r.ToString());
        Assert.Equal("", r.Stdout);
        var line = Assert.Single(r.StderrLines);
        Assert.StartsWith("haven: ", line);
        Assert.True(line.Contains(contains), line);
    }

    Task<CliResult> TestConnection(string primary) =>
        f.Cli(primary, "replication", "test-connection", "--replica", f.ReplicaUrl, "--expect-name", Replica, "--json");

    [Fact]
    public async Task An_authorized_primary_connects_and_learns_its_storage_and_trust_group()
    {
        var r = await f.JsonAsync<ReplicationTestConnectionResult>("primary-a.test", "replication", "test-connection", "--replica", f.ReplicaUrl, "--expect-name", Replica);
        Assert.Equal(Replica, r.ReplicaHost);
        Assert.Equal(f.Storage, r.StorageLocation);
        Assert.Equal("g1", r.TrustGroup);
        Assert.Equal(1u, r.ProtocolVersion);
        Assert.Equal("primary-a.test", r.PrimaryName);

        var human = await f.OkAsync("primary-a.test", "replication", "test-connection", "--replica", f.ReplicaUrl);
        Assert.Contains("accepts this host (primary-a.test)", human);
        Assert.Contains(f.Storage, human);
    }

    [Fact]
    public async Task A_trusted_primary_without_a_matching_entry_is_refused_with_one_line()
    {
        var r = await TestConnection("primary-b.other");
        AssertOneLineFailure(r, "the replica server refused this primary: primary server 'primary-b.other' is not authorized on this replica server");
        Assert.Equal(1, r.ExitCode);
    }

    [Fact]
    public async Task A_primary_whose_certificate_the_replica_does_not_trust_is_refused_at_TLS_with_one_line()
    {
        var r = await TestConnection("rogue.test");
        AssertOneLineFailure(r, "TLS with the replica server at " + f.ReplicaUrl + " failed");
        Assert.Equal(1, r.ExitCode);
    }

    [Fact]
    public async Task A_replica_the_primary_does_not_trust_or_that_is_not_the_expected_name_is_refused()
    {
        var t = await f.JsonAsync<TrustedCertificateInfo>("primary-b.other", "host", "trust", "add", f.Dir.File("rogue.test.crt"));
        try
        {
            // rogue.test is trusted now but is not the replica: name check.
            var r = await f.Cli("primary-a.test", "replication", "test-connection", "--replica", f.ReplicaUrl, "--expect-name", "other.test");
            AssertOneLineFailure(r, "not for the expected 'other.test'");
        }
        finally
        {
            await f.OkAsync("primary-b.other", "host", "trust", "remove", t.Thumbprint);
        }
        var unreachable = await f.Cli("primary-a.test", "replication", "test-connection", "--replica", $"https://127.0.0.1:{ReplicaServerFixture.FreePort()}");
        AssertOneLineFailure(unreachable, "cannot reach the replica server");
    }

    [Fact]
    public async Task Allow_any_with_a_default_storage_accepts_a_primary_without_an_entry()
    {
        await f.OkAsync(Replica, "replica-server", "enable", "--listen", f.ReplicaUrl, "--allow-any", "--storage", f.AnyStorage, "--trust-group", "any");
        try
        {
            var r = await f.JsonAsync<ReplicationTestConnectionResult>("primary-b.other", "replication", "test-connection", "--replica", f.ReplicaUrl);
            Assert.Equal(f.AnyStorage, r.StorageLocation);
            Assert.Equal("any", r.TrustGroup);
            // The matching entry still wins for primary-a.
            Assert.Equal(f.Storage, (await f.JsonAsync<ReplicationTestConnectionResult>("primary-a.test", "replication", "test-connection", "--replica", f.ReplicaUrl)).StorageLocation);
        }
        finally
        {
            await f.OkAsync(Replica, "replica-server", "enable", "--allow-any", "false");
        }
        Assert.False((await f.JsonAsync<ReplicaServerInfo>(Replica, "replica-server", "show")).AllowAnyAuthenticated);
        AssertOneLineFailure(await TestConnection("primary-b.other"), "is not authorized");
    }

    [Fact]
    public async Task Oversized_and_malformed_grpc_messages_get_an_error_status_and_the_replica_keeps_serving()
    {
        var ct = TestContext.Current.CancellationToken;
        var identity = HostIdentity.LoadOrCreate(Path.Combine(f.Data("primary-a.test"), "tls"), "primary-a.test");
        using var handler = new SocketsHttpHandler
        {
            SslOptions = new System.Net.Security.SslClientAuthenticationOptions
            {
                ClientCertificates = [identity.Certificate],
                RemoteCertificateValidationCallback = (_, _, _, _) => true,
            },
        };
        using var http = new HttpClient(handler) { BaseAddress = new Uri(f.ReplicaUrl) };

        async Task<string> SendFrameAsync(byte[] frame)
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "/haven.replication.v1.Replica/Hello")
            {
                Version = HttpVersion.Version20,
                VersionPolicy = HttpVersionPolicy.RequestVersionExact,
                Content = new ByteArrayContent(frame),
            };
            request.Content.Headers.ContentType = new("application/grpc");
            request.Headers.TryAddWithoutValidation("TE", "trailers");
            using var response = await http.SendAsync(request, ct);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            await response.Content.ReadAsByteArrayAsync(ct);
            var status = response.TrailingHeaders.TryGetValues("grpc-status", out var t) ? t.First()
                : response.Headers.TryGetValues("grpc-status", out var h) ? h.First() : "none";
            var message = response.TrailingHeaders.TryGetValues("grpc-message", out var m) ? m.First()
                : response.Headers.TryGetValues("grpc-message", out var hm) ? hm.First() : "";
            return status + " " + Uri.UnescapeDataString(message);
        }

        // Length prefix of 16 MiB (the limit is 8 MiB), followed by a few bytes.
        var oversized = await SendFrameAsync([0, 0x01, 0x00, 0x00, 0x00, 1, 2, 3, 4]);
        Assert.StartsWith("8 ", oversized); // RESOURCE_EXHAUSTED
        // A 5-byte message that is not protobuf (an unterminated varint).
        var garbage = await SendFrameAsync([0, 0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff]);
        Assert.False(garbage.StartsWith("0 ", StringComparison.Ordinal), garbage);
        Assert.False(garbage.StartsWith("none", StringComparison.Ordinal), garbage);

        Assert.False(f.Hosts[Replica].HasExited);
        var r = await f.JsonAsync<ReplicationTestConnectionResult>("primary-a.test", "replication", "test-connection", "--replica", f.ReplicaUrl);
        Assert.Equal(f.Storage, r.StorageLocation);
    }

    public static TheoryData<string, string[]> BadSettings => new()
    {
        { "a pattern with a path and an empty label", ["replica-server", "allow", "--primary", "a..b/c", "--storage", "{storage}", "--trust-group", "g1"] },
        { "a listen address that is not an IP address", ["replica-server", "enable", "--listen", "https://replica.example:1"] },
        { "a storage folder that does not exist", ["replica-server", "allow", "--primary", "x.test", "--storage", "{missing}", "--trust-group", "g1"] },
        { "a default storage folder that does not exist", ["replica-server", "enable", "--allow-any", "--storage", "{missing}"] },
        { "a bad trust group", ["replica-server", "allow", "--primary", "x.test", "--storage", "{storage}", "--trust-group", "a b"] },
        { "a deny of a bad pattern", ["replica-server", "deny", "--primary", "a..b/c"] },
    };

    [Theory]
    [MemberData(nameof(BadSettings))]
    public async Task Bad_settings_are_refused_with_exit_2_and_one_line_and_change_nothing(string what, string[] args)
    {
        _ = what;
        var before = await f.OkAsync(Replica, "replica-server", "show", "--json");
        var r = await f.Cli(Replica, [.. args.Select(a => a.Replace("{storage}", f.Storage).Replace("{missing}", f.Dir.File("missing")))]);
        AssertOneLineFailure(r, "");
        Assert.Equal(2, r.ExitCode);
        Assert.Equal(before, await f.OkAsync(Replica, "replica-server", "show", "--json"));
    }

    [Fact]
    public async Task Malformed_pem_is_refused_with_exit_2_and_changes_nothing()
    {
        var bad = f.Dir.File("bad.pem");
        await File.WriteAllTextAsync(bad, "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n", TestContext.Current.CancellationToken);
        var trustedBefore = await f.OkAsync(Replica, "host", "trust", "list", "--json");
        var certBefore = await f.OkAsync(Replica, "host", "certificate", "--json");
        var add = await f.Cli(Replica, "host", "trust", "add", bad);
        AssertOneLineFailure(add, "");
        Assert.Equal(2, add.ExitCode);
        var set = await f.Cli(Replica, "host", "certificate", "set", "--cert", bad, "--key", bad);
        AssertOneLineFailure(set, "");
        Assert.Equal(2, set.ExitCode);
        var mismatched = await f.Cli(Replica, "host", "certificate", "set", "--cert", f.Dir.File("primary-a.test.crt"), "--key", Path.Combine(f.Data(Replica), "tls", "host.key"));
        AssertOneLineFailure(mismatched, "");
        Assert.Equal(2, mismatched.ExitCode);
        Assert.Equal(trustedBefore, await f.OkAsync(Replica, "host", "trust", "list", "--json"));
        Assert.Equal(certBefore, await f.OkAsync(Replica, "host", "certificate", "--json"));
    }

    [Fact]
    public async Task Show_lists_the_settings_and_the_certificate_files_are_in_the_data_folder()
    {
        var info = await f.JsonAsync<ReplicaServerInfo>(Replica, "replica-server", "show");
        Assert.True(info.Enabled && info.Listening);
        Assert.Equal(f.ReplicaUrl, info.Listen);
        Assert.Equal(Replica, info.HostName);
        var entry = Assert.Single(info.Authorizations);
        Assert.Equal(("primary-a.test", f.Storage, "g1"), (entry.Primary, entry.Storage, entry.TrustGroup));
        var human = await f.OkAsync(Replica, "replica-server", "show");
        Assert.Contains("primary-a.test", human);
        // "allow --primary NAME" pinned the one trusted certificate of that name.
        var pinned = (await f.JsonAsync<List<TrustedCertificateInfo>>(Replica, "host", "trust", "list")).Single(t => t.Name == "primary-a.test").Thumbprint;
        Assert.Equal(pinned, entry.Thumbprint);
        Assert.Contains("certificate " + pinned, human);
        Assert.Contains("TRUST GROUP", human);

        var tls = Path.Combine(f.Data(Replica), "tls");
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(tls, "host.key")));
        var trusted = await f.JsonAsync<List<TrustedCertificateInfo>>(Replica, "host", "trust", "list");
        Assert.Equal(["primary-a.test", "primary-b.other"], trusted.Select(t => t.Name).Order(StringComparer.Ordinal));
        foreach (var t in trusted) Assert.True(File.Exists(Path.Combine(tls, "trusted", t.Thumbprint + ".crt")));
        Assert.True(File.Exists(Path.Combine(f.Data(Replica), "replica-server.json")));
    }
}
