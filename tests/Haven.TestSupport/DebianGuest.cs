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

    /// <summary>The root file system's superblock fields a crash-consistency check needs (ext4 on partition 2).</summary>
    public sealed record RootSuperblock(uint IncompatFeatures, ushort State)
    {
        /// <summary>EXT4_FEATURE_INCOMPAT_RECOVER: the journal must be replayed at the next mount. Set while ext4 is
        /// mounted read-write; cleared by a freeze (journal flushed) or an unmount.</summary>
        public bool NeedsRecovery => (IncompatFeatures & 0x4) != 0;
    }

    /// <summary>
    /// Reads the ext4 superblock of the root partition (GPT entry 2) of a Debian guest image from the host,
    /// through <c>qemu-img dd</c> (which follows backing files): for a copy, before it boots.
    /// </summary>
    public static async Task<RootSuperblock> ReadRootSuperblockAsync(string image)
    {
        var gpt = await ReadSectorsAsync(image, 0, 34); // protective MBR, GPT header (LBA 1), 128 entries (LBA 2-33)
        if (System.Text.Encoding.ASCII.GetString(gpt, 512, 8) != "EFI PART") throw new InvalidDataException($"{image}: no GPT header");
        var entriesLba = BitConverter.ToInt64(gpt, 512 + 72);
        var entrySize = (int)BitConverter.ToUInt32(gpt, 512 + 84);
        var entry = entriesLba * 512 + entrySize; // the second entry: the root
        if (entry + entrySize > gpt.Length) throw new InvalidDataException($"{image}: GPT entries beyond the first 34 sectors");
        var firstLba = BitConverter.ToInt64(gpt, (int)entry + 32);
        var sb = await ReadSectorsAsync(image, firstLba + 2, 2); // the superblock is at byte 1024 of the partition
        if (BitConverter.ToUInt16(sb, 0x38) != 0xEF53) throw new InvalidDataException($"{image}: no ext4 superblock at LBA {firstLba + 2}");
        return new RootSuperblock(BitConverter.ToUInt32(sb, 0x60), BitConverter.ToUInt16(sb, 0x3A));
    }

    private static async Task<byte[]> ReadSectorsAsync(string image, long first, int count)
    {
        var output = Path.Combine(Path.GetTempPath(), $"haven-sectors-{Guid.NewGuid():N}.raw");
        try
        {
            // QEMU 7.2's dd ends the input at count blocks from the image's start, not from skip: ask for skip + count.
            await ProcessRunner.RunAsync("qemu-img", ["dd", "-f", "qcow2", "-O", "raw", "bs=512", $"skip={first}", $"count={first + count}", "if=" + image, "of=" + output]);
            var bytes = new byte[count * 512];
            await using var f = File.OpenRead(output);
            await f.ReadExactlyAsync(bytes);
            return bytes;
        }
        finally { File.Delete(output); }
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
