using System.Diagnostics;

namespace Haven.TestSupport;

/// <summary>
/// A tiny tmpfs mounted for one test, to make a real ENOSPC. Needs root. CI runs as root, so there (root, or
/// CI set) a tmpfs that does not mount is a failure of the test, never a skip; elsewhere <see cref="TryMount"/>
/// returns null with the reason, for the test to skip with it.
/// </summary>
public sealed class SmallTmpfs : IDisposable
{
    private SmallTmpfs(string path) { Path = path; }

    public string Path { get; }

    public static SmallTmpfs? TryMount(string sizeOption, out string reason)
    {
        var path = Directory.CreateTempSubdirectory("hvfull").FullName;
        var (code, output) = Run("mount", $"-t tmpfs -o size={sizeOption} tmpfs {path}");
        if (code == 0) { reason = ""; return new SmallTmpfs(path); }
        Directory.Delete(path);
        reason = $"cannot mount a tmpfs (exit {code}): {output.Trim()}";
        if (MustMount) throw new InvalidOperationException(reason + " (running as root or under CI, where this test must run)");
        return null;
    }

    /// <summary>Root can mount, and CI runs as root: a skip there would hide an untested guard.</summary>
    public static bool MustMount => Environment.IsPrivilegedProcess || Environment.GetEnvironmentVariable("CI") is { Length: > 0 } ci && ci != "false";

    /// <summary>Gives the file system more room (a full disk being fixed).</summary>
    public void Resize(string sizeOption)
    {
        var (code, output) = Run("mount", $"-o remount,size={sizeOption} {Path}");
        if (code != 0) throw new InvalidOperationException($"cannot resize the tmpfs at {Path} (exit {code}): {output.Trim()}");
    }

    public void Dispose()
    {
        Run("umount", "-l " + Path);
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }

    private static (int Code, string Output) Run(string file, string args)
    {
        try
        {
            using var p = Process.Start(new ProcessStartInfo(file, args) { RedirectStandardError = true, RedirectStandardOutput = true })!;
            var output = p.StandardError.ReadToEnd() + p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            return (p.ExitCode, output);
        }
        catch (System.ComponentModel.Win32Exception e) { return (-1, e.Message); }
    }
}
