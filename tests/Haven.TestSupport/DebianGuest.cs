using System.Diagnostics;
using Haven.Qemu.GuestAgent;
using Haven.Qemu.Images;

namespace Haven.TestSupport;

/// <summary>
/// The Debian 12 guest built by scripts/build-debian-guest.sh: a GPT disk (ESP + ext4 root) with systemd,
/// qemu-ga (fsfreeze hooks on, a PostgreSQL CHECKPOINT hook), PostgreSQL 15 and the haven-commit-loop
/// workload, plus its kernel and initrd for direct kernel boot. See docs/test-guest.md, "Debian guest".
/// Tests boot a copy (<see cref="CopyDiskAsync"/>) or an overlay (<see cref="CreateOverlayAsync"/>), never the cache.
/// </summary>
public static class DebianGuest
{
    public static string CacheDir => Environment.GetEnvironmentVariable("HAVEN_DEBIAN_CACHE")
        ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "haven", "debian-guest");

    public static string Disk => Path.Combine(CacheDir, "disk.qcow2");
    public static string Kernel => Path.Combine(CacheDir, "vmlinuz");
    public static string Initrd => Path.Combine(CacheDir, "initrd.img");
    /// <summary>Kernel command line for direct boot: root=UUID=... console=ttyS0 net.ifnames=0 quiet.</summary>
    public static string Append => File.ReadAllText(Path.Combine(CacheDir, "append.txt")).Trim();

    /// <summary>The test database: user and password "haven", database "haven" (amcheck, table commits).</summary>
    public const string PsqlAsTestUser = "PGPASSWORD=haven psql -X -h 127.0.0.1 -U haven -d haven -At";

    public const string OvmfCode = "/usr/share/OVMF/OVMF_CODE_4M.fd";
    public const string OvmfVarsTemplate = "/usr/share/OVMF/OVMF_VARS_4M.fd";

    /// <summary>Builds the guest unless the cache matches the recipe (about 2 minutes the first time, ~20 ms after).</summary>
    public static async Task EnsureBuiltAsync()
    {
        await ProcessRunner.RunAsync("bash", [Path.Combine(TestGuest.RepoRoot, "scripts", "build-debian-guest.sh"), CacheDir]);
    }

    /// <summary>A standalone copy of the disk (no backing file), e.g. for <c>haven vm create --disk</c>.</summary>
    public static async Task CopyDiskAsync(string destination)
    {
        await ProcessRunner.RunAsync("cp", ["--sparse=always", Disk, destination]);
    }

    /// <summary>A qcow2 overlay on the cached disk: instant, for QEMU run by the test itself.</summary>
    public static async Task CreateOverlayAsync(string destination)
    {
        await ProcessRunner.RunAsync("qemu-img", ["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", Disk, destination]);
    }

    /// <summary>
    /// Connects to the agent socket until guest-ping answers (the guest is up), then lets go of the socket
    /// (QEMU serves one client at a time: havend needs it for checkpoints). Returns how long it waited.
    /// </summary>
    public static async Task<TimeSpan> WaitForAgentAsync(string socket, TimeSpan timeout, CancellationToken ct)
    {
        var clock = Stopwatch.StartNew();
        Exception? last = null;
        while (clock.Elapsed < timeout)
        {
            try
            {
                if (File.Exists(socket))
                {
                    await using var agent = await GuestAgentClient.ConnectAsync(socket, TimeSpan.FromSeconds(3), ct);
                    await agent.PingAsync(ct);
                    return clock.Elapsed;
                }
            }
            catch (Exception e) when (e is GuestAgentUnavailableException or GuestAgentException) { last = e; }
            await Task.Delay(500, ct);
        }
        throw new TimeoutException($"qemu-ga on {socket} did not answer guest-ping within {timeout.TotalSeconds:0} s ({last?.Message})");
    }

    /// <summary>Runs <c>/bin/sh -c COMMAND</c> in the guest through guest-exec, connecting to the agent socket only for this.</summary>
    public static async Task<GuestExecStatus> ShAsync(string socket, string command, CancellationToken ct, TimeSpan? timeout = null)
    {
        await using var agent = await GuestAgentClient.ConnectAsync(socket, TimeSpan.FromSeconds(10), ct);
        return await agent.RunAsync("/bin/sh", ["-c", command], timeout ?? TimeSpan.FromSeconds(60), ct);
    }

    /// <summary>As <see cref="ShAsync"/>, for a command that must exit 0; returns its stdout.</summary>
    public static async Task<string> ShOkAsync(string socket, string command, CancellationToken ct, TimeSpan? timeout = null)
    {
        var r = await ShAsync(socket, command, ct, timeout);
        if (r.ExitCode != 0)
            throw new InvalidOperationException($"guest command failed (exit {r.ExitCode}, signal {r.Signal}): {command}\n--- stdout ---\n{r.StdoutText}\n--- stderr ---\n{r.StderrText}");
        return r.StdoutText;
    }

    /// <summary>Polls until PostgreSQL accepts TCP connections in the guest (pg_isready). Returns how long it waited.</summary>
    public static async Task<TimeSpan> WaitForPostgresAsync(string socket, TimeSpan timeout, CancellationToken ct)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            var r = await ShAsync(socket, "pg_isready -q -h 127.0.0.1", ct);
            if (r.ExitCode == 0) return clock.Elapsed;
            if (clock.Elapsed > timeout) throw new TimeoutException($"PostgreSQL in the guest not ready within {timeout.TotalSeconds:0} s (pg_isready exit {r.ExitCode})");
            await Task.Delay(500, ct);
        }
    }
}
