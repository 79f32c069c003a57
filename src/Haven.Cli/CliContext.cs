using System.CommandLine;

namespace Haven.Cli;

/// <summary>Global options and the shared plumbing every command's action runs through.</summary>
public sealed class CliContext(CliEnvironment env)
{
    public CliEnvironment Env { get; } = env;

    public Option<string?> Host { get; } = new("--host")
    {
        Description = "havend to talk to: its data folder, unix:/path/to/havend.sock or http://HOST:PORT "
            + "[env: HAVEN_HOST; default: $HAVEN_HOME, else ~/.local/share/haven]",
        HelpName = "HOST",
        Recursive = true,
    };

    public Option<string?> Token { get; } = new("--token")
    {
        Description = "API token [env: HAVEN_TOKEN; default: the token file beside the socket]",
        HelpName = "TOKEN",
        Recursive = true,
    };

    public Option<bool> Json { get; } = new("--json")
    {
        Description = "Print only the response JSON",
        Recursive = true,
    };

    /// <summary>Makes <paramref name="body"/> the action of <paramref name="command"/>, with errors mapped to exit codes.</summary>
    public void SetAction(Command command, Func<ParseResult, HavenClient, CommandOutput, CancellationToken, Task> body) =>
        command.SetAction((parseResult, ct) => RunAsync(parseResult, body, ct));

    public async Task<int> RunAsync(ParseResult parseResult, Func<ParseResult, HavenClient, CommandOutput, CancellationToken, Task> body, CancellationToken ct)
    {
        HavenEndpoint endpoint;
        try
        {
            endpoint = HavenEndpoint.Resolve(parseResult.GetValue(Host), parseResult.GetValue(Token), Env.GetEnv);
        }
        catch (ArgumentException e)
        {
            return Fail("--host: " + e.Message, ExitCodes.InvalidArgument);
        }

        using var client = new HavenClient(endpoint);
        var output = new CommandOutput(Env, parseResult.GetValue(Json));
        try
        {
            await body(parseResult, client, output, ct);
            return ExitCodes.Ok;
        }
        catch (HavenApiException e)
        {
            return Fail(e.Message, ExitCodes.ForErrorCode(e.Code));
        }
        catch (HavenUnreachableException e)
        {
            return Fail(e.Message, ExitCodes.Unreachable);
        }
        catch (HavenProtocolException e)
        {
            return Fail(e.Message, ExitCodes.Error);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            return Fail("interrupted", ExitCodes.Cancelled);
        }
    }

    /// <summary>Writes "haven: message" as one line on stderr and returns <paramref name="exitCode"/>.</summary>
    public int Fail(string message, int exitCode)
    {
        Env.Error.WriteLine("haven: " + OneLine(message));
        return exitCode;
    }

    static string OneLine(string s) => string.Join(' ', s.Split(['\r', '\n'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
}
