using System.Globalization;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace Haven.Cli;

/// <summary>Small helpers for human output. Text from the daemon is never parsed as Spectre markup.</summary>
public static class Human
{
    public static string Escape(string? s) => Markup.Escape(s ?? "");

    /// <summary>A two-column key/value grid; rows whose value is null are left out.</summary>
    public static Grid Properties(params (string Key, string? Value)[] rows)
    {
        var grid = new Grid().AddColumn(new GridColumn().NoWrap().PadRight(2)).AddColumn();
        foreach (var (key, value) in rows)
        {
            if (value is not null)
                grid.AddRow(new Text(key, new Style(decoration: Decoration.Bold)), new Text(value));
        }
        return grid;
    }

    public static Table Table(params string[] headers)
    {
        var table = new Table().Border(TableBorder.Rounded);
        foreach (var header in headers)
            table.AddColumn(new TableColumn(new Text(header, new Style(decoration: Decoration.Bold))));
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

    public static string YesNo(bool b) => b ? "yes" : "no";

    public static string Quote(string s) => "'" + s + "'";
}
