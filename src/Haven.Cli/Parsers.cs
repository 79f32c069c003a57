using System.Globalization;
using System.CommandLine;
using System.CommandLine.Parsing;

namespace Haven.Cli;

/// <summary>Custom option parsers that report bad values as parse errors (exit code 2) instead of throwing.</summary>
public static class Parsers
{
    public static int Int(ArgumentResult result, int min)
    {
        var text = result.Tokens.Count > 0 ? result.Tokens[^1].Value : "";
        if (!int.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var value))
        {
            result.AddError($"{OptionName(result)}: '{text}' is not a whole number");
            return default;
        }
        if (value < min)
        {
            result.AddError($"{OptionName(result)}: must be at least {min}, not {value}");
            return default;
        }
        return value;
    }

    public static string OptionName(ArgumentResult result) =>
        result.Parent is OptionResult option ? option.Option.Name : result.Argument.Name;
}
