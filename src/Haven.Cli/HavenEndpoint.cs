namespace Haven.Cli;

/// <summary>Where havend listens and how to authenticate to it, resolved from --host/--token and the environment.</summary>
public sealed record HavenEndpoint
{
    /// <summary>Unix socket path; null for a TCP (http/https) endpoint.</summary>
    public string? SocketPath { get; init; }
    /// <summary>Base address requests are sent to (<c>http://localhost/</c> over a unix socket).</summary>
    public required Uri BaseAddress { get; init; }
    /// <summary>Token given explicitly (--token or HAVEN_TOKEN).</summary>
    public string? Token { get; init; }
    /// <summary>File to read the token from when none was given explicitly.</summary>
    public string? TokenFile { get; init; }
    /// <summary>How the endpoint is named in messages.</summary>
    public required string Display { get; init; }

    public const string SocketFileName = "havend.sock";
    public const string TokenFileName = "token";

    /// <summary>
    /// Resolves the endpoint. <paramref name="host"/> and <paramref name="token"/> are the option values
    /// (null when not given); <paramref name="getEnv"/> reads environment variables.
    /// </summary>
    /// <exception cref="ArgumentException">The host value cannot be used.</exception>
    public static HavenEndpoint Resolve(string? host, string? token, Func<string, string?> getEnv)
    {
        host = NullIfEmpty(host) ?? NullIfEmpty(getEnv("HAVEN_HOST"));
        token = NullIfEmpty(token) ?? NullIfEmpty(getEnv("HAVEN_TOKEN"));

        if (host is null)
            return ForFolder(DefaultFolder(getEnv), token);

        if (host.StartsWith("unix:", StringComparison.OrdinalIgnoreCase))
        {
            var socketText = host["unix:".Length..];
            // Accept unix:///path as well as unix:/path.
            if (socketText.StartsWith("//", StringComparison.Ordinal))
                socketText = socketText[2..];
            if (socketText.Length == 0)
                throw new ArgumentException($"'{host}' names no socket (expected unix:/path/to/{SocketFileName})");
            return ForSocket(Path.GetFullPath(socketText), token);
        }

        if (host.StartsWith("http://", StringComparison.OrdinalIgnoreCase) || host.StartsWith("https://", StringComparison.OrdinalIgnoreCase))
        {
            if (!Uri.TryCreate(host, UriKind.Absolute, out var uri) || string.IsNullOrEmpty(uri.Host))
                throw new ArgumentException($"'{host}' is not a valid URL");
            // Routes are absolute (/v1/...), so only scheme, host and port matter.
            var baseAddress = new UriBuilder(uri.Scheme, uri.Host, uri.Port).Uri;
            return new HavenEndpoint { BaseAddress = baseAddress, Token = token, Display = baseAddress.ToString().TrimEnd('/') };
        }

        if (host.Contains("://", StringComparison.Ordinal))
            throw new ArgumentException($"'{host}' has an unsupported scheme (use a folder, unix:/path/to/{SocketFileName} or http://HOST:PORT)");

        var path = Path.GetFullPath(host);
        // A path to the socket itself is accepted too (so is anything that exists and is not a folder).
        if (File.Exists(path))
            return ForSocket(path, token);
        return ForFolder(path, token);
    }

    /// <summary>The data folder of havend installed as a system service (scripts/install-service.sh).</summary>
    public const string SystemFolder = "/var/lib/haven";

    /// <summary>
    /// $HAVEN_HOME; else the per-user folder (~/.local/share/haven) when a havend listens there or no system one
    /// does; else the system service's <see cref="SystemFolder"/>. <paramref name="exists"/> is File.Exists (tests fake it).
    /// </summary>
    public static string DefaultFolder(Func<string, string?> getEnv, Func<string, bool>? exists = null)
    {
        var home = NullIfEmpty(getEnv("HAVEN_HOME"));
        if (home is not null)
            return Path.GetFullPath(home);
        exists ??= File.Exists;
        var userHome = NullIfEmpty(getEnv("HOME")) ?? Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        var user = Path.Combine(userHome, ".local", "share", "haven");
        var system = Path.Combine(SystemFolder, SocketFileName);
        return !exists(Path.Combine(user, SocketFileName)) && exists(system) ? SystemFolder : user;
    }

    static HavenEndpoint ForFolder(string folder, string? token) =>
        ForSocket(Path.Combine(folder, SocketFileName), token);

    static HavenEndpoint ForSocket(string socketPath, string? token) => new()
    {
        SocketPath = socketPath,
        BaseAddress = new Uri("http://localhost/"),
        Token = token,
        TokenFile = token is null ? Path.Combine(Path.GetDirectoryName(socketPath) ?? "/", TokenFileName) : null,
        Display = socketPath,
    };

    static string? NullIfEmpty(string? s) => string.IsNullOrWhiteSpace(s) ? null : s.Trim();
}
