using System.Globalization;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace Haven.Cli;

/// <summary>Small helpers for human output. Text from the daemon is never parsed as Spectre markup.</summary>
public static class Human
{
    public static string Escape(string? s) => Markup.Escape(s ?? "");

    /// <summary>Writes "key   value" lines, keys padded to one column; rows whose value is null are left out.</summary>
    public static void WriteProperties(this IAnsiConsole console, params (string Key, string? Value)[] rows)
    {
        var shown = rows.Where(r => r.Value is not null).ToList();
        var width = shown.Count == 0 ? 0 : shown.Max(r => r.Key.Length) + 2;
        foreach (var (key, value) in shown)
            console.WriteLine(key.PadRight(width) + value);
    }

    /// <summary>A borderless table (columns separated by two spaces, like docker and kubectl).</summary>
    public static Table Table(params string[] headers)
    {
        var table = new Table().Border(TableBorder.None);
        foreach (var header in headers)
            table.AddColumn(new TableColumn(new Text(header, new Style(decoration: Decoration.Bold))).PadLeft(0).PadRight(2));
        return table;
    }

    public static void AddTextRow(this Table table, params string?[] cells) =>
        table.AddRow(cells.Select(c => (IRenderable)new Text(c ?? "")).ToArray());

    public static void Line(this IAnsiConsole console, string text) => console.WriteLine(text);

    /// <summary>850 ms, 1.25 s, 2 min 5 s.</summary>
    public static string Duration(double milliseconds)
    {
        var inv = CultureInfo.InvariantCulture;
        if (milliseconds < 1000)
            return milliseconds.ToString(milliseconds < 10 ? "0.#" : "0", inv) + " ms";
        var seconds = milliseconds / 1000;
        if (seconds < 60)
            return seconds.ToString("0.##", inv) + " s";
        var whole = (long)Math.Round(seconds);
        return $"{whole / 60} min {whole % 60} s";
    }

    public static string Time(DateTimeOffset t) =>
        t.ToLocalTime().ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture);

    public static string Quote(string s) => "'" + s + "'";
}
