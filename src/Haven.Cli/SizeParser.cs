using System.Globalization;

namespace Haven.Cli;

/// <summary>
/// Parses disk sizes such as <c>64M</c>, <c>1G</c>, <c>1.5GiB</c> or <c>4096</c> into bytes.
/// Suffixes are binary, as in qemu-img: K = 1024, M = 1024², G = 1024³, T = 1024⁴.
/// <c>B</c>, <c>iB</c> after the unit letter are accepted and change nothing; a bare number is bytes.
/// </summary>
public static class SizeParser
{
    public static bool TryParse(string? text, out long bytes, out string error)
    {
        bytes = 0;
        var s = text?.Trim() ?? "";
        if (s.Length == 0)
        {
            error = "size is empty";
            return false;
        }

        var numberEnd = 0;
        while (numberEnd < s.Length && (char.IsAsciiDigit(s[numberEnd]) || s[numberEnd] == '.'))
            numberEnd++;
        var numberText = s[..numberEnd];
        var unitText = s[numberEnd..].Trim();

        if (numberText.Length == 0 || !decimal.TryParse(numberText, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var number))
        {
            error = $"'{text}' is not a size (examples: 4096, 64M, 1G, 1.5G)";
            return false;
        }

        long? multiplier = unitText.ToUpperInvariant() switch
        {
            "" or "B" => 1L,
            "K" or "KB" or "KIB" => 1L << 10,
            "M" or "MB" or "MIB" => 1L << 20,
            "G" or "GB" or "GIB" => 1L << 30,
            "T" or "TB" or "TIB" => 1L << 40,
            _ => null,
        };
        if (multiplier is null)
        {
            error = $"'{text}' has an unknown unit '{unitText}' (use K, M, G or T)";
            return false;
        }

        decimal value;
        try
        {
            value = number * multiplier.Value;
        }
        catch (OverflowException)
        {
            error = $"'{text}' is too large";
            return false;
        }
        if (value > long.MaxValue)
        {
            error = $"'{text}' is too large";
            return false;
        }
        if (value != decimal.Truncate(value))
        {
            error = $"'{text}' is not a whole number of bytes";
            return false;
        }
        if (value <= 0)
        {
            error = $"'{text}' must be larger than zero";
            return false;
        }

        bytes = (long)value;
        error = "";
        return true;
    }

    public static long Parse(string text) =>
        TryParse(text, out var bytes, out var error) ? bytes : throw new FormatException(error);

    /// <summary>Formats bytes for people: 1073741824 → "1 GiB", 1610612736 → "1.5 GiB".</summary>
    public static string Format(long bytes)
    {
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
        double value = bytes;
        var unit = 0;
        while (Math.Abs(value) >= 1024 && unit < units.Length - 1)
        {
            value /= 1024;
            unit++;
        }
        return unit == 0
            ? $"{bytes} B"
            : value.ToString("0.##", CultureInfo.InvariantCulture) + " " + units[unit];
    }
}
