using System.Net;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Haven.Replication;

/// <summary>
/// One authorization entry: primaries whose name matches <see cref="PrimaryPattern"/> replicate into
/// <see cref="StorageLocation"/>, provided their certificate is the one pinned by <see cref="Thumbprint"/>, or was
/// issued (directly or through intermediates) by the trusted CA pinned by <see cref="CaThumbprint"/>. An entry that
/// pins neither (written before pinning existed) matches nobody.
/// </summary>
public sealed record ReplicaAuthorizationEntry(string PrimaryPattern, string StorageLocation, string? TrustGroup,
    string? Thumbprint = null, string? CaThumbprint = null)
{
    /// <summary>Whether this entry lets <paramref name="peer"/> in: its name matches and its certificate is the pinned one or comes from the pinned CA.</summary>
    public bool Admits(PeerCredential peer) =>
        ReplicaAuthorization.Matches(PrimaryPattern, peer.Name)
        && (Thumbprint is { } t && string.Equals(t, peer.Thumbprint, StringComparison.OrdinalIgnoreCase)
            || CaThumbprint is { } ca && peer.CaThumbprints.Contains(ca, StringComparer.OrdinalIgnoreCase));
}

/// <summary>
/// The replica server's answer to a primary: allowed (with where its replicas go) or refused, and why.
/// <see cref="Owner"/> is the identity a replica it creates is bound to (<see cref="ReplicaAuthorization.OwnerOf"/>).
/// </summary>
public sealed record ReplicaDecision(bool Allowed, string? Storage, string? TrustGroup, string Reason, string Owner = "");

/// <summary>
/// The replica server's settings (Hyper-V Replica's "Replication Configuration"): whether it is enabled, where it
/// listens, and which primaries it accepts: any authenticated server (into one default storage location), and/or
/// a list of entries (primary name pattern, storage location, trust group). Persisted as JSON in
/// <c>&lt;data&gt;/replica-server.json</c>. Immutable: changes make a new value (<c>with</c>), checked by <see cref="Problem"/>.
/// </summary>
public sealed record ReplicaAuthorization
{
    public const string FileName = "replica-server.json";

    public bool Enabled { get; init; }
    /// <summary>https://LOOPBACK-IP:PORT, e.g. https://127.0.0.1:9443.</summary>
    public string? Listen { get; init; }
    /// <summary>Accept every primary whose certificate this host trusts, into <see cref="DefaultStorage"/>, when no entry matches.</summary>
    public bool AllowAnyAuthenticated { get; init; }
    public string? DefaultStorage { get; init; }
    public string? DefaultTrustGroup { get; init; }
    public IReadOnlyList<ReplicaAuthorizationEntry> Entries { get; init; } = [];

    /// <summary>
    /// Whether the primary <paramref name="peer"/> (its validated certificate) may replicate here. Only entries whose
    /// pin the certificate satisfies count; of those the most specific wins: a name without '*' beats any pattern,
    /// then the longer literal part (characters other than '*'), then fewer '*', then the pattern's ordinal order.
    /// With no match, allow-any gives the defaults.
    /// </summary>
    public ReplicaDecision Decide(PeerCredential peer)
    {
        var primaryName = peer.Name;
        if (!Enabled)
            return new(false, null, null, "the replica server is not enabled on this host");
        if (MostSpecificMatch(peer) is { } entry)
            return new(true, entry.StorageLocation, entry.TrustGroup,
                $"primary server '{primaryName}' matches the authorization entry '{entry.PrimaryPattern}'",
                OwnerOf(peer, entry.Thumbprint is null ? entry.CaThumbprint : null));
        if (AllowAnyAuthenticated && DefaultStorage is not null)
            return new(true, DefaultStorage, DefaultTrustGroup, $"any authenticated primary server is allowed ('{primaryName}')", OwnerOf(peer, null));
        return new(false, null, null, $"primary server '{primaryName}' is not authorized on this replica server");
    }

    /// <summary>
    /// The identity a replica is bound to: <c>cert:THUMBPRINT</c> (exactly this certificate), or, for a primary let in
    /// by a CA entry, <c>ca:CA-THUMBPRINT:name</c> (any certificate of that name from that CA, so a renewed
    /// certificate keeps its replicas).
    /// </summary>
    public static string OwnerOf(PeerCredential peer, string? caThumbprint) => caThumbprint is null
        ? "cert:" + peer.Thumbprint.ToUpperInvariant()
        : $"ca:{caThumbprint.ToUpperInvariant()}:{peer.Name.ToLowerInvariant()}";

