namespace Haven.Cli.Tests;

/// <summary>Runs haven in-process with captured output and a fake environment.</summary>
public sealed record CliRun(int ExitCode, string Out, string Error)
{
    public static async Task<CliRun> RunAsync(IReadOnlyDictionary<string, string>? env, params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var environment = new CliEnvironment
        {
            Out = stdout,
            Error = stderr,
            // Never the real environment: HAVEN_HOST etc. of the machine must not leak into tests.
            GetEnv = name => env is not null && env.TryGetValue(name, out var value) ? value : null,
            OutIsTerminal = false,
        };
        var code = await HavenCli.RunAsync(args, environment, TestContext.Current.CancellationToken);
        return new CliRun(code, stdout.ToString(), stderr.ToString());
    }

    public static Task<CliRun> RunAsync(params string[] args) =>
        RunAsync(new Dictionary<string, string> { ["HOME"] = "/nonexistent-home" }, args);

    public string[] ErrorLines => Error.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
}
