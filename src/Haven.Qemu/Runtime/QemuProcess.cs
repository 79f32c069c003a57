using Haven.Qemu.Images;
using Haven.Qemu.Qmp;

namespace Haven.Qemu.Runtime;

/// <summary>
/// A running qemu-system process and its QMP connection. QEMU daemonizes, so VMs outlive the
/// daemon that started them; a restarted daemon finds them again through the pid file.
/// </summary>
public sealed class QemuProcess : IAsyncDisposable
{
    private QemuProcess(int pid, string pidFile, QmpClient qmp)
    {
        Pid = pid;
        PidFile = pidFile;
        Qmp = qmp;
    }

    public int Pid { get; }
    public string PidFile { get; }
    public QmpClient Qmp { get; }

    public bool IsAlive => IsProcessAlive(Pid, PidFile);

    /// <summary>Set once we asked QEMU to end (power-off or quit): its QMP connection closing is then expected.</summary>
    public bool Ending { get; private set; }

    /// <summary>Starts QEMU and connects to its QMP socket. QEMU's own error line becomes the exception message.</summary>
    public static async Task<QemuProcess> LaunchAsync(VmLaunchSpec spec, CancellationToken ct = default)
    {
        File.Delete(spec.QmpSocket);
        File.Delete(spec.PidFile);
        foreach (var f in new[] { spec.GuestAgentSocket, spec.ConsoleSocket, spec.VncSocket })
            if (f is not null) File.Delete(f);
        File.Delete(spec.SerialLog); // one log per run of the VM
        // QEMU daemonizes with umask 027 and keeps the mode of a file that exists: the log starts owner-only.
        OwnerOnly.CreateFile(spec.SerialLog).Dispose();
        // With -daemonize the launcher exits once QEMU is initialised, so its exit code reports start-up errors.
        await ProcessRunner.RunAsync(QemuCommandLine.Binary, QemuCommandLine.Build(spec), ct);
        // Its sockets and pid file were made under umask 027 (inside the 0700 run folder): owner-only before use.
        foreach (var f in new[] { spec.QmpSocket, spec.GuestAgentSocket, spec.PidFile, spec.SerialLog, spec.ConsoleSocket, spec.VncSocket })
            if (f is not null) OwnerOnly.Restrict(f);
        var pid = ReadPid(spec.PidFile) ?? throw new ToolFailedException(QemuCommandLine.Binary, 0, "QEMU started but wrote no pid file");
        try
        {
            var qmp = await QmpClient.ConnectAsync(spec.QmpSocket, TimeSpan.FromSeconds(10), ct);
            return new QemuProcess(pid, spec.PidFile, qmp);
        }
        catch
        {
            Kill(pid, spec.PidFile);
            throw;
        }
    }

    /// <summary>Re-attaches to a QEMU started earlier (by this or a previous daemon); null when it is gone.</summary>
    public static Task<QemuProcess?> TryAttachAsync(string pidFile, string qmpSocket, CancellationToken ct = default)
        => TryAttachAsync(pidFile, qmpSocket, TimeSpan.FromSeconds(5), ct);

    /// <summary>
    /// As above, waiting at most <paramref name="timeout"/> for the QMP greeting. A QEMU that is alive but does
    /// not greet (stopped, hung, or another client holds its one QMP connection) throws <see cref="QmpConnectionException"/>.
    /// </summary>
    public static async Task<QemuProcess?> TryAttachAsync(string pidFile, string qmpSocket, TimeSpan timeout, CancellationToken ct)
    {
        if (ReadPid(pidFile) is not { } pid || !IsProcessAlive(pid, pidFile)) return null;
        try
        {
            var qmp = await QmpClient.ConnectAsync(qmpSocket, timeout, ct);
            return new QemuProcess(pid, pidFile, qmp);
        }
        catch (QmpConnectionException) when (!IsProcessAlive(pid, pidFile))
        {
            return null;
        }
    }

    /// <summary>"running", "paused", "prelaunch", "inmigrate", "postmigrate", "shutdown", ...</summary>
    public async Task<string> QueryStatusAsync(CancellationToken ct = default)
        => (await Qmp.ExecuteAsync("query-status", null, ct)).GetProperty("status").GetString() ?? "unknown";

    /// <summary>
    /// Writes the display's current picture as a PNG to <paramref name="path"/> (QMP screendump; QEMU 7.1+ encodes
    /// PNG itself). QEMU creates the file under its umask 027: give it a path in an owner-only folder.
    /// </summary>
    public Task ScreendumpAsync(string path, CancellationToken ct = default)
        => Qmp.ExecuteAsync("screendump", new System.Text.Json.Nodes.JsonObject { ["filename"] = path, ["format"] = "png" }, ct);

    /// <summary>Asks the guest to power off (ACPI); after <paramref name="timeout"/> forces QEMU to quit.</summary>
    public async Task<bool> ShutdownAsync(TimeSpan timeout, CancellationToken ct = default)
    {
        Ending = true;
        try { await Qmp.ExecuteAsync("system_powerdown", null, ct); }
        catch (QmpConnectionException) { }
        if (await WaitForExitAsync(timeout, ct)) return true;
        await QuitAsync(ct);
        return false;
    }

    /// <summary>Ends QEMU at once: QMP quit, then SIGKILL if it lingers.</summary>
    public async Task QuitAsync(CancellationToken ct = default)
    {
        Ending = true;
        try { await Qmp.ExecuteAsync("quit", null, ct); }
        catch (Exception e) when (e is QmpConnectionException or QmpException) { }
        if (!await WaitForExitAsync(TimeSpan.FromSeconds(5), ct)) Kill(Pid, PidFile);
        await WaitForExitAsync(TimeSpan.FromSeconds(5), ct);
        File.Delete(PidFile);
    }

    public async Task<bool> WaitForExitAsync(TimeSpan timeout, CancellationToken ct = default)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (IsAlive)
        {
            if (DateTime.UtcNow >= deadline) return false;
            await Task.Delay(50, ct);
        }
        return true;
    }

    public static int? ReadPid(string pidFile)
    {
        try { return int.TryParse(File.ReadAllText(pidFile).Trim(), out var pid) ? pid : null; }
        catch (IOException) { return null; }
    }

    /// <summary>Alive and really our QEMU: the pid may have been reused since the pid file was written.</summary>
    public static bool IsProcessAlive(int pid, string pidFile)
    {
        try
        {
            var cmdline = File.ReadAllText($"/proc/{pid}/cmdline");
            if (!cmdline.Contains(pidFile, StringComparison.Ordinal)) return false;
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            var state = stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[0];
            return state != "Z" && state != "X";
        }
        catch (IOException) { return false; }
        catch (UnauthorizedAccessException) { return false; }
    }

    public static void Kill(int pid, string pidFile)
    {
        if (!IsProcessAlive(pid, pidFile)) return;
        try { System.Diagnostics.Process.GetProcessById(pid).Kill(); }
        catch (ArgumentException) { }
        catch (InvalidOperationException) { }
    }

    public ValueTask DisposeAsync() => Qmp.DisposeAsync();
}
