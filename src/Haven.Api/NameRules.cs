namespace Haven.Api;

/// <summary>
/// Rules for user-chosen names of VMs and checkpoints, shared by havend and its clients. Names travel
/// in URL paths, logs and (later) replica paths, so anything a path or URL could reinterpret is refused:
/// separators, "." and "..", "%", control characters, edge white space.
/// </summary>
public static class NameRules
{
    public const int MaxLength = 100;

    /// <summary>Null when <paramref name="name"/> is acceptable, else why it is not (one line).</summary>
    public static string? Problem(string? name, string what)
    {
        if (string.IsNullOrWhiteSpace(name)) return $"{what} name must not be empty";
        if (name.Length > MaxLength) return $"{what} name is longer than {MaxLength} characters";
        if (name != name.Trim()) return $"{what} name '{name}' starts or ends with white space";
        if (name.Contains('/') || name.Contains('\\')) return $"{what} name '{name}' contains a path separator";
        if (name == "." || name.Contains("..", StringComparison.Ordinal)) return $"{what} name '{name}' is or contains a relative path step ('.' or '..')";
        if (name.Contains('%')) return $"{what} name '{name}' contains '%'";
        foreach (var c in name)
            if (char.IsControl(c)) return $"{what} name contains a control character";
        return null;
    }
}
