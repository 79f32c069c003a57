using System.Diagnostics;

namespace Haven.Bench.Storage;

/// <summary>What the numbers were measured on.</summary>
public sealed record Machine(int Cores, string Cpu, long MemoryMiB, string Kernel, string Os, string Disk, string Qemu, string Ceph, string DotNet, string HavenCommit)
{
    public static async Task<Machine> DescribeAsync(string dir, string repoRoot)
    {
        var cpu = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? "?";
        var memKiB = long.Parse(File.ReadLines("/proc/meminfo").First(l => l.StartsWith("MemTotal:", StringComparison.Ordinal)).Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]);
        var os = File.Exists("/etc/os-release")
            ? File.ReadLines("/etc/os-release").FirstOrDefault(l => l.StartsWith("PRETTY_NAME=", StringComparison.Ordinal))?.Split('=', 2)[1].Trim('"') ?? "?"
            : "?";
        var mount = (await RunAsync("findmnt", "-no", "SOURCE,FSTYPE", "-T", dir)).Trim();
        return new Machine(Environment.ProcessorCount, cpu, memKiB / 1024, File.ReadAllText("/proc/sys/kernel/osrelease").Trim(), os,
            mount.Length == 0 ? "?" : mount, (await RunAsync("qemu-nbd", "--version")).Split('\n')[0].Trim(), await Storage.Ceph.VersionAsync(),
            ".NET " + Environment.Version, await CommitAsync(repoRoot));
    }

    public static string LoadAverage() => string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3));

    private static async Task<string> CommitAsync(string root)
    {
        var head = (await RunAsync("git", "-C", root, "rev-parse", "--short", "HEAD")).Trim();
        if (head.Length == 0) return "?";
        // Which folders have uncommitted changes (e.g. "bench" only: Haven itself is the commit).
        var changed = (await RunAsync("git", "-C", root, "status", "--porcelain", "--untracked-files=no"))
            .Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => l[3..].Split(" -> ")[^1].Trim('"')).Select(p => p.StartsWith("src/", StringComparison.Ordinal) ? string.Join('/', p.Split('/').Take(2)) : p.Split('/')[0])
            .Distinct().Order().ToList();
        return head + (changed.Count > 0 ? $" + uncommitted changes in {string.Join(", ", changed)}" : "");
    }

    /// <summary>Stdout of a tool, or "" when it cannot run or fails.</summary>
    private static async Task<string> RunAsync(string file, params string[] args)
    {
        try
        {
            var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (var a in args) psi.ArgumentList.Add(a);
            using var p = Process.Start(psi)!;
            var stdout = p.StandardOutput.ReadToEndAsync();
            _ = p.StandardError.ReadToEndAsync();
            await p.WaitForExitAsync();
            return p.ExitCode == 0 ? await stdout : "";
        }
        catch (System.ComponentModel.Win32Exception) { return ""; }
    }
}
