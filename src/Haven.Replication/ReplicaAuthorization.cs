using System.Net;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Haven.Replication;

/// <summary>One authorization entry: primaries whose name matches <see cref="PrimaryPattern"/> replicate into <see cref="StorageLocation"/>.</summary>
public sealed record ReplicaAuthorizationEntry(string PrimaryPattern, string StorageLocation, string? TrustGroup);

/// <summary>The replica server's answer to a primary: allowed (with where its replicas go) or refused, and why.</summary>
public sealed record ReplicaDecision(bool Allowed, string? Storage, string? TrustGroup, string Reason);

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
    /// Whether the primary named <paramref name="primaryName"/> (its certificate's CN) may replicate here. The most
    /// specific matching entry wins: a name without '*' beats any pattern, then the longer literal part (characters
    /// other than '*'), then fewer '*', then the pattern's ordinal order. With no match, allow-any gives the defaults.
    /// </summary>
    public ReplicaDecision Decide(string primaryName)
    {
        if (!Enabled)
            return new(false, null, null, "the replica server is not enabled on this host");
        if (MostSpecificMatch(primaryName) is { } entry)
            return new(true, entry.StorageLocation, entry.TrustGroup,
                $"primary server '{primaryName}' matches the authorization entry '{entry.PrimaryPattern}'");
        if (AllowAnyAuthenticated && DefaultStorage is not null)
            return new(true, DefaultStorage, DefaultTrustGroup, $"any authenticated primary server is allowed ('{primaryName}')");
        return new(false, null, null, $"primary server '{primaryName}' is not authorized on this replica server");
    }

    /// <summary>The entry that decides for <paramref name="primaryName"/>, or null when none matches.</summary>
    public ReplicaAuthorizationEntry? MostSpecificMatch(string primaryName) =>
        Entries.Where(e => Matches(e.PrimaryPattern, primaryName))
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
