namespace Haven.Host;

/// <summary>Rules for user-chosen names of VMs and checkpoints.</summary>
public static class Names
{
    public const int MaxLength = 100;

    /// <summary>
    /// Names never become file names (files are named by id), but they travel in URLs, logs and later
    /// replication paths, so path separators, "..", control characters and edge whitespace are refused.
    /// </summary>
    public static string Validate(string? name, string what)
    {
        if (string.IsNullOrWhiteSpace(name)) throw HavenException.Invalid($"{what} name must not be empty");
        if (name.Length > MaxLength) throw HavenException.Invalid($"{what} name is longer than {MaxLength} characters");
        if (name != name.Trim()) throw HavenException.Invalid($"{what} name '{name}' starts or ends with white space");
        if (name.Contains('/') || name.Contains('\\')) throw HavenException.Invalid($"{what} name '{name}' contains a path separator");
        if (name.Contains("..", StringComparison.Ordinal)) throw HavenException.Invalid($"{what} name '{name}' contains '..'");
        foreach (var c in name)
            if (char.IsControl(c)) throw HavenException.Invalid($"{what} name contains a control character");
        return name;
    }
}
