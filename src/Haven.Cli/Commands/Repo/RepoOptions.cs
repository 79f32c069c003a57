using System.CommandLine;
using System.CommandLine.Parsing;
using System.Net;

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
        Description = $"Backup repository (a folder; made absolute here) [env: {RepoVariable}]",
        HelpName = "PATH",
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
        command.Validators.Add(Validate);
    }

    void Validate(CommandResult result)
    {
        if (string.IsNullOrEmpty(result.GetValue(Repo)) && string.IsNullOrEmpty(getEnv(RepoVariable)))
            result.AddError($"no repository: give --repo PATH or set {RepoVariable}");
        if (string.IsNullOrEmpty(result.GetValue(PassphraseFile)) && string.IsNullOrEmpty(getEnv(PassphraseVariable)))
            result.AddError($"no passphrase: give --passphrase-file FILE or set {PassphraseVariable}");
    }

    /// <summary>The repository: --repo, else HAVEN_REPO, made absolute (havend has another current folder).</summary>
    public string Repository(ParseResult parseResult)
    {
        var repo = parseResult.GetValue(Repo) is { Length: > 0 } option ? option : getEnv(RepoVariable);
        if (string.IsNullOrEmpty(repo))
            throw Invalid($"no repository: give --repo PATH or set {RepoVariable}");
        return Path.GetFullPath(repo);
    }

    /// <summary>The passphrase: the first line of --passphrase-file, else HAVEN_PASSPHRASE.</summary>
    public string Passphrase(ParseResult parseResult)
    {
        if (parseResult.GetValue(PassphraseFile) is { Length: > 0 } file)
            return ReadFirstLine(file);
        return getEnv(PassphraseVariable) is { Length: > 0 } passphrase
            ? passphrase
            : throw Invalid($"no passphrase: give --passphrase-file FILE or set {PassphraseVariable}");
    }

    static string ReadFirstLine(string file)
    {
        string? line;
        try
        {
            using var reader = new StreamReader(file);
            line = reader.ReadLine();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw Invalid($"--passphrase-file: cannot read {file}: {e.Message}");
        }
        return string.IsNullOrEmpty(line) ? throw Invalid($"--passphrase-file: the first line of {file} is empty") : line;
    }

    /// <summary>A command-line problem found when the action runs: one stderr line and exit code 2, like a bad name.</summary>
    public static HavenApiException Invalid(string message) => new(message, "invalid_argument", HttpStatusCode.BadRequest);
}
