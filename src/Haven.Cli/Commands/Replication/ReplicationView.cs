using System.Globalization;
using Haven.Api;
using Haven.Cli.Commands.Checkpoint;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace Haven.Cli.Commands.Replication;

/// <summary>Human renderings of ReplicationStatusInfo and ReplicationCycleResult.</summary>
public static class ReplicationView
{
    /// <summary>"Cycle 4 (incremental): 3 MiB in 12 extents, 400 ms".</summary>
    public static string Cycle(ReplicationCycleResult r) =>
        $"Cycle {r.Cycle} ({(r.Resync ? "resynchronization" : r.Full ? "full" : "incremental")}): {SizeParser.Format(r.DataBytes)} in {Count(r.Extents, "extent")}, "
        + Human.Duration(r.WallMilliseconds);

    /// <summary>A two-column table of the status, then the recovery points (if any). Health is coloured on terminals only.</summary>
    public static void RenderStatus(IAnsiConsole console, ReplicationStatusInfo s)
    {
        var table = new Table().Border(TableBorder.None).HideHeaders();
        table.AddColumn(new TableColumn("").PadLeft(0).PadRight(2));
        table.AddColumn(new TableColumn("").PadLeft(0).PadRight(0));
        void Row(string key, string? value)
        {
            if (value is not null)
                table.AddRow(new Text(key), new Text(value));
        }

        Row("VM", s.Vm);
        Row("Role", s.Role);
        Row("Partner", s.Partner);
        Row("Pinned certificate", s.ReplicaThumbprint);
        table.AddRow(new Text("Health"), Health(s.Health, s.HealthReason));
        Row("State", s.State);
        Row("Frequency", s.FrequencySeconds is { } f ? Frequency(f) : "-");
        Row("Last cycle", s.LastCycle == 0 ? "none" : s.LastCycle.ToString(CultureInfo.InvariantCulture));
        Row("Cycles", $"{s.SuccessfulCycles} successful, {s.FailedCycles} failed, {s.MissedCycles} missed");
        Row("Size", $"{SizeParser.Format(s.AverageBytes)} average, {SizeParser.Format(s.MaxBytes)} max");
        Row("Latency", $"{Human.Duration(s.AverageSeconds * 1000)} average, {Human.Duration(s.MaxSeconds * 1000)} max");
        Row("Pending", s.PendingBytes is { } p ? SizeParser.Format(p) : null);
        Row("Last success", s.LastSuccess is { } ok ? Human.Time(ok) : "never");
        Row("Last error", s.LastError);
        Row("Last test failover", s.LastTestFailover is { } t ? Human.Time(t) : "never");
        Row("Failover network", FailoverNetwork(s.FailoverNetwork));
        console.Write(table);

        if (s.RecoveryPoints.Count == 0)
            return;
        console.WriteLine();
        var points = Human.Table("CYCLE", "POINT IN TIME", "CONSISTENCY");
        foreach (var rp in s.RecoveryPoints.OrderByDescending(p => p.Cycle))
            points.AddTextRow(rp.Cycle.ToString(CultureInfo.InvariantCulture), Human.Time(rp.PointInTime), CheckpointView.Consistency(rp.Consistency));
        console.Write(points);
    }

    /// <summary>Normal green, Warning yellow, Critical red (Spectre drops the colour where there is none), with the reason.</summary>
    public static IRenderable Health(string health, string? reason)
    {
        var colour = health switch
        {
            "Normal" => "green",
            "Warning" => "yellow",
            "Critical" => "red",
            _ => null,
        };
        var text = Human.Escape(health);
        var markup = colour is null ? text : $"[{colour}]{text}[/]";
        return new Markup(reason is null ? markup : $"{markup} ({Human.Escape(reason)})");
    }

    /// <summary>"nic0=br-dr, nic1=br2", or "none" (failed-over NICs keep their bridges).</summary>
    public static string FailoverNetwork(Dictionary<string, string>? map) =>
        map is null || map.Count == 0 ? "none" : string.Join(", ", map.OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => $"{p.Key}={p.Value}"));

    /// <summary>300 → "5 min", 30 → "30 s", 90 → "90 s".</summary>
    public static string Frequency(int seconds) =>
        seconds % 60 == 0 ? $"{seconds / 60} min" : $"{seconds} s";

    static string Count(long n, string noun) => $"{n} {noun}{(n == 1 ? "" : "s")}";
}
