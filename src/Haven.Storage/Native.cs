using System.Runtime.InteropServices;

namespace Haven.Storage;

/// <summary>
/// The few POSIX calls .NET does not expose with usable semantics: link(2) for create-only publication
/// (fails with EEXIST instead of overwriting), unlink(2) to learn whether a delete removed something, and
/// fsync(2) on a directory so a new or removed name survives a crash.
/// </summary>
internal static partial class Native
{
    public const int EPERM = 1, ENOENT = 2, EEXIST = 17, EXDEV = 18, ENOTDIR = 20, EINVAL = 22, ENOSPC = 28,
        EMLINK = 31, ENOSYS = 38, EOPNOTSUPP = 95, EDQUOT = 122;

    private const int O_RDONLY = 0, O_CLOEXEC = 0x80000;

    [LibraryImport("libc", EntryPoint = "link", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int LinkNative(string oldPath, string newPath);

    [LibraryImport("libc", EntryPoint = "unlink", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int UnlinkNative(string path);

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int OpenNative(string path, int flags);

    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static partial int FsyncNative(int fd);

    [LibraryImport("libc", EntryPoint = "sync_file_range", SetLastError = true)]
    private static partial int SyncFileRangeNative(nint fd, long offset, long nbytes, uint flags);

    private const uint SYNC_FILE_RANGE_WRITE = 2;

    /// <summary>Starts writeback of a file's dirty pages without waiting (a hint: errors are ignored; fsync later is what counts).</summary>
    public static void StartWriteback(SafeHandle file, long offset = 0, long length = 0)
    {
        var added = false;
        file.DangerousAddRef(ref added);
        try { SyncFileRangeNative(file.DangerousGetHandle(), offset, length, SYNC_FILE_RANGE_WRITE); }
        finally { if (added) file.DangerousRelease(); }
    }

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    private static partial int CloseNative(int fd);

    /// <summary>0 on success, otherwise errno.</summary>
    public static int Link(string oldPath, string newPath) => LinkNative(oldPath, newPath) == 0 ? 0 : Marshal.GetLastPInvokeError();

    /// <summary>0 on success, otherwise errno.</summary>
    public static int Unlink(string path) => UnlinkNative(path) == 0 ? 0 : Marshal.GetLastPInvokeError();

    /// <summary>fsync of a directory; 0 on success (or where the file system cannot sync directories), otherwise errno.</summary>
    public static int SyncDirectory(string path) => SyncPath(path);

    /// <summary>fsync of a file or directory by path (opened read-only; Linux syncs the inode whatever the open mode); 0 or errno.</summary>
    public static int SyncPath(string path)
    {
        var fd = OpenNative(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) return Marshal.GetLastPInvokeError();
        try
        {
            if (FsyncNative(fd) == 0) return 0;
            var errno = Marshal.GetLastPInvokeError();
            return errno == EINVAL ? 0 : errno;
        }
        finally { CloseNative(fd); }
    }

    public static string Describe(int errno) => Marshal.GetPInvokeErrorMessage(errno);
}
