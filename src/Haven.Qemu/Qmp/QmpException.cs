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
public sealed class QmpConnectionException : Exception
{
    public QmpConnectionException(string message, Exception? inner = null) : base(message, inner) { }
}