    /// <summary>Whether <paramref name="peer"/> is the identity <paramref name="owner"/> (<see cref="OwnerOf"/>); an empty owner is nobody.</summary>
    public static bool Owns(string owner, PeerCredential peer)
    {
        if (owner.StartsWith("cert:", StringComparison.Ordinal))
            return string.Equals(owner[5..], peer.Thumbprint, StringComparison.OrdinalIgnoreCase);
        if (owner.StartsWith("ca:", StringComparison.Ordinal) && owner.IndexOf(':', 3) is var colon and > 3)
            return peer.CaThumbprints.Contains(owner[3..colon], StringComparer.OrdinalIgnoreCase)
                && string.Equals(owner[(colon + 1)..], peer.Name, StringComparison.OrdinalIgnoreCase);
        return false;
    }

    /// <summary>The entry that decides for <paramref name="peer"/>, or null when none admits it.</summary>
    public ReplicaAuthorizationEntry? MostSpecificMatch(PeerCredential peer) =>
        Entries.Where(e => e.Admits(peer))
            .OrderByDescending(e => !e.PrimaryPattern.Contains('*'))
            .ThenByDescending(e => e.PrimaryPattern.Count(c => c != '*'))
            .ThenBy(e => e.PrimaryPattern.Count(c => c == '*'))
            .ThenBy(e => e.PrimaryPattern, StringComparer.OrdinalIgnoreCase)
            .FirstOrDefault();

    /// <summary>Case-insensitive match; '*' matches any run of characters (also none, also dots).</summary>
    public static bool Matches(string pattern, string name)
    {
        int p = 0, n = 0, star = -1, resume = 0;
        while (n < name.Length)
        {
            if (p < pattern.Length && pattern[p] == '*')
            {
                star = p++;
                resume = n;
            }
            else if (p < pattern.Length && char.ToLowerInvariant(pattern[p]) == char.ToLowerInvariant(name[n]))
            {
                p++;
                n++;
            }
            else if (star >= 0)
            {
                p = star + 1;
                n = ++resume;
            }
            else
            {
                return false;
            }
        }
        while (p < pattern.Length && pattern[p] == '*') p++;
        return p == pattern.Length;
    }

    /// <summary>Adds an entry, or replaces the one with the same pattern (case-insensitive).</summary>
    public ReplicaAuthorization WithEntry(ReplicaAuthorizationEntry entry) => this with
    {
        Entries = [.. Entries.Where(e => !string.Equals(e.PrimaryPattern, entry.PrimaryPattern, StringComparison.OrdinalIgnoreCase)), entry],
    };

    /// <summary>Removes the entry with this pattern; null when there is none.</summary>
    public ReplicaAuthorization? WithoutEntry(string pattern) =>
        Entries.Any(e => string.Equals(e.PrimaryPattern, pattern, StringComparison.OrdinalIgnoreCase))
            ? this with { Entries = [.. Entries.Where(e => !string.Equals(e.PrimaryPattern, pattern, StringComparison.OrdinalIgnoreCase))] }
            : null;

    /// <summary>Why these settings cannot be used (one line), or null. <paramref name="checkFolders"/> also wants storage folders to exist.</summary>
    public string? Problem(bool checkFolders)
    {
        if (Listen is not null && ListenProblem(Listen) is { } listen) return listen;
        if (Enabled && Listen is null) return "the replica server needs a listen address, e.g. https://127.0.0.1:9443";
        if (DefaultStorage is not null && StorageProblem(DefaultStorage, checkFolders) is { } storage) return storage;
        if (AllowAnyAuthenticated && DefaultStorage is null)
            return "allowing any authenticated primary server needs a default storage location";
        if (DefaultTrustGroup is not null && TrustGroupProblem(DefaultTrustGroup) is { } group) return group;
        foreach (var e in Entries)
        {
            if (HostNames.PatternProblem(e.PrimaryPattern) is { } pattern) return pattern;
            if (e.Thumbprint is not null && e.CaThumbprint is not null)
                return $"the authorization entry '{e.PrimaryPattern}' pins both a certificate and a CA; it pins one";
            foreach (var t in new[] { e.Thumbprint, e.CaThumbprint })
                if (t is not null && ThumbprintProblem(t) is { } bad) return bad;
            if (StorageProblem(e.StorageLocation, checkFolders) is { } s) return s;
            if (e.TrustGroup is not null && TrustGroupProblem(e.TrustGroup) is { } g) return g;
        }
        var duplicate = Entries.GroupBy(e => e.PrimaryPattern, StringComparer.OrdinalIgnoreCase).FirstOrDefault(g => g.Count() > 1);
        return duplicate is null ? null : $"the primary pattern '{duplicate.Key}' has more than one entry";
    }

