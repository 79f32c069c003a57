using System.Runtime.InteropServices;

namespace Haven.Qemu;

/// <summary>
/// Everything under a data folder is for its owner only (docs/architecture.md, "Where state lives"): disk
/// layers, saved memory, serial logs, the database, sockets and the API token. havend sets umask 077 so what it
/// and its children create starts owner-only; QEMU resets its umask to 027 when it daemonizes, so files QEMU
/// creates itself are restricted again after the fact (they sit in a 0700 folder until then).
/// </summary>
public static class OwnerOnly
{
    public const UnixFileMode FileMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
    public const UnixFileMode FolderMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;
    private const UnixFileMode Others = UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.GroupExecute
        | UnixFileMode.OtherRead | UnixFileMode.OtherWrite | UnixFileMode.OtherExecute;

    [DllImport("libc", EntryPoint = "umask")]
    private static extern uint NativeUmask(uint mask);

    /// <summary>Sets the process umask to 077 (inherited by every tool and QEMU this process starts).</summary>
    public static void SetUmask() => NativeUmask(0b111_111); // 077

    /// <summary>
    /// Removes group and other access from <paramref name="path"/> (not following a link; a missing path is
    /// ignored). Returns a description of the change ("0755 → 0700"), or null when nothing had to change.
    /// </summary>
    public static string? Restrict(string path)
    {
        if (OperatingSystem.IsWindows()) return null; // Haven runs on Linux; this keeps the platform analyzer content
        FileSystemInfo info = Directory.Exists(path) ? new DirectoryInfo(path) : new FileInfo(path);
        if (!info.Exists || info.LinkTarget is not null) return null;
        var mode = info.UnixFileMode;
        if ((mode & Others) == 0) return null;
        var owner = mode & ~Others;
        info.UnixFileMode = owner;
        return $"{Octal(mode)} -> {Octal(owner)}";
    }

    /// <summary>
    /// <see cref="Restrict"/> for <paramref name="root"/> and everything under it (links are not followed).
    /// Returns one line per path that had to change.
    /// </summary>
    public static List<string> RestrictTree(string root)
    {
        var fixes = new List<string>();
        if (!Directory.Exists(root)) return fixes;
        Note(root);
        var options = new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = FileAttributes.ReparsePoint, IgnoreInaccessible = true };
        foreach (var path in Directory.EnumerateFileSystemEntries(root, "*", options)) Note(path);
        return fixes;

        void Note(string path)
        {
            if (Restrict(path) is { } change) fixes.Add($"{path} was readable by others ({change})");
        }
    }

    /// <summary>Creates a folder (and missing parents) owner-only from the moment it exists, whatever the umask.</summary>
    public static void CreateFolder(string path)
    {
        if (OperatingSystem.IsWindows()) Directory.CreateDirectory(path);
        else Directory.CreateDirectory(path, FolderMode);
    }

    /// <summary>Creates a new empty file (failing if it exists) that is owner-only from the moment it exists.</summary>
    public static FileStream CreateFile(string path)
    {
        var options = new FileStreamOptions { Mode = System.IO.FileMode.CreateNew, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows()) options.UnixCreateMode = FileMode;
        return new FileStream(path, options);
    }

    private static string Octal(UnixFileMode mode) => Convert.ToString((int)mode, 8).PadLeft(4, '0');
}
