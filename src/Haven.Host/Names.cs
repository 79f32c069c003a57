using Haven.Api;

namespace Haven.Host;

public static class Names
{
    /// <summary>Returns the name, or throws invalid-argument with the reason (<see cref="NameRules"/>).</summary>
    public static string Validate(string? name, string what)
        => NameRules.Problem(name, what) is { } problem ? throw HavenException.Invalid(problem) : name!;
}
