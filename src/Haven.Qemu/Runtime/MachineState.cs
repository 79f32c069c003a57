using System.Text.Json.Nodes;
using Haven.Qemu.Qmp;

namespace Haven.Qemu.Runtime;

/// <summary>
/// A running VM's execution and its memory and device state: pause and resume, and the state saved to or
/// loaded from a file (QEMU's migration to and from a shell command).
/// </summary>
public static class MachineState
{
    /// <summary>Pauses the vCPUs: memory and disks stay at one instant until <see cref="ResumeAsync"/>.</summary>
    public static Task PauseAsync(QmpClient qmp, CancellationToken ct = default) => qmp.ExecuteAsync("stop", null, ct);

    public static Task ResumeAsync(QmpClient qmp, CancellationToken ct = default) => qmp.ExecuteAsync("cont", null, ct);

    /// <summary>
    /// Writes the paused VM's state to <paramref name="file"/> and waits until it is complete. QEMU's shell runs with
    /// QEMU's umask (027): the file is made owner-only explicitly, it holds the guest's memory.
    /// </summary>
    public static async Task SaveAsync(QmpClient qmp, string file, CancellationToken ct = default)
    {
        await qmp.ExecuteAsync("migrate", new JsonObject { ["uri"] = "exec:umask 077; cat > " + ShellQuote(file) }, ct);
        await WaitForMigrationAsync(qmp, ct);
    }

    /// <summary>
    /// Loads a state file into a QEMU started to wait for one (-incoming defer) and waits until the VM has left the
    /// incoming state (paused, ready for <see cref="ResumeAsync"/>).
    /// </summary>
    public static async Task LoadAsync(QmpClient qmp, string file, CancellationToken ct = default)
    {
        await qmp.ExecuteAsync("migrate-incoming", new JsonObject { ["uri"] = "exec:cat " + ShellQuote(file) }, ct);
        await WaitForMigrationAsync(qmp, ct);
        while ((await qmp.ExecuteAsync("query-status", null, ct)).GetProperty("status").GetString() == "inmigrate") await Task.Delay(20, ct);
    }

    private static async Task WaitForMigrationAsync(QmpClient qmp, CancellationToken ct)
    {
        while (true)
        {
            var info = await qmp.ExecuteAsync("query-migrate", null, ct);
            var status = info.TryGetProperty("status", out var s) ? s.GetString() : null;
            if (status == "completed") return;
            if (status is "failed" or "cancelled")
                throw new MigrationFailedException("saving/loading VM state failed: " + (info.TryGetProperty("error-desc", out var d) ? d.GetString() : status));
            await Task.Delay(20, ct);
        }
    }

    private static string ShellQuote(string s) => "'" + s.Replace("'", "'\\''") + "'";
}

/// <summary>QEMU reported that saving or loading the VM's state failed (or was cancelled).</summary>
public sealed class MigrationFailedException(string message) : Exception(message);
