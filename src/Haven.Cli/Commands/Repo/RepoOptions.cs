using System.CommandLine;
using System.CommandLine.Parsing;
using System.Net;
using Haven.Api;

namespace Haven.Cli.Commands.Repo;

/// <summary>
/// --repo and --passphrase-file, which every command that opens a backup repository takes. The passphrase is
/// never a plain command-line value (it would show in ps and shell history): a file, or HAVEN_PASSPHRASE.
/// </summary>
public sealed class RepoOptions
{
    public const string RepoVariable = "HAVEN_REPO";
    public const string PassphraseVariable = "HAVEN_PASSPHRASE";

    readonly Func<string, string?> getEnv;

    public Option<string?> Repo { get; } = new("--repo")
    {
        Description = $"Backup repository: a folder (made absolute here) or s3://bucket/prefix [env: {RepoVariable}]",
        HelpName = "PATH|URL",
    };

    public Option<string?> S3Endpoint { get; } = new("--s3-endpoint")
    {
        Description = "S3 service URL for an s3:// repository, e.g. http://127.0.0.1:7480 [env: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL; default: AWS]",
        HelpName = "URL",
    };

    public Option<string?> S3Region { get; } = new("--s3-region")
    {
        Description = "S3 region [env: AWS_REGION, AWS_DEFAULT_REGION; default: us-east-1]",
        HelpName = "REGION",
    };

    public Option<bool?> S3PathStyle { get; } = new("--s3-path-style")
    {
        Description = "Path-style S3 addressing (bucket in the path) [default: on when an endpoint is given]",
        HelpName = "true|false",
    };

    public Option<string?> PassphraseFile { get; } = new("--passphrase-file")
    {
        Description = $"File whose first line is the repository passphrase [default: the passphrase in ${PassphraseVariable}]",
        HelpName = "FILE",
    };

    /// <summary>Adds the options to <paramref name="command"/>, with a check that both can be resolved.</summary>
    public RepoOptions(Command command, CliContext ctx)
    {
        getEnv = ctx.Env.GetEnv;
        command.Add(Repo);
        command.Add(PassphraseFile);
        command.Add(S3Endpoint);
        command.Add(S3Region);
        command.Add(S3PathStyle);
        command.Validators.Add(Validate);
    }

    void Validate(CommandResult result)
    {
        if (string.IsNullOrEmpty(result.GetValue(Repo)) && string.IsNullOrEmpty(getEnv(RepoVariable)))
            result.AddError($"no repository: give --repo PATH or set {RepoVariable}");
        if (string.IsNullOrEmpty(result.GetValue(PassphraseFile)) && string.IsNullOrEmpty(getEnv(PassphraseVariable)))
            result.AddError($"no passphrase: give --passphrase-file FILE or set {PassphraseVariable}");
    }

    /// <summary>The repository: --repo, else HAVEN_REPO; a folder is made absolute (havend has another current folder).</summary>
    public string Repository(ParseResult parseResult)
    {
        var repo = parseResult.GetValue(Repo) is { Length: > 0 } option ? option : getEnv(RepoVariable);
        if (string.IsNullOrEmpty(repo))
            throw Invalid($"no repository: give --repo PATH or set {RepoVariable}");
        return IsS3(repo) ? repo : Path.GetFullPath(repo);
    }

    public static bool IsS3(string location) => location.StartsWith("s3://", StringComparison.Ordinal);

    /// <summary>
    /// S3 settings for an s3:// repository: the --s3-* options, then this shell's AWS_* variables, so a user's
    /// credentials reach havend with the request (havend falls back to its own environment for what is missing).
    /// Null for a folder repository.
    /// </summary>
    public S3Options? S3(ParseResult parseResult)
    {
        if (!IsS3(Repository(parseResult)))
        {
            if (parseResult.GetValue(S3Endpoint) is not null || parseResult.GetValue(S3Region) is not null || parseResult.GetValue(S3PathStyle) is not null)
                throw Invalid("--s3-* options apply only to an s3:// repository");
            return null;
        }
        return S3FromEnvironment(getEnv, parseResult.GetValue(S3Endpoint), parseResult.GetValue(S3Region), parseResult.GetValue(S3PathStyle));
    }

    public static S3Options S3FromEnvironment(Func<string, string?> env, string? endpoint, string? region, bool? pathStyle)
    {
        static string? Get(Func<string, string?> env, params string[] names)
        {
            foreach (var n in names) if (env(n) is { Length: > 0 } v) return v;
            return null;
        }
        return new S3Options
        {
            Endpoint = endpoint ?? Get(env, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
            Region = region ?? Get(env, "AWS_REGION", "AWS_DEFAULT_REGION"),
            PathStyle = pathStyle,
            AccessKeyId = Get(env, "AWS_ACCESS_KEY_ID"),
            SecretAccessKey = Get(env, "AWS_SECRET_ACCESS_KEY"),
            SessionToken = Get(env, "AWS_SESSION_TOKEN"),
        };
    }

    /// <summary>The passphrase: the first line of --passphrase-file, else HAVEN_PASSPHRASE.</summary>
    public string Passphrase(ParseResult parseResult)
    {
        if (parseResult.GetValue(PassphraseFile) is { Length: > 0 } file)
            return ReadFirstLine(file, "--passphrase-file");
        return getEnv(PassphraseVariable) is { Length: > 0 } passphrase
            ? passphrase
            : throw Invalid($"no passphrase: give --passphrase-file FILE or set {PassphraseVariable}");
    }

    public static string ReadFirstLine(string file, string option)
    {
        string? line;
        try
        {
            using var reader = new StreamReader(file);
            line = reader.ReadLine();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw Invalid($"{option}: cannot read {file}: {e.Message}");
        }
        return string.IsNullOrEmpty(line) ? throw Invalid($"{option}: the first line of {file} is empty") : line;
    }

    /// <summary>A command-line problem found when the action runs: one stderr line and exit code 2, like a bad name.</summary>
    public static HavenApiException Invalid(string message) => new(message, "invalid_argument", HttpStatusCode.BadRequest);
}
