using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Text.RegularExpressions;
using System.CommandLine;
using System.CommandLine.Parsing;

namespace Haven.Cli;

/// <summary>Custom option parsers that report bad values as parse errors (exit code 2) instead of throwing.</summary>
public static class Parsers
{
    public static int Int(ArgumentResult result, int min, int max = int.MaxValue)
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
        if (value > max)
        {
            result.AddError($"{OptionName(result)}: must be {min}..{max}, not {value}");
            return default;
        }
        return value;
    }

    public static long Long(ArgumentResult result, long min)
    {
        var text = result.Tokens.Count > 0 ? result.Tokens[^1].Value : "";
        if (!long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var value))
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

    /// <summary>Shortest and longest replication frequency havend accepts, in seconds.</summary>
    public const int MinFrequencySeconds = 5, MaxFrequencySeconds = 86400;

    /// <summary>A replication frequency: <c>&lt;N&gt;s</c> or <c>&lt;N&gt;m</c> (30s, 5m, 15m, ...), 5 s .. 24 h, as seconds.</summary>
    public static bool TryParseFrequency(string text, out int seconds, [NotNullWhen(false)] out string? error)
    {
        seconds = 0;
        var t = text.Trim();
        var unit = t.Length > 0 ? char.ToLowerInvariant(t[^1]) : '\0';
        if (unit is not ('s' or 'm')
            || !long.TryParse(t.AsSpan(0, t.Length - 1), NumberStyles.None, CultureInfo.InvariantCulture, out var n))
        {
            error = $"'{text}' is not a frequency: give seconds or minutes, e.g. 30s, 5m, 15m";
            return false;
        }
        var total = unit == 'm' ? (n > MaxFrequencySeconds ? long.MaxValue : n * 60) : n;
        if (total < MinFrequencySeconds)
        {
            error = $"'{text}' is too short: replication runs at most every {MinFrequencySeconds} s";
            return false;
        }
        if (total > MaxFrequencySeconds)
        {
            error = $"'{text}' is too long: replication runs at least every 24 h (1440m)";
            return false;
        }
        seconds = (int)total;
        error = null;
        return true;
    }

    public static int Frequency(ArgumentResult result)
    {
        var text = result.Tokens.Count > 0 ? result.Tokens[^1].Value : "";
        if (TryParseFrequency(text, out var seconds, out var error))
            return seconds;
        result.AddError($"{OptionName(result)}: {error}");
        return default;
    }

    static readonly Regex IsoTime = new(@"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,7})?)?(Z|[+-]\d{2}:?\d{2})$",
        RegexOptions.IgnoreCase | RegexOptions.CultureInvariant);

    /// <summary>An ISO 8601 date and time with its offset (2025-01-02T03:00:00Z, 2025-01-02T04:00+01:00).</summary>
    public static bool TryParseTime(string text, out DateTimeOffset time)
    {
        time = default;
        var t = text.Trim();
        return IsoTime.IsMatch(t)
            && DateTimeOffset.TryParse(t.ToUpperInvariant(), CultureInfo.InvariantCulture, DateTimeStyles.None, out time);
    }

    public static DateTimeOffset? Time(ArgumentResult result)
    {
        var text = result.Tokens.Count > 0 ? result.Tokens[^1].Value : "";
        if (TryParseTime(text, out var time))
            return time;
        result.AddError($"{OptionName(result)}: '{text}' is not an ISO 8601 time with an offset, e.g. 2025-01-02T03:00:00Z or 2025-01-02T04:00:00+01:00");
        return null;
    }

    /// <summary>"on" or "off" (an --autostart value).</summary>
    public static string? OnOff(ArgumentResult result)
    {
        var text = result.Tokens.Count == 1 ? result.Tokens[0].Value : "";
        if (text is "on" or "off") return text;
        result.AddError($"{OptionName(result)} takes on or off, not '{text}'");
        return null;
    }

    public static string OptionName(ArgumentResult result) =>
        result.Parent is OptionResult option ? option.Option.Name : result.Argument.Name;
}
