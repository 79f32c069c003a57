namespace Haven.Nbd;

/// <summary>Base of every error the NBD client reports.</summary>
public class NbdException : Exception
{
    public NbdException(string message, Exception? inner = null) : base(message, inner) { }
}

/// <summary>The server could not be reached (no socket, connection refused, name not resolved).</summary>
public sealed class NbdConnectionException(string message, Exception? inner = null) : NbdException(message, inner);

/// <summary>
/// The server broke the protocol or the connection was lost (closed, reset, killed). The client is
/// broken from then on: every pending and later request fails with this exception; connect again.
/// </summary>
public sealed class NbdProtocolException(string message, Exception? inner = null) : NbdException(message, inner);

/// <summary>The server answered one request with an errno-style error; the connection stays usable.</summary>
public sealed class NbdServerErrorException : NbdException
{
    internal NbdServerErrorException(string command, long offset, long length, int errorCode, string serverMessage, long? errorOffset)
        : base(Describe(command, offset, length, errorCode, serverMessage, errorOffset))
    {
        Command = command;
        Offset = offset;
        Length = length;
        ErrorCode = errorCode;
        ServerMessage = serverMessage;
        ErrorOffset = errorOffset;
    }

    /// <summary>NBD_CMD_READ, NBD_CMD_WRITE, ...</summary>
    public string Command { get; }
    public long Offset { get; }
    public long Length { get; }
    /// <summary>The errno value as the protocol defines it (EPERM 1, EIO 5, ENOMEM 12, EINVAL 22, ENOSPC 28, EOVERFLOW 75, ENOTSUP 95, ESHUTDOWN 108).</summary>
    public int ErrorCode { get; }
    public string ErrorName => NameOf(ErrorCode);
    /// <summary>The server's own text (structured replies only; empty otherwise).</summary>
    public string ServerMessage { get; }
    /// <summary>Where the error happened, when the server said so (NBD_REPLY_TYPE_ERROR_OFFSET).</summary>
    public long? ErrorOffset { get; }

    public const int EPERM = 1, EIO = 5, ENOMEM = 12, EINVAL = 22, ENOSPC = 28, EOVERFLOW = 75, ENOTSUP = 95, ESHUTDOWN = 108;

    public static string NameOf(int errorCode) => errorCode switch
    {
        EPERM => "EPERM",
        EIO => "EIO",
        ENOMEM => "ENOMEM",
        EINVAL => "EINVAL",
        ENOSPC => "ENOSPC",
        EOVERFLOW => "EOVERFLOW",
        ENOTSUP => "ENOTSUP",
        ESHUTDOWN => "ESHUTDOWN",
        _ => "errno " + errorCode,
    };

    private static string Describe(string command, long offset, long length, int errorCode, string serverMessage, long? errorOffset)
    {
        var text = $"NBD server failed {command} at offset {offset} length {length}: {NameOf(errorCode)}";
        if (errorOffset is { } at) text += $" at offset {at}";
        return serverMessage.Length > 0 ? text + " (" + serverMessage + ")" : text;
    }
}

/// <summary>The server refused an option during the handshake (NBD_REP_ERR_*), or did not grant what was asked.</summary>
public class NbdOptionRefusedException : NbdException
{
    public NbdOptionRefusedException(string option, string reply, string serverMessage, string message) : base(message)
    {
        Option = option;
        Reply = reply;
        ServerMessage = serverMessage;
    }

    /// <summary>NBD_OPT_GO, NBD_OPT_SET_META_CONTEXT, ...</summary>
    public string Option { get; }
    /// <summary>NBD_REP_ERR_POLICY, ...; "not offered" when a meta context was missing from an accepted reply.</summary>
    public string Reply { get; }
    public string ServerMessage { get; }
}

/// <summary>The server has no export of that name (NBD_REP_ERR_UNKNOWN).</summary>
public sealed class NbdExportNotFoundException(string option, string exportName, string serverMessage, string message)
    : NbdOptionRefusedException(option, "NBD_REP_ERR_UNKNOWN", serverMessage, message)
{
    public string ExportName { get; } = exportName;
}
