using Haven.Api;
using Haven.Qemu.Images;

namespace Haven.EndToEnd.Tests;

/// <summary>
/// The data folder is its owner's alone: after the operations that create every kind of file (a Standard checkpoint
/// with memory, a backup, restores, a replication cycle) no entry under either host's data folder has group or other
/// access, and a real other user on the machine can open none of them. A data folder left readable is closed at start.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class LocalAccessTests
{
    private const long M = HavenWorld.M;
    private const UnixFileMode GroupOrOther = UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.GroupExecute
        | UnixFileMode.OtherRead | UnixFileMode.OtherWrite | UnixFileMode.OtherExecute;

    [Fact(Timeout = 400_000)]
    public async Task After_checkpoint_backup_restore_and_replication_no_other_user_can_open_anything_in_the_data_folders()
    {
        await OtherUser.RequireAsync();
        var ct = TestContext.Current.CancellationToken;
        await using var primary = new HavenWorld(ct);
        await using var replica = new HavenWorld(ct);
        // The test folders are 0700 (mktemp): open them, so only the modes havend sets stand between the other user and the data.
        foreach (var dir in new[] { primary.Dir.Path, replica.Dir.Path }) File.SetUnixFileMode(dir, (UnixFileMode)0b111_101_101);
        var url = await ReplicationSetup.PairAsync(primary, replica);

        // Written while off, then started: havend is not restarted after the VM starts, so its start-up fix of the
        // data folder cannot hide a file that was made readable (checked by its log staying free of fixes).
        await primary.CreateVmAsync("vm");
        var now = primary.NewModel("now");
        await primary.WriteAsync("vm", now, new W(0x5a, 0, 2 * M));
        await primary.OkAsync("vm", "start", "vm");
        var c1 = await primary.CheckpointAsync("vm", "c1"); // no guest agent: Standard, with the memory saved
        Assert.True(c1.HasSavedState, "the checkpoint of the running VM has no saved memory");

        var pass = primary.Dir.File("pass");
        await File.WriteAllTextAsync(pass, "a passphrase\n", ct);
        string[] repo = ["--repo", primary.Dir.File("repo"), "--passphrase-file", pass];
        await primary.OkAsync(["repo", "init", .. repo]);
        var backup = await primary.JsonAsync<BackupResult>(["backup", "vm", .. repo]);
        await primary.JsonAsync<RestoreResult>(["restore", backup.BackupId, .. repo, "--name", "vm-copy"]);
        var restored = primary.Dir.File("restored.qcow2");
        await primary.OkAsync(["restore", backup.BackupId, .. repo, "--disk", "0", "--to", restored, "--format", "qcow2"]);
        var exported = primary.Dir.File("exported.qcow2");
        await primary.OkAsync("checkpoint", "export", "vm", "c1", exported);

        await primary.OkAsync("replication", "enable", "vm", "--replica", url, "--replica-name", "replica.test", "--frequency", "15m",
            "--start-at", DateTimeOffset.UtcNow.AddDays(1).ToString("O"));
        Assert.Equal(1L, (await primary.JsonAsync<ReplicationCycleResult>("replication", "run", "vm")).Cycle);

        var storage = replica.Dir.File("replicas"); // the replica server's storage location (made by the test; its VM folders by havend)
        var entries = Entries(primary.Data, includeRoot: true).Concat(Entries(replica.Data, includeRoot: true)).Concat(Entries(storage, includeRoot: false)).ToList();
        Assert.Contains(entries, e => e.Kind == 's' && e.Path.EndsWith(".qmp", StringComparison.Ordinal)); // the running VM's QMP socket
        Assert.Contains(entries, e => e.Kind == 's' && e.Path.EndsWith("havend.sock", StringComparison.Ordinal));
        Assert.Contains(entries, e => e.Path.EndsWith(".state", StringComparison.Ordinal));
        Assert.Contains(entries, e => e.Path.EndsWith(".log", StringComparison.Ordinal));
        Assert.Contains(entries, e => e.Path.EndsWith("token", StringComparison.Ordinal));

        foreach (var w in new[] { primary, replica }) Assert.DoesNotContain("fixed access", w.Daemon!.Stderr);
        var open = entries.Where(e => (File.GetUnixFileMode(e.Path) & GroupOrOther) != 0)
            .Select(e => $"{Convert.ToString((int)File.GetUnixFileMode(e.Path), 8)} {e.Path}").ToList();
        Assert.True(open.Count == 0, "entries with group/other access:\n" + string.Join('\n', open));
        var readable = await OtherUser.CanOpenAsync(entries);
        Assert.True(readable.Count == 0, $"{OtherUser.Name} could open:\n" + string.Join('\n', readable));

        // What havend writes where it is told is owner-only as well.
        foreach (var file in new[] { restored, exported })
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(file));
        Assert.Empty(await OtherUser.CanOpenAsync([('f', restored), ('f', exported)]));
    }

    [Fact]
    public async Task A_data_folder_and_token_others_can_read_are_closed_at_start_and_the_fix_is_logged()
    {
        await using var w = new HavenWorld(TestContext.Current.CancellationToken);
        var token = w.Paths.TokenFile;
        Directory.CreateDirectory(w.Data);
        File.SetUnixFileMode(w.Data, (UnixFileMode)0b111_101_101); // 0755
        await File.WriteAllTextAsync(token, new string('a', 64) + "\n", TestContext.Current.CancellationToken);
        File.SetUnixFileMode(token, (UnixFileMode)0b110_100_100); // 0644

        var d = await w.StartDaemonAsync();
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(w.Data));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(token));
        var lines = d.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Contains($"havend: fixed access: {w.Data} was readable by others (0755 -> 0700)", lines);
        Assert.Contains($"havend: fixed access: {token} was readable by others (0644 -> 0600)", lines);
        await w.OkAsync("vm", "list"); // the token kept its value: the CLI still gets in

        await w.StopDaemonAsync();
        var again = await w.StartDaemonAsync();
        Assert.DoesNotContain("fixed access", again.Stderr);
    }

    /// <summary>Every entry under <paramref name="root"/> (links not followed), with its kind: d folder, s socket, f anything else.</summary>
    private static IEnumerable<(char Kind, string Path)> Entries(string root, bool includeRoot)
    {
        if (includeRoot) yield return ('d', root);
        var options = new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = FileAttributes.ReparsePoint };
        foreach (var path in Directory.EnumerateFileSystemEntries(root, "*", options))
            yield return (Directory.Exists(path) ? 'd' : IsSocket(path) ? 's' : 'f', path);
    }

    private static bool IsSocket(string path)
    {
        try { using var _ = File.OpenHandle(path); return false; }
        catch (IOException) { return true; } // open(2) on a socket fails with ENXIO
        catch (UnauthorizedAccessException) { return false; }
    }
}

