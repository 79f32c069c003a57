using System.Runtime.CompilerServices;
using Microsoft.Win32.SafeHandles;

namespace Haven.Storage;

/// <summary>
/// An <see cref="IObjectStore"/> in a local (or locally mounted) directory: key "a/b/c" is the file
/// root/a/b/c. Every write goes to a dot-named temporary file in the target folder, is fsynced, then
/// published by link(2) (create-only: EEXIST means another creator won) or rename(2) (overwrite), and the
/// folder is fsynced. Readers therefore never see a partial object, and a crash leaves at most a
/// ".tmp-*" file, which listings ignore.
/// </summary>
public sealed partial class LocalDirectoryStore : IObjectStore
{
    private readonly TimeProvider? _stampClock;

    public LocalDirectoryStore(string rootPath) : this(rootPath, null) { }

    /// <summary>
    /// For tests: stamps each written object's modification time from <paramref name="stampClock"/> instead
    /// of the kernel clock, so garbage-collection age rules can be tested without sleeping.
    /// </summary>
    internal LocalDirectoryStore(string rootPath, TimeProvider? stampClock)
    {
        if (!OperatingSystem.IsLinux()) throw new PlatformNotSupportedException("LocalDirectoryStore needs Linux (link(2), fsync of directories)");
        RootPath = Path.TrimEndingDirectorySeparator(Path.GetFullPath(rootPath));
        _stampClock = stampClock;
    }

    public string RootPath { get; }

    public override string ToString() => RootPath;

    public async Task<bool> TryCreateAsync(string key, ReadOnlyMemory<byte> data, CancellationToken ct = default)
    {
        ObjectKey.Validate(key);
        var path = PathOf(key);
        // Dedup-heavy callers often re-create existing objects: answer without writing a temporary file.
        if (File.Exists(path)) return false;
        var dir = Path.GetDirectoryName(path)!;
        var tmp = await WriteTempAsync(dir, key, data, ct);
        bool created;
        try { created = Publish(tmp, path, key); }
        finally { Native.Unlink(tmp); }
        if (created) SyncDirectory(dir, key);
        return created;
    }

    /// <summary>Links the finished temporary file to its key; false if the key already exists.</summary>
    private bool Publish(string tmp, string path, string key)
    {
        var errno = Native.Link(tmp, path);
        if (errno == 0) return true;
        if (errno == Native.EEXIST) return false;
        if (IsDiskFull(errno)) throw new StoreFullException(key);
        if (errno is not (Native.EPERM or Native.EXDEV or Native.EMLINK or Native.ENOSYS or Native.EOPNOTSUPP))
            throw new StoreException($"cannot create {key} in {RootPath}: {Native.Describe(errno)}");
        // A file system without hard links: .NET's move without overwrite is the best it offers.
        try { File.Move(tmp, path, overwrite: false); }
        catch (IOException) when (File.Exists(path)) { return false; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw Translate(e, key, "create"); }
        return true;
    }

    public async Task PutAsync(string key, ReadOnlyMemory<byte> data, CancellationToken ct = default)
    {
        ObjectKey.Validate(key);
        var path = PathOf(key);
        var dir = Path.GetDirectoryName(path)!;
        var tmp = await WriteTempAsync(dir, key, data, ct);
        try { File.Move(tmp, path, overwrite: true); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Native.Unlink(tmp);
            throw Translate(e, key, "replace");
        }
        SyncDirectory(dir, key);
    }

    public async Task<byte[]?> GetAsync(string key, CancellationToken ct = default)
    {
        ObjectKey.Validate(key);
        using var handle = OpenForRead(key);
        if (handle is null) return null;
        var length = RandomAccess.GetLength(handle);
        if (length > Array.MaxLength) throw new StoreException($"object {key} is too large to read whole ({length} bytes)");
        var data = GC.AllocateUninitializedArray<byte>((int)length);
        var read = await ReadFullyAsync(handle, data, key, ct);
        if (read != data.Length) throw new StoreException($"object {key} changed size while being read");
        return data;
    }

    public async Task<int> ReadAsync(string key, Memory<byte> into, CancellationToken ct = default)
    {
        ObjectKey.Validate(key);
        using var handle = OpenForRead(key);
        if (handle is null) return -1;
        var length = RandomAccess.GetLength(handle);
        if (length > int.MaxValue) throw new StoreException($"object {key} is too large ({length} bytes)");
        var want = (int)Math.Min(length, into.Length);
        var read = await ReadFullyAsync(handle, into[..want], key, ct);
        if (read != want) throw new StoreException($"object {key} changed size while being read");
        return (int)length;
    }

    public Task<bool> DeleteAsync(string key, CancellationToken ct = default)
    {
        ObjectKey.Validate(key);
        ct.ThrowIfCancellationRequested();
        var path = PathOf(key);
        var errno = Native.Unlink(path);
        if (errno is Native.ENOENT or Native.ENOTDIR) return Task.FromResult(false);
        if (errno != 0) throw new StoreException($"cannot delete {key} in {RootPath}: {Native.Describe(errno)}");
        SyncDirectory(Path.GetDirectoryName(path)!, key);
        return Task.FromResult(true);
    }

