using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace Haven.Bench;

public sealed record ExecResult(int ExitCode, string Stdout, string Stderr);

/// <summary>What <c>/usr/bin/time -v</c> reported for one command.</summary>
public sealed record TimedResult(double WallSeconds, double UserSeconds, double SystemSeconds, double PeakRssMiB, string Output)
{
    public double CpuSeconds => UserSeconds + SystemSeconds;
}

public static class Exec
{
    /// <summary>Runs a tool to completion (output captured); a non-zero exit throws with its output.</summary>
    public static async Task<ExecResult> RunAsync(string file, IEnumerable<string> args, IDictionary<string, string>? env = null,
        string? workingDirectory = null, bool check = true)
    {
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? "",
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        if (env is not null) foreach (var (k, v) in env) psi.Environment[k] = v;
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {file}");
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        await p.WaitForExitAsync();
        var r = new ExecResult(p.ExitCode, await stdout, await stderr);
        if (check && r.ExitCode != 0)
            throw new InvalidOperationException($"{file} {string.Join(' ', psi.ArgumentList)} exited with {r.ExitCode}:\n{Tail(r.Stderr + r.Stdout)}");
        return r;
    }

    /// <summary>Runs a command under <c>/usr/bin/time -v</c> and parses wall, user, system time and max RSS.</summary>
    public static async Task<TimedResult> TimedAsync(string file, IEnumerable<string> args, IDictionary<string, string>? env = null, string? workingDirectory = null)
    {
        var report = Path.GetTempFileName();
        try
        {
            var r = await RunAsync("/usr/bin/time", ["-v", "-o", report, file, .. args], env, workingDirectory, check: false);
            var text = File.ReadAllText(report);
            if (r.ExitCode != 0)
                throw new InvalidOperationException($"{file} {string.Join(' ', args)} exited with {r.ExitCode}:\n{Tail(r.Stderr + r.Stdout)}\n{Tail(text)}");
            return new TimedResult(ParseClock(Field(text, "Elapsed (wall clock) time (h:mm:ss or m:ss)")),
                double.Parse(Field(text, "User time (seconds)"), CultureInfo.InvariantCulture),
                double.Parse(Field(text, "System time (seconds)"), CultureInfo.InvariantCulture),
                long.Parse(Field(text, "Maximum resident set size (kbytes)"), CultureInfo.InvariantCulture) / 1024.0,
                r.Stdout + r.Stderr);
        }
        finally { File.Delete(report); }
    }

    private static string Field(string text, string name)
    {
        foreach (var line in text.Split('\n'))
        {
            var t = line.Trim();
            if (t.StartsWith(name + ":", StringComparison.Ordinal)) return t[(name.Length + 1)..].Trim();
        }
        throw new FormatException($"/usr/bin/time -v printed no '{name}':\n{text}");
    }

    /// <summary>"1:02:03.45", "2:03.45" or "3.45" → seconds.</summary>
    private static double ParseClock(string s)
    {
        double total = 0;
        foreach (var part in s.Split(':')) total = total * 60 + double.Parse(part, CultureInfo.InvariantCulture);
        return total;
    }

    /// <summary>Apparent size of a folder in bytes (<c>du -sb</c>).</summary>
    public static async Task<long> DiskUsageAsync(string path)
    {
        var r = await RunAsync("du", ["-sb", path]);
        return long.Parse(r.Stdout.Split('\t', ' ')[0], CultureInfo.InvariantCulture);
    }

    /// <summary>Drops the page cache (needs root); false when that is not possible here.</summary>
    public static async Task<bool> DropCachesAsync()
    {
        await RunAsync("sync", []);
        try
        {
            await File.WriteAllTextAsync("/proc/sys/vm/drop_caches", "3");
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return false; }
    }

    public static string Tail(string text, int lines = 15)
    {
        var all = text.TrimEnd().Split('\n');
        var sb = new StringBuilder();
        foreach (var l in all.Skip(Math.Max(0, all.Length - lines))) sb.AppendLine(l);
        return sb.ToString();
    }
}
