namespace Haven.Host;

public enum ErrorCode { InvalidArgument, NotFound, Conflict, Failed }

/// <summary>An operation refused or failed with a message meant for the user; state is left as it was.</summary>
public sealed class HavenException(ErrorCode code, string message, Exception? inner = null) : Exception(message, inner)
{
    public ErrorCode Code { get; } = code;

    public static HavenException NotFound(string message) => new(ErrorCode.NotFound, message);
    public static HavenException Conflict(string message) => new(ErrorCode.Conflict, message);
    public static HavenException Invalid(string message) => new(ErrorCode.InvalidArgument, message);
}
