namespace Haven.Cli;

/// <summary>What a run of haven talks to: output streams and environment variables (swappable in tests).</summary>
public sealed record CliEnvironment
{
    public required TextWriter Out { get; init; }
    public required TextWriter Error { get; init; }
    public required Func<string, string?> GetEnv { get; init; }
    /// <summary>Whether <see cref="Out"/> is a terminal (colours, terminal width) rather than a file or pipe.</summary>
    public bool OutIsTerminal { get; init; }
    /// <summary>Raw standard input and output, for byte streams (the VM console); null where there are none (tests).</summary>
    public Stream? RawIn { get; init; }
    public Stream? RawOut { get; init; }
    /// <summary>Whether standard input is a terminal (the console switches it to raw mode then).</summary>
    public bool InIsTerminal { get; init; }

    public static CliEnvironment FromProcess() => new()
    {
        Out = Console.Out,
        Error = Console.Error,
        GetEnv = Environment.GetEnvironmentVariable,
        OutIsTerminal = !Console.IsOutputRedirected,
        RawIn = Console.OpenStandardInput(),
        RawOut = Console.OpenStandardOutput(),
        InIsTerminal = !Console.IsInputRedirected,
    };
}
