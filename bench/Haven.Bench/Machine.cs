namespace Haven.Bench;

/// <summary>What the numbers were measured on.</summary>
public sealed record Machine(int Cores, string Cpu, long MemoryMiB, string Kernel, string Os, string Disk, string LoadAverage,
    string Qemu, string Restic, string Borg, string DotNet, string HavenCommit)
{
    public static async Task<Machine> DescribeAsync(string dir, string repoRoot)
    {
        var cpu = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? "?";
        var memKiB = long.Parse(File.ReadLines("/proc/meminfo").First(l => l.StartsWith("MemTotal:", StringComparison.Ordinal)).Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]);
        var os = File.Exists("/etc/os-release")
            ? File.ReadLines("/etc/os-release").FirstOrDefault(l => l.StartsWith("PRETTY_NAME=", StringComparison.Ordinal))?.Split('=', 2)[1].Trim('"') ?? "?"
            : "?";
        return new Machine(Environment.ProcessorCount, cpu, memKiB / 1024, File.ReadAllText("/proc/sys/kernel/osrelease").Trim(), os,
            await DiskAsync(dir), ReadLoadAverage(), await FirstLineAsync("qemu-system-x86_64", "--version"), await FirstLineAsync("restic", "version"),
            await FirstLineAsync("borg", "--version"), ".NET " + Environment.Version, await CommitAsync(repoRoot));
    }

    public static string ReadLoadAverage() => string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3));

    private static async Task<string> DiskAsync(string dir)
    {
        try
        {
            var mount = (await Exec.RunAsync("findmnt", ["-no", "SOURCE,FSTYPE", "-T", dir])).Stdout.Trim();
            var source = mount.Split(' ', StringSplitOptions.RemoveEmptyEntries)[0];
            var dev = (await Exec.RunAsync("lsblk", ["-dno", "SIZE,ROTA,MODEL", source], check: false)).Stdout.Trim();
            var parts = dev.Split(' ', 3, StringSplitOptions.RemoveEmptyEntries);
            var kind = parts.Length >= 2 ? (parts[1] == "1" ? "reported rotational" : "non-rotational") : "";
            return $"{mount} ({string.Join(", ", new[] { parts.ElementAtOrDefault(0), kind, parts.ElementAtOrDefault(2) }.Where(s => !string.IsNullOrWhiteSpace(s)))})";
        }
        catch (Exception e) when (e is InvalidOperationException or System.ComponentModel.Win32Exception) { return "?"; }
    }

    private static async Task<string> FirstLineAsync(string tool, params string[] args)
    {
        try { return (await Exec.RunAsync(tool, args)).Stdout.Split('\n')[0].Trim(); }
        catch (Exception e) when (e is InvalidOperationException or System.ComponentModel.Win32Exception) { return "not installed"; }
    }

    private static async Task<string> CommitAsync(string root)
    {
        try
        {
            var head = (await Exec.RunAsync("git", ["-C", root, "rev-parse", "--short", "HEAD"])).Stdout.Trim();
            // Which folders have uncommitted changes (e.g. "bench" only: Haven itself is the commit).
            var changed = (await Exec.RunAsync("git", ["-C", root, "status", "--porcelain", "--untracked-files=no"])).Stdout
                .Split('\n', StringSplitOptions.RemoveEmptyEntries)
                .Select(l => l[3..].Split(" -> ")[^1].Split('/')[0].Trim('"')).Distinct().Order().ToList();
            return head + (changed.Count > 0 ? $" + uncommitted changes in {string.Join(", ", changed)}" : "");
        }
        catch (Exception e) when (e is InvalidOperationException or System.ComponentModel.Win32Exception) { return "?"; }
    }
}
