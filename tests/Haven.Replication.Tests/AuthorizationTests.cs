using Haven.Replication;

namespace Haven.Replication.Tests;

public sealed class AuthorizationTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("hvrepl").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    [Theory]
    [InlineData("*.example.com", "a.example.com", true)]
    [InlineData("*.example.com", "A.Example.COM", true)]
    [InlineData("*.example.com", "a.b.example.com", true)]
    [InlineData("*.example.com", "example.com", false)]
    [InlineData("*.example.com", "a.example.com.evil", false)]
    [InlineData("*", "anything.at.all", true)]
    [InlineData("host1.example.com", "HOST1.example.com", true)]
    [InlineData("host1.example.com", "host10.example.com", false)]
    [InlineData("web-*.dc1.test", "web-01.dc1.test", true)]
    [InlineData("web-*.dc1.test", "db-01.dc1.test", false)]
    [InlineData("a*b*c", "axxbyyc", true)]
    [InlineData("a*b*c", "axxbyy", false)]
    public void Patterns_match_case_insensitively_with_star_for_any_run(string pattern, string name, bool expected) =>
        Assert.Equal(expected, ReplicaAuthorization.Matches(pattern, name));

    const string OnlyAllowed = ": only letters, digits, '-', '.' and '*' are allowed";
    const string EmptyLabel = " has an empty label (a leading, trailing or doubled '.')";

    [Theory]
    [InlineData("", "the primary pattern is empty")]
    [InlineData("a..b/c", "the primary pattern 'a..b/c' holds '/'" + OnlyAllowed)]
    [InlineData("a..b", "the primary pattern 'a..b'" + EmptyLabel)]
    [InlineData(".example.com", "the primary pattern '.example.com'" + EmptyLabel)]
    [InlineData("example.com.", "the primary pattern 'example.com.'" + EmptyLabel)]
    [InlineData("host name", "the primary pattern 'host name' holds 'U+0020'" + OnlyAllowed)]
    [InlineData("host_1", "the primary pattern 'host_1' holds '_'" + OnlyAllowed)]
    [InlineData("?.example.com", "the primary pattern '?.example.com' holds '?'" + OnlyAllowed)]
    public void Bad_patterns_are_refused(string pattern, string reason) => Assert.Equal(reason, HostNames.PatternProblem(pattern));

    [Theory]
    [InlineData("*")]
    [InlineData("*.example.com")]
    [InlineData("host-1.example.com")]
    public void Good_patterns_are_accepted(string pattern) => Assert.Null(HostNames.PatternProblem(pattern));

    const string Pinned = "AA00000000000000000000000000000000000000000000000000000000000000";
    const string Other = "BB00000000000000000000000000000000000000000000000000000000000000";
    const string Ca = "CC00000000000000000000000000000000000000000000000000000000000000";

    /// <summary>A primary whose certificate has the pinned thumbprint (and no CA), or <paramref name="thumbprint"/>.</summary>
    static PeerCredential P(string name, string thumbprint = Pinned, params string[] cas) => new(name, thumbprint, cas);

    static ReplicaAuthorizationEntry E(string pattern, string storage, string group) => new(pattern, storage, group, Thumbprint: Pinned);

    static ReplicaAuthorization Settings(bool allowAny = false) => new()
    {
        Enabled = true,
        Listen = "https://127.0.0.1:9443",
        AllowAnyAuthenticated = allowAny,
        DefaultStorage = allowAny ? "/srv/any" : null,
        DefaultTrustGroup = allowAny ? "any" : null,
        Entries =
        [
            E("*", "/srv/all", "g-all"),
            E("*.example.com", "/srv/example", "g-example"),
            E("*.dc1.example.com", "/srv/dc1", "g-dc1"),
            E("db1.dc1.example.com", "/srv/db1", "g-db1"),
            E("web*", "/srv/web", "g-web"),
        ],
    };

    [Theory]
    [InlineData("db1.dc1.example.com", "/srv/db1")]      // exact beats every pattern
    [InlineData("DB1.DC1.example.com", "/srv/db1")]
    [InlineData("db2.dc1.example.com", "/srv/dc1")]      // longer literal part wins
    [InlineData("web.example.com", "/srv/example")]      // "*.example.com" (12 literal) beats "web*" (3)
    [InlineData("web7", "/srv/web")]
    [InlineData("other.org", "/srv/all")]
    public void The_most_specific_entry_wins(string primary, string storage)
    {
        var d = Settings().Decide(P(primary));
        Assert.True(d.Allowed, d.Reason);
        Assert.Equal(storage, d.Storage);
    }

    [Fact]
    public void Without_a_matching_entry_and_without_allow_any_a_primary_is_refused()
    {
        var s = Settings() with { Entries = [E("*.test", "/srv/t", "g1")] };
        var d = s.Decide(P("primary-b.other"));
        Assert.False(d.Allowed);
        Assert.Null(d.Storage);
        Assert.Equal("primary server 'primary-b.other' is not authorized on this replica server", d.Reason);
        Assert.True(s.Decide(P("primary-a.test")).Allowed);
        Assert.Equal("g1", s.Decide(P("primary-a.test")).TrustGroup);
    }

    [Fact]
    public void Allow_any_gives_the_defaults_when_no_entry_matches_and_entries_still_win()
    {
        var s = new ReplicaAuthorization
        {
            Enabled = true, Listen = "https://127.0.0.1:1", AllowAnyAuthenticated = true, DefaultStorage = "/srv/any", DefaultTrustGroup = "d",
            Entries = [E("*.test", "/srv/t", "g1")],
        };
        Assert.Equal(("/srv/any", "d"), (s.Decide(P("x.other")).Storage, s.Decide(P("x.other")).TrustGroup));
        Assert.Equal("/srv/t", s.Decide(P("x.test")).Storage);
    }

    [Fact]
    public void A_disabled_replica_server_refuses_everyone() =>
        Assert.False((Settings(allowAny: true) with { Enabled = false }).Decide(P("db1.dc1.example.com")).Allowed);

    [Fact]
    public void An_entry_admits_only_the_certificate_or_ca_it_pins_never_a_bare_name()
    {
        var s = Settings() with
        {
            Entries =
            [
                new("db1.test", "/srv/db1", "g1", Thumbprint: Pinned),
                new("*.ca.test", "/srv/ca", "g1", CaThumbprint: Ca),
                new("legacy.test", "/srv/legacy", "g1"), // written before pinning: admits nobody
            ],
        };
        Assert.True(s.Decide(P("db1.test")).Allowed);
        Assert.False(s.Decide(P("db1.test", Other)).Allowed);                 // same name, another certificate
        Assert.False(s.Decide(P("db1.test", Other, Ca)).Allowed);             // same name from the CA: not that entry's pin
        Assert.True(s.Decide(P("web.ca.test", Other, Ca)).Allowed);
        Assert.False(s.Decide(P("web.ca.test", Other, "DD" + Ca[2..])).Allowed); // another CA
        Assert.False(s.Decide(P("web.other.test", Other, Ca)).Allowed);       // the CA, but not a name the entry allows
        Assert.False(s.Decide(P("legacy.test")).Allowed);

        // What a replica is bound to: the certificate, or the CA plus the name (a renewed certificate keeps it).
        var byCert = s.Decide(P("db1.test")).Owner;
        Assert.Equal("cert:" + Pinned, byCert);
        Assert.True(ReplicaAuthorization.Owns(byCert, P("db1.test")));
        Assert.False(ReplicaAuthorization.Owns(byCert, P("db1.test", Other, Ca)));
        var byCa = s.Decide(P("web.ca.test", Other, Ca)).Owner;
        Assert.True(ReplicaAuthorization.Owns(byCa, P("WEB.ca.test", "EE" + Other[2..], Ca)));
        Assert.False(ReplicaAuthorization.Owns(byCa, P("api.ca.test", Other, Ca)));
        Assert.False(ReplicaAuthorization.Owns(byCa, P("web.ca.test", Other)));
        Assert.False(ReplicaAuthorization.Owns("", P("db1.test")));
    }

    [Fact]
    public void Entries_pin_one_well_formed_thumbprint()
    {
        Assert.NotNull((Settings() with { Entries = [new("a.test", "/srv/a", "g", Thumbprint: Pinned, CaThumbprint: Ca)] }).Problem(false));
        Assert.NotNull((Settings() with { Entries = [new("a.test", "/srv/a", "g", Thumbprint: "abc")] }).Problem(false));
        Assert.Null((Settings() with { Entries = [new("a.test", "/srv/a", "g", Thumbprint: Pinned)] }).Problem(false));
    }

    [Theory]
    [InlineData("https://localhost:1")]
    [InlineData("http://127.0.0.1:9443")]
    [InlineData("https://127.0.0.1")]
    [InlineData("https://10.1.2.3")]
    [InlineData("https://example.com:9443")]
    [InlineData("https://127.0.0.1:9443/path")]
    [InlineData("127.0.0.1:9443")]
    public void Listen_addresses_must_be_https_with_an_ip_address_and_a_port(string listen) =>
        Assert.Equal($"the listen address must be https:// with an IP address and a port, e.g. https://10.0.0.2:9443 (not '{listen}')",
            (new ReplicaAuthorization { Enabled = true, Listen = listen }).Problem(checkFolders: false));

    [Theory]
    [InlineData("https://127.0.0.1:9443")]
    [InlineData("https://[::1]:9443")]
    [InlineData("https://10.1.2.3:9443")]
    [InlineData("https://0.0.0.0:9443")]
    public void Ip_listen_addresses_are_accepted(string listen) =>
        Assert.Null((new ReplicaAuthorization { Enabled = true, Listen = listen }).Problem(checkFolders: false));

    [Fact]
    public void Storage_folders_must_exist_when_checked_and_allow_any_needs_a_default_storage()
    {
        var missing = Path.Combine(dir, "missing");
        Assert.Equal($"the storage location '{missing}' is not an existing folder", ReplicaAuthorization.StorageProblem(missing, mustExist: true));
        Assert.Null(ReplicaAuthorization.StorageProblem(dir, mustExist: true));
        Assert.Equal("the storage location 'relative/x' is not an absolute path", ReplicaAuthorization.StorageProblem("relative/x", mustExist: false));
        Assert.Equal("allowing any authenticated primary server needs a default storage location", new ReplicaAuthorization { AllowAnyAuthenticated = true }.Problem(false));
        Assert.Equal("the trust group 'a b' is not 1-64 letters, digits, '-', '_' or '.'", new ReplicaAuthorization { DefaultTrustGroup = "a b" }.Problem(false));
    }

    [Fact]
    public void Settings_round_trip_through_their_file_and_a_bad_file_is_one_line()
    {
        var path = Path.Combine(dir, ReplicaAuthorization.FileName);
        Assert.False(ReplicaAuthorization.Load(path).Enabled);
        var s = Settings(allowAny: true);
        s.Save(path);
        var loaded = ReplicaAuthorization.Load(path);
        Assert.Equal(s.Listen, loaded.Listen);
        Assert.Equal(s.DefaultStorage, loaded.DefaultStorage);
        Assert.Equal(s.Entries, loaded.Entries);
        Assert.False(File.Exists(path + ".tmp"));

        File.WriteAllText(path, "{\"enabled\": true, \"listen\": \"https://127.0.0.1:1\", \"surprise\": 1}");
        var e = Assert.Throws<InvalidDataException>(() => ReplicaAuthorization.Load(path));
        Assert.DoesNotContain('\n', e.Message);
        File.WriteAllText(path, "not json\n{");
        Assert.DoesNotContain('\n', Assert.Throws<InvalidDataException>(() => ReplicaAuthorization.Load(path)).Message);
        File.WriteAllText(path, "{\"enabled\": true, \"listen\": \"https://localhost:1\"}");
        Assert.Contains("IP address", Assert.Throws<InvalidDataException>(() => ReplicaAuthorization.Load(path)).Message);
    }

    [Fact]
    public void Allowing_a_pattern_again_replaces_its_entry_and_deny_of_an_unknown_pattern_is_null()
    {
        var s = new ReplicaAuthorization().WithEntry(new("*.test", "/a", "g1")).WithEntry(new("*.TEST", "/b", "g2"));
        var entry = Assert.Single(s.Entries);
        Assert.Equal("/b", entry.StorageLocation);
        Assert.Null(s.WithoutEntry("*.other"));
        Assert.Empty(s.WithoutEntry("*.test")!.Entries);
    }
}
