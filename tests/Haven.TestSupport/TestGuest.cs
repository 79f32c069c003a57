using Haven.Qemu.Images;

namespace Haven.TestSupport;

/// <summary>The tiny Linux test guest built by scripts/build-test-guest.sh (kernel, initrd with qemu-ga, ext4 data disk).</summary>
public static class TestGuest
{
    public static string CacheDir => Environment.GetEnvironmentVariable("HAVEN_GUEST_CACHE")
        ?? System.IO.Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "haven", "test-guest");

    // The uncompressed kernel boots in about half the time under TCG (no self-decompression).
    public static string Kernel => System.IO.Path.Combine(CacheDir, "vmlinux");
    public static string Initrd => System.IO.Path.Combine(CacheDir, "initrd.gz");
    public static string DataDisk => System.IO.Path.Combine(CacheDir, "data.qcow2");
    public static string Append => File.ReadAllText(System.IO.Path.Combine(CacheDir, "append.txt")).Trim();

    /// <summary>Builds the guest unless the cache matches the recipe (the script answers in ~20 ms then).</summary>
    public static async Task EnsureBuiltAsync()
    {
        await ProcessRunner.RunAsync("bash", [System.IO.Path.Combine(RepoRoot, "scripts", "build-test-guest.sh"), CacheDir]);
    }

    public static string RepoRoot
    {
        get
        {
            var dir = AppContext.BaseDirectory;
            while (dir is not null && !File.Exists(System.IO.Path.Combine(dir, "Haven.slnx"))) dir = System.IO.Path.GetDirectoryName(dir);
            return dir ?? throw new InvalidOperationException("cannot find the repository root above " + AppContext.BaseDirectory);
        }
    }
}
