using System.Text.Json;
using System.Text.Json.Serialization;

namespace Haven.Repository;

/// <summary>JSON of every repository object: camelCase, null properties left out (array entries are kept).</summary>
internal static class RepositoryJson
{
    public static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        RespectNullableAnnotations = true,
        RespectRequiredConstructorParameters = true,
    };

    public static readonly JsonSerializerOptions Indented = new(Options) { WriteIndented = true };
}

/// <summary>Object keys of the layout (docs/repository-format.md, "Layout").</summary>
internal static class RepoKeys
{
    public const string Config = "config";
    /// <summary>The new config while <c>repo upgrade</c> replaces <c>config</c> (docs: "Upgrading from version 1").</summary>
    public const string StagedConfig = "config.v2";
    public const string SummariesPrefix = "summaries/";
    public const string IndexesPrefix = "indexes/";
    public const string ChunksPrefix = "chunks/";
    public const string BackupsPrefix = "backups/";
    public const string LocksPrefix = "locks/";
    public const string WriterLockPrefix = "locks/writer-";
    public const string ReaderLockPrefix = "locks/reader-";
    public const string ExclusiveLock = "locks/exclusive";
    public const string ChunkEpoch = "chunk-epoch";

    public static string Chunk(ChunkId id)
    {
        Span<char> key = stackalloc char[ChunksPrefix.Length + 3 + ChunkId.Length * 2];
        ChunksPrefix.CopyTo(key);
        var hex = id.ToString();
        hex.AsSpan(0, 2).CopyTo(key[ChunksPrefix.Length..]);
        key[ChunksPrefix.Length + 2] = '/';
        hex.CopyTo(key[(ChunksPrefix.Length + 3)..]);
        return new string(key);
    }

    /// <summary>Parses "chunks/ab/ab…" (exactly; ".bad" files and strays are not chunks).</summary>
    public static bool TryParseChunk(string key, out ChunkId id)
    {
        id = default;
        const int length = 7 + 3 + ChunkId.Length * 2;
        if (key.Length != length || !key.StartsWith(ChunksPrefix, StringComparison.Ordinal) || key[9] != '/') return false;
        var hex = key.AsSpan(10);
        return hex[0] == key[7] && hex[1] == key[8] && ChunkId.TryParse(hex, out id) && IsLowerHex(hex);
    }

    private static bool IsLowerHex(ReadOnlySpan<char> s) => !s.ContainsAnyInRange('A', 'F');

    public static string Backup(string backupId) => BackupsPrefix + backupId;

    public static string Summary(string backupId) => SummariesPrefix + backupId;

    public static string Index(string indexName) => IndexesPrefix + indexName;
}
