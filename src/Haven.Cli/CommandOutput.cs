using System.Text.Json;
using Haven.Api;
using Spectre.Console;

namespace Haven.Cli;

/// <summary>Where a command writes its result: the JSON of the response with --json, human output otherwise.</summary>
public sealed class CommandOutput(CliEnvironment env, bool json)
{
    /// <summary>ApiJson.Options, indented.</summary>
    public static readonly JsonSerializerOptions IndentedJson = new(ApiJson.Options) { WriteIndented = true };

    IAnsiConsole? console;

    public bool Json { get; } = json;

    /// <summary>The console for human output (created on first use).</summary>
    public IAnsiConsole Console => console ??= CreateConsole(env);

    /// <summary>Prints <paramref name="value"/> as JSON with --json, else runs <paramref name="human"/>.</summary>
    public void Result<T>(T value, Action<IAnsiConsole> human)
    {
        if (Json)
            env.Out.WriteLine(JsonSerializer.Serialize(value, IndentedJson));
        else
            human(Console);
    }

    /// <summary>For answers without a body (204): nothing with --json, else runs <paramref name="human"/>.</summary>
    public void NoContent(Action<IAnsiConsole> human)
    {
        if (!Json)
            human(Console);
    }

    public static IAnsiConsole CreateConsole(CliEnvironment env)
    {
        var terminal = env.OutIsTerminal;
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Ansi = terminal ? AnsiSupport.Detect : AnsiSupport.No,
            ColorSystem = terminal ? ColorSystemSupport.Detect : ColorSystemSupport.NoColors,
            Interactive = terminal ? InteractionSupport.Detect : InteractionSupport.No,
            Out = new AnsiConsoleOutput(env.Out),
        });
        if (!terminal)
        {
            // Files and pipes have no width: use $COLUMNS or a wide default so tables are not squeezed.
            // (Colours and other escapes are already off: Ansi = No above.)
            console.Profile.Width = int.TryParse(env.GetEnv("COLUMNS"), out var columns) && columns > 0 ? columns : 160;
        }
        else if (console.Profile.Width < 20)
        {
            console.Profile.Width = 80;
        }
        return console;
    }
}
