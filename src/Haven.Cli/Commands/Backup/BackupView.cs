using System.Globalization;
using Haven.Api;
using Haven.Cli.Commands.Checkpoint;
using Spectre.Console;

namespace Haven.Cli.Commands.Backup;

/// <summary>Human renderings of backups.</summary>
public static class BackupView
{
    public static void RenderList(IAnsiConsole console, List<BackupInfo> backups, string? vm)
    {
        if (backups.Count == 0)
        {
            console.Line(vm is null ? "No backups." : $"No backups of VM '{vm}'.");
            return;
        }
        var table = Human.Table("ID", "VM", "CREATED", "MODE", "HOST", "SIZE");
        foreach (var b in backups.OrderBy(b => b.CreatedAt).ThenBy(b => b.Id, StringComparer.Ordinal))
        {
            if (b.Unreadable is null) table.AddTextRow(b.Id, b.Vm, Human.Time(b.CreatedAt), b.Mode, b.Host, SizeParser.Format(b.SizeBytes));
            else table.AddTextRow(b.Id, "?", Human.Time(b.CreatedAt), "UNREADABLE", "?", "-");
        }
        console.Write(table);
        foreach (var b in backups.Where(b => b.Unreadable is not null))
            console.Line($"Backup {b.Id} is unreadable: {b.Unreadable}. Prune leaves it; gc deletes nothing until it is repaired or removed.");
    }

    public static void RenderResult(IAnsiConsole console, BackupResult r)
    {
        var inv = CultureInfo.InvariantCulture;
        console.Line($"Backed up VM '{r.Vm}' as backup {r.BackupId}.");
        console.WriteProperties(
            ("Mode", r.Reason is { } reason ? $"{r.Mode} ({reason})" : r.Mode),
            ("Consistency", CheckpointView.Consistency(r.Consistency)),
            ("Read", SizeParser.Format(r.BytesRead)),
            ("New", SizeParser.Format(r.BytesNew) + " (after deduplication)"),
            ("Chunks", string.Create(inv, $"{r.ChunksRead} read, {r.ChunksNew} new, {r.ChunksZero} zero, {r.ChunksReused} reused")),
            ("Frozen", r.FrozenMilliseconds is { } frozen ? Human.Duration(frozen) : "no (guest file systems not frozen)"),
            ("Wall time", Human.Duration(r.WallMilliseconds)));
    }
}