    /// <summary>The loopback address and port of a listen URL (https://127.0.0.1:9443, https://[::1]:9443); throws ArgumentException.</summary>
    public static IPEndPoint ParseListen(string listen) =>
        ListenProblem(listen) is { } problem ? throw new ArgumentException(problem) : ListenEndPoint(new Uri(listen))!;

    static string? ListenProblem(string listen)
    {
        var problem = $"the listen address must be https:// with an IP address and a port, e.g. https://10.0.0.2:9443 (not '{listen}')";
        if (!Uri.TryCreate(listen, UriKind.Absolute, out var uri) || uri.Scheme != Uri.UriSchemeHttps || uri.IsDefaultPort && !listen.Contains(":443", StringComparison.Ordinal)
            || uri.AbsolutePath != "/" || uri.Query.Length > 0 || uri.UserInfo.Length > 0)
            return problem;
        return ListenEndPoint(uri) is null ? problem : null;
    }

    static IPEndPoint? ListenEndPoint(Uri uri) =>
        // Any address: primaries on other machines must reach it. Only authenticated, authorized primaries get in
        // (mutual TLS with a trusted client certificate, then the authorization entries), and only gRPC is served.
        IPAddress.TryParse(uri.Host.Trim('[', ']'), out var ip) && uri.Port is > 0 and <= 65535
            ? new IPEndPoint(ip, uri.Port) : null;

    /// <summary>Why <paramref name="path"/> cannot be a storage location (absolute; an existing folder when <paramref name="mustExist"/>), or null.</summary>
    public static string? StorageProblem(string path, bool mustExist)
    {
        if (path.Length == 0) return "the storage location is empty";
        if (!Path.IsPathFullyQualified(path)) return $"the storage location '{path}' is not an absolute path";
        if (mustExist && !Directory.Exists(path)) return $"the storage location '{path}' is not an existing folder";
        return null;
    }

    /// <summary>A thumbprint is the SHA-256 of a certificate: 64 hexadecimal digits.</summary>
    public static string? ThumbprintProblem(string thumbprint) =>
        thumbprint.Length == 64 && thumbprint.All(char.IsAsciiHexDigit)
            ? null
            : $"'{thumbprint}' is not a certificate thumbprint (SHA-256: 64 hexadecimal digits, as 'haven host trust list' shows)";

    /// <summary>Trust groups are labels: 1–64 letters, digits, '-', '_' or '.'.</summary>
    public static string? TrustGroupProblem(string group) =>
        group.Length is > 0 and <= 64 && group.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.')
            ? null
            : $"the trust group '{group}' is not 1-64 letters, digits, '-', '_' or '.'";

    // ---- persistence ----

    static readonly JsonSerializerOptions FileJson = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
        WriteIndented = true,
    };

    /// <summary>The settings in <paramref name="path"/>; the defaults (disabled, no entries) when it does not exist.
    /// A file that is not valid settings throws <see cref="InvalidDataException"/> with one line.</summary>
    public static ReplicaAuthorization Load(string path)
    {
        if (!File.Exists(path)) return new ReplicaAuthorization();
        ReplicaAuthorization? settings;
        try
        {
            settings = JsonSerializer.Deserialize<ReplicaAuthorization>(File.ReadAllText(path), FileJson);
        }
        catch (Exception e) when (e is JsonException or NotSupportedException or IOException)
        {
            throw new InvalidDataException($"cannot read replica server settings {path}: {e.Message}".ReplaceLineEndings(" "), e);
        }
        if (settings is null)
            throw new InvalidDataException($"cannot read replica server settings {path}: the file holds null");
        settings = settings with { Entries = settings.Entries ?? [] };
        if (settings.Entries.Any(e => e is null || e.PrimaryPattern is null || e.StorageLocation is null))
            throw new InvalidDataException($"cannot read replica server settings {path}: an entry lacks primaryPattern or storageLocation");
        if (settings.Problem(checkFolders: false) is { } problem)
            throw new InvalidDataException($"invalid replica server settings {path}: {problem}");
        return settings;
    }

    /// <summary>Writes the settings (temporary file, fsync, rename).</summary>
    public void Save(string path) => HostIdentity.WriteAtomically(path, JsonSerializer.Serialize(this, FileJson) + "\n", secret: false);
}
