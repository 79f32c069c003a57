using System.Diagnostics;

namespace Haven.TestSupport;

/// <summary>
/// A tiny tmpfs mounted for one test, to make a real ENOSPC. Needs root; <see cref="TryMount"/> returns
/// null with the reason when mounting is not possible, so the test can say why it did not run.
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
        return null;
    }

    /// <summary>Gives the file system more room (a full disk being fixed).</summary>
    public void Resize(string sizeOption) => Run("mount", $"-o remount,size={sizeOption} {Path}");

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