    public async IAsyncEnumerable<ObjectInfo> ListAsync(string prefix, [EnumeratorCancellation] CancellationToken ct = default)
    {
        ObjectKey.ValidatePrefix(prefix);
        // Walk only the deepest folder the prefix names; "chunks/a" walks chunks/ and filters.
        var slash = prefix.LastIndexOf('/');
        var start = slash < 0 ? RootPath : Path.Combine(RootPath, prefix[..slash]);
        if (!Directory.Exists(start)) yield break;
        var options = new EnumerationOptions
        {
            RecurseSubdirectories = true,
            AttributesToSkip = FileAttributes.None,
            IgnoreInaccessible = false,
            ReturnSpecialDirectories = false,
        };
        var rootPrefixLength = RootPath.Length + 1;
        var count = 0;
        IEnumerable<FileInfo> files;
        try { files = new DirectoryInfo(start).EnumerateFiles("*", options); }
        catch (DirectoryNotFoundException) { yield break; }
        foreach (var file in files)
        {
            ct.ThrowIfCancellationRequested();
            var key = file.FullName[rootPrefixLength..];
            if (!key.StartsWith(prefix, StringComparison.Ordinal) || !ObjectKey.IsValid(key)) continue;
            ObjectInfo info;
            try { info = new ObjectInfo(key, file.Length, new DateTimeOffset(file.LastWriteTimeUtc, TimeSpan.Zero)); }
            catch (FileNotFoundException) { continue; } // deleted while listing
            yield return info;
            // The walk is synchronous file-system work; let other work run now and then.
            if (++count % 4096 == 0) await Task.Yield();
        }
    }

    public Task<ObjectInfo?> StatAsync(string key, CancellationToken ct = default)
    {
        ObjectKey.Validate(key);
        ct.ThrowIfCancellationRequested();
        var file = new FileInfo(PathOf(key));
        return Task.FromResult(file.Exists
            ? new ObjectInfo(key, file.Length, new DateTimeOffset(file.LastWriteTimeUtc, TimeSpan.Zero))
            : null);
    }

    private string PathOf(string key) => Path.Combine(RootPath, key);

    /// <summary>Writes and fsyncs a temporary file next to the target; returns its path. Leaves nothing behind on failure.</summary>
    private async Task<string> WriteTempAsync(string dir, string key, ReadOnlyMemory<byte> data, CancellationToken ct)
    {
        var tmp = Path.Combine(dir, ".tmp-" + Guid.NewGuid().ToString("N"));
        try
        {
            EnsureDirectory(dir);
            // Preallocating makes a full disk fail here, up front, rather than halfway through the write.
            using var handle = File.OpenHandle(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, FileOptions.None, data.Length);
            await RandomAccess.WriteAsync(handle, data, 0, ct);
            if (_stampClock is not null) File.SetLastWriteTimeUtc(handle, _stampClock.GetUtcNow().UtcDateTime);
            RandomAccess.FlushToDisk(handle);
            return tmp;
        }
        catch (Exception e)
        {
            Native.Unlink(tmp);
            if (e is IOException or UnauthorizedAccessException) throw Translate(e, key, "write");
            throw;
        }
    }

    /// <summary>Creates missing folders and fsyncs each parent so the new folder names are durable too.</summary>
    private void EnsureDirectory(string dir)
    {
        if (Directory.Exists(dir)) return;
        var missing = new Stack<string>();
        for (var d = dir; d is not null && !Directory.Exists(d); d = Path.GetDirectoryName(d)) missing.Push(d);
        Directory.CreateDirectory(dir);
        while (missing.TryPop(out var created))
            if (Path.GetDirectoryName(created) is { } parent) Native.SyncDirectory(parent);
    }

    private void SyncDirectory(string dir, string key)
    {
        var errno = Native.SyncDirectory(dir);
        if (errno != 0 && errno != Native.ENOENT)
            throw IsDiskFull(errno) ? new StoreFullException(key) : new StoreException($"cannot sync the folder of {key} in {RootPath}: {Native.Describe(errno)}");
    }

    private SafeFileHandle? OpenForRead(string key)
    {
        try { return File.OpenHandle(PathOf(key), FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete); }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException) { return null; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw Translate(e, key, "read"); }
    }

    private static async Task<int> ReadFullyAsync(SafeFileHandle handle, Memory<byte> into, string key, CancellationToken ct)
    {
        var total = 0;
        try
        {
            while (total < into.Length)
            {
                var n = await RandomAccess.ReadAsync(handle, into[total..], total, ct);
                if (n == 0) break;
                total += n;
            }
        }
        catch (IOException e) { throw new StoreException($"cannot read {key}: {e.Message}", e); }
        return total;
    }

    private Exception Translate(Exception e, string key, string verb)
        => IsDiskFull(e) ? new StoreFullException(key, e) : new StoreException($"cannot {verb} {key} in {RootPath}: {e.Message}", e);

    private static bool IsDiskFull(int errno) => errno is Native.ENOSPC or Native.EDQUOT;

    // .NET reports errno as the HResult of Unix I/O errors; preallocation failures say "disk full" in words.
    private static bool IsDiskFull(Exception e)
        => e is IOException io && (IsDiskFull(io.HResult) || (io.HResult & 0xFFFF) is 39 or 112
            || io.Message.Contains("No space left", StringComparison.OrdinalIgnoreCase)
            || io.Message.Contains("disk was full", StringComparison.OrdinalIgnoreCase)
            || io.Message.Contains("quota", StringComparison.OrdinalIgnoreCase));
}
