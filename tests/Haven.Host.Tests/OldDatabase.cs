using Haven.Host.State;
using Microsoft.Data.Sqlite;

namespace Haven.Host.Tests;

/// <summary>
/// State databases of an older schema for the migration tests, made by HostStore's own steps up to that schema (so
/// every table is as that version had it), then filled with rows as an older havend would have written them.
/// </summary>
internal static class OldDatabase
{
    public static void Create(string path, int schemaVersion, string rows, params (string Name, object Value)[] parameters)
    {
        using (new HostStore(path, schemaVersion)) { }
        using var c = new SqliteConnection($"Data Source={path};Pooling=False");
        c.Open();
        using var cmd = c.CreateCommand();
        cmd.CommandText = rows;
        foreach (var (name, value) in parameters) cmd.Parameters.AddWithValue(name, value);
        cmd.ExecuteNonQuery();
    }

    /// <summary>The latest schema's version number, read from a database the current code made.</summary>
    public static long VersionOf(string path)
    {
        using var c = new SqliteConnection($"Data Source={path};Pooling=False");
        c.Open();
        using var cmd = c.CreateCommand();
        cmd.CommandText = "PRAGMA user_version";
        return (long)cmd.ExecuteScalar()!;
    }

    /// <summary>A VM row of the vms table of schemas 1 to 5.</summary>
    public static string VmRow(string id, string name, int vcpus = 1, int memoryMiB = 64, string network = "none", string? currentCheckpoint = null) =>
        $"INSERT INTO vms VALUES ('{id}', '{name}', {vcpus}, {memoryMiB}, NULL, NULL, NULL, 1, '{network}', 'auto', 'Production', "
        + (currentCheckpoint is null ? "NULL" : $"'{currentCheckpoint}'") + ", '2026-01-01T00:00:00.0000000+00:00');";
}
