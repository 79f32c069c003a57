using Haven.Api;
using Spectre.Console;

namespace Haven.Cli.Commands.Backup;

/// <summary>
/// Turns havend's progress lines into one bar per disk (bytes done of bytes to read). havend sends at most ten
/// lines a second and may drop some, so a disk's last line can be missing: a line for a later disk completes
/// the earlier ones.
/// </summary>
public sealed class BackupProgress(Func<string, ProgressTask> addTask)
{
    readonly List<ProgressTask> bars = [];

    public IReadOnlyList<ProgressTask> Bars => bars;

    public void Report(OperationEvent e)
    {
        if (e.Type != "progress" || e.Disk is not { } disk || disk < 0)
            return;
        lock (bars)
        {
            var count = Math.Max(e.DiskCount ?? 0, disk + 1);
            while (bars.Count < count)
            {
                var bar = addTask("disk" + bars.Count);
                bar.IsIndeterminate = true;
                bars.Add(bar);
            }
            for (var i = 0; i < disk; i++)
                Complete(bars[i]);

            var current = bars[disk];
            current.Description = e.Phase is null or "reading" ? "disk" + disk : $"disk{disk} {e.Phase}";
            if (e.BytesTotal is not { } total)
                return;
            if (total <= 0)
            {
                // Nothing to read (an incremental of an unchanged disk).
                Complete(current);
                return;
            }
            current.IsIndeterminate = false;
            current.MaxValue = total;
            current.Value = Math.Clamp(e.BytesDone ?? 0, 0, total);
        }
    }

    static void Complete(ProgressTask bar)
    {
        if (bar.IsIndeterminate)
        {
            bar.IsIndeterminate = false;
            bar.MaxValue = 1;
        }
        bar.Value = bar.MaxValue;
    }
}
