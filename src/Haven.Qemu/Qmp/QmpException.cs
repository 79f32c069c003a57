namespace Haven.Qemu.Qmp;

/// <summary>QEMU answered a command with an error object.</summary>
public sealed class QmpException(string command, string errorClass, string description)
    : Exception($"QEMU refused {command}: {description}")
{
    public string Command { get; } = command;
    /// <summary>QMP error class, e.g. "GenericError", "DeviceNotFound".</summary>
    public string ErrorClass { get; } = errorClass;
    public string Description { get; } = description;
}

/// <summary>The QMP socket could not be reached or was closed; the client must not be reused.</summary>
public class QmpConnectionException : Exception
{
    public QmpConnectionException(string message, Exception? inner = null) : base(message, inner) { }
}

/// <summary>QEMU left a command unanswered past its timeout (hung or stopped); the connection was closed.</summary>
public sealed class QmpTimeoutException(string command, TimeSpan timeout)
    : QmpConnectionException($"QEMU did not answer {command} within {timeout.TotalSeconds:0.#} s")
{
    public string Command { get; } = command;
}