/// <summary>
/// A throwaway unprivileged system user (created with useradd when missing) to check what another local user can
/// open. Needs root; without it the test fails in CI (CI=true) and is skipped with the reason elsewhere.
/// </summary>
internal static class OtherUser
{
    public const string Name = "haven-test-nobody";
    private static readonly SemaphoreSlim Gate = new(1, 1);

    public static async Task RequireAsync()
    {
        var missing = !Environment.IsPrivilegedProcess ? "the test runs as root (it creates a user and runs commands as it)"
            : !File.Exists("/usr/sbin/runuser") && !File.Exists("/sbin/runuser") ? "runuser (util-linux)"
            : (await ProcessRunner.RunAsync("sh", ["-c", "command -v python3"], throwOnError: false)).ExitCode != 0 ? "python3" : null;
        if (missing is not null)
        {
            var reason = "needs " + missing;
            if (Environment.GetEnvironmentVariable("CI") == "true") Assert.Fail(reason);
            Assert.Skip(reason);
        }
        await Gate.WaitAsync();
        try
        {
            if ((await ProcessRunner.RunAsync("id", ["-u", Name], throwOnError: false)).ExitCode == 0) return;
            var add = await ProcessRunner.RunAsync("useradd", ["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", Name], throwOnError: false);
            // Another test process may have added it meanwhile.
            Assert.True((await ProcessRunner.RunAsync("id", ["-u", Name], throwOnError: false)).ExitCode == 0, $"useradd {Name} failed: {add.StandardError}");
        }
        finally { Gate.Release(); }
    }

    private const string Probe = """
        import socket, sys, os
        for line in sys.stdin.read().splitlines():
            kind, path = line[0], line[2:]
            try:
                if kind == 'd':
                    os.listdir(path)
                elif kind == 's':
                    s = socket.socket(socket.AF_UNIX)
                    s.settimeout(2)
                    s.connect(path)
                    s.close()
                else:
                    with open(path, 'rb') as f:
                        f.read(1)
                print(kind, path)
            except OSError:
                pass
        """;

    /// <summary>The entries the other user could list (folders), connect to (sockets) or read (files).</summary>
    public static async Task<List<string>> CanOpenAsync(IEnumerable<(char Kind, string Path)> entries)
    {
        var psi = new System.Diagnostics.ProcessStartInfo("runuser")
        {
            RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false, WorkingDirectory = "/",
        };
        foreach (var a in new[] { "-u", Name, "--", "python3", "-c", Probe }) psi.ArgumentList.Add(a);
        using var p = System.Diagnostics.Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        foreach (var (kind, path) in entries) await p.StandardInput.WriteLineAsync($"{kind} {path}");
        p.StandardInput.Close();
        await p.WaitForExitAsync();
        Assert.True(p.ExitCode == 0, $"the probe as {Name} failed: {await stderr}");
        return [.. (await stdout).Split('\n', StringSplitOptions.RemoveEmptyEntries)];
    }
}
