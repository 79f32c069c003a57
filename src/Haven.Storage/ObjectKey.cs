namespace Haven.Storage;

/// <summary>
/// The one rule for object keys, shared by every backend so a repository written to one can be copied to
/// another verbatim: '/'-separated segments of lower-case ASCII letters, digits, '.', '_' and '-'; no empty
/// segment (so no leading, trailing or doubled '/'); no segment starting with '.' (rules out "." and "..",
/// and leaves dot-names free for a backend's temporary files); at most 512 characters.
/// </summary>
public static class ObjectKey
{
    public const int MaxLength = 512;

    public static bool IsValid(string? key) => key is not null && Check(key) is null;

    /// <summary>Throws <see cref="InvalidObjectKeyException"/> unless <paramref name="key"/> is a valid key.</summary>
    public static void Validate(string? key)
    {
        if (key is null) throw new InvalidObjectKeyException("(null)", "key is null");
        if (Check(key) is { } why) throw new InvalidObjectKeyException(key, why);
    }

    /// <summary>
    /// A listing prefix: "" (everything), or a valid key optionally followed by '/'. A key cut short
    /// ("chunks/a") is itself a valid key, so it is a valid prefix too.
    /// </summary>
    public static void ValidatePrefix(string? prefix)
    {
        if (prefix is null) throw new InvalidObjectKeyException("(null)", "prefix is null");
        if (prefix.Length == 0) return;
        var body = prefix.EndsWith('/') ? prefix[..^1] : prefix;
        if (Check(body) is { } why) throw new InvalidObjectKeyException(prefix, why);
    }

    private static string? Check(string key)
    {
        if (key.Length == 0) return "key is empty";
        if (key.Length > MaxLength) return $"key is longer than {MaxLength} characters";
        var segmentStart = true;
        foreach (var c in key)
        {
            if (c == '/')
            {
                if (segmentStart) return "key has an empty segment (leading, trailing or doubled '/')";
                segmentStart = true;
                continue;
            }
            if (!(c is >= 'a' and <= 'z' or >= '0' and <= '9' or '.' or '_' or '-'))
                return $"character '{(char.IsControl(c) ? '?' : c)}' is not allowed (a-z, 0-9, '.', '_', '-', '/')";
            if (segmentStart && c == '.') return "a key segment must not start with '.'";
            segmentStart = false;
        }
        if (segmentStart) return "key must not end with '/'";
        return null;
    }
}
