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
