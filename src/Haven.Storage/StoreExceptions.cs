namespace Haven.Storage;

/// <summary>A backend failed in a way the caller may want to report or retry; the message is one line.</summary>
public class StoreException : Exception
{
    public StoreException(string message, Exception? inner = null) : base(message, inner) { }
}

/// <summary>The store has no room (ENOSPC or a quota); the write left no object behind.</summary>
public sealed class StoreFullException : StoreException
{
    public StoreFullException(string key, Exception? inner = null)
        : base($"object store is full: could not write {key}", inner) => Key = key;

    public string Key { get; }
}

/// <summary>A key broke <see cref="ObjectKey"/>'s rule; nothing was read or written.</summary>
public sealed class InvalidObjectKeyException(string key, string reason)
    : ArgumentException($"invalid object key \"{key}\": {reason}")
{
    public string Key { get; } = key;
}

/// <summary>The object is under retention (object lock): the delete or overwrite was refused and the object is intact.</summary>
public sealed class ObjectLockedException : StoreException
{
    public ObjectLockedException(string key, DateTimeOffset? retainUntil, Exception? inner = null)
        : base(retainUntil is { } until
            ? $"object {key} is locked until {until.UtcDateTime:yyyy-MM-dd HH:mm:ss} UTC and cannot be deleted"
            : $"object {key} is locked and cannot be deleted", inner)
    {
        Key = key;
        RetainUntil = retainUntil;
    }

    public string Key { get; }
    public DateTimeOffset? RetainUntil { get; }
}

/// <summary>The store refused our credentials or permissions (wrong key, expired token, denied policy).</summary>
public sealed class StoreAccessDeniedException : StoreException
{
    public StoreAccessDeniedException(string message, Exception? inner = null) : base(message, inner) { }
}

/// <summary>The store could not be reached or kept failing (connection refused, timeouts, 5xx or throttling after every retry).</summary>
public sealed class StoreUnavailableException : StoreException
{
    public StoreUnavailableException(string message, Exception? inner = null) : base(message, inner) { }
}
