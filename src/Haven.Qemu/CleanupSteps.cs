using Haven.Qemu.Qmp;
using Microsoft.Extensions.Logging;

namespace Haven.Qemu;

/// <summary>
/// Clean-up steps that must not stop the clean-up after them. A QMP object that is gone already is what a retry
/// after a crash expects (Debug); any other failure is logged at Warning, with the caller's logging scope (VM,
/// operation) around it.
/// </summary>
public static class CleanupSteps
{
    public static async Task QmpAsync(ILogger? log, string step, Func<Task> action)
    {
        try { await action(); }
        catch (QmpException e) when (IsGone(e)) { log?.LogDebug("cleanup step {Cleanup} found nothing to do: {Error}", step, e.Description); }
        catch (QmpException e) { Failed(log, step, e); }
    }

    public static void Failed(ILogger? log, string step, Exception e) =>
        log?.LogWarning(e, "cleanup failed: {Cleanup}: {Error}", step, e.Message.ReplaceLineEndings(" "));

    /// <summary>QEMU's ways of saying the node, job, export or server does not exist (any more).</summary>
    public static bool IsGone(QmpException e) =>
        e.ErrorClass == "DeviceNotFound"
        || e.Description.Contains("not found", StringComparison.OrdinalIgnoreCase)
        || e.Description.Contains("not running", StringComparison.OrdinalIgnoreCase)
        || e.Description.Contains("does not exist", StringComparison.OrdinalIgnoreCase)
        || e.Description.Contains("No such", StringComparison.OrdinalIgnoreCase)
        || e.Description.Contains("Cannot find", StringComparison.OrdinalIgnoreCase);
}
