namespace Haven.Replication;

/// <summary>What went wrong talking to another host.</summary>
public enum ReplicationFailure
{
    /// <summary>The TLS handshake failed: the peer's certificate is not trusted here, or ours is not trusted there.</summary>
    Tls,
    /// <summary>The replica server answered, but refused this primary (not authorized).</summary>
    Refused,
    /// <summary>Nobody answered at that address (connection refused, timeout, name not found).</summary>
    Unreachable,
    /// <summary>The peer answered something this host did not expect (other status, other protocol version).</summary>
    Protocol,
}

/// <summary>A host-to-host failure, with a one-line message for the user.</summary>
public sealed class ReplicationException(ReplicationFailure failure, string message, Exception? inner = null)
    : Exception(message.ReplaceLineEndings(" "), inner)
{
    public ReplicationFailure Failure { get; } = failure;
}
