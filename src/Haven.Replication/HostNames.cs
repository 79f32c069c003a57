namespace Haven.Replication;

/// <summary>Rules for host names (certificate CN/SAN) and primary-name patterns.</summary>
public static class HostNames
{
    /// <summary>Why <paramref name="name"/> is not a DNS-like host name (letters, digits, '-', '.'), or null when it is.</summary>
    public static string? Problem(string? name) => Problem(name, "host name", allowWildcard: false);

    /// <summary>Why <paramref name="pattern"/> is not a primary-name pattern (a host name that may hold '*'), or null when it is.</summary>
    public static string? PatternProblem(string? pattern) => Problem(pattern, "primary pattern", allowWildcard: true);

    static string? Problem(string? name, string what, bool allowWildcard)
    {
        if (string.IsNullOrEmpty(name)) return $"the {what} is empty";
        if (name.Length > 253) return $"the {what} '{Shorten(name)}' is longer than 253 characters";
        foreach (var c in name)
        {
            if (char.IsAsciiLetterOrDigit(c) || c is '-' or '.' || (allowWildcard && c == '*')) continue;
            return $"the {what} '{Shorten(name)}' holds '{Printable(c)}': only letters, digits, '-', '.'" + (allowWildcard ? " and '*'" : "") + " are allowed";
        }
        if (name.StartsWith('.') || name.EndsWith('.') || name.Contains("..", StringComparison.Ordinal))
            return $"the {what} '{name}' has an empty label (a leading, trailing or doubled '.')";
        return null;
    }

    static string Printable(char c) => char.IsControl(c) || char.IsWhiteSpace(c) ? $"U+{(int)c:X4}" : c.ToString();

    static string Shorten(string s) => (s.Length > 60 ? s[..60] + "…" : s).ReplaceLineEndings(" ");
}
