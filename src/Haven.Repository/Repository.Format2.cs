using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Haven.Storage;

namespace Haven.Repository;

/// <summary>
/// Format version 2: a small sealed summary per backup (<c>summaries/&lt;id&gt;</c>) that names one binary chunk
/// index object per disk (<c>indexes/&lt;name&gt;</c>). Version 1 (one JSON manifest per backup) is still read;
/// such a repository is read-only until <see cref="UpgradeAsync"/> converts it (docs/repository-format.md).
/// </summary>
public sealed partial class Repository
{
    /// <summary>Largest summary plaintext accepted (a summary is a few KiB: VM definition, disks, stats).</summary>
    internal const int MaxSummaryBytes = 16 << 20;

    /// <summary>The repository's format version: 2, or 1 for a repository made before version 2 (read-only).</summary>
    public int FormatVersion => _config.Version;

    /// <summary>True for a version-1 repository: list, restore, verify and copy-from work; backup, prune and GC are refused.</summary>
    public bool IsReadOnly => _config.Version < 2 && !WriteVersion1ForTests;

    /// <summary>Tests only: lets a writer commit version-1 manifests, to make the repositories that upgrade converts.</summary>
    internal bool WriteVersion1ForTests { get; set; }

    internal void ThrowIfReadOnly(string operation)
    {
        if (IsReadOnly)
            throw new RepositoryReadOnlyException($"{Location} is a version-1 repository, which this Haven only reads ({operation} refused); run `haven repo upgrade` to convert it to version 2");
    }

    internal byte[] SealSummary(SummaryDocument summary)
    {
        if (summary.VmDefinition.ValueKind == JsonValueKind.Undefined) summary = summary with { VmDefinition = JsonNull };
        var json = JsonSerializer.SerializeToUtf8Bytes(summary, RepositoryJson.Options);
        return Seal(SealedObject.SummaryMagic, _keys.SummaryEncryption, Encoding.UTF8.GetBytes(summary.Id), json);
    }

    internal byte[] SealIndex(string indexName, byte[] index) => Seal(SealedObject.IndexMagic, _keys.IndexEncryption, Encoding.UTF8.GetBytes(indexName), index);

    private static byte[] Seal(ReadOnlySpan<byte> magic, byte[] key, byte[] binding, byte[] plaintext)
    {
        var output = new byte[SealedObject.Overhead + plaintext.Length];
        var n = SealedObject.Seal(magic, key, binding, plaintext, output, compress: true);
        return n == output.Length ? output : output.AsSpan(0, n).ToArray();
    }

    internal SummaryDocument OpenSummary(string backupId, byte[] sealedBytes)
    {
        var json = SealedObject.OpenToArray(SealedObject.SummaryMagic, _keys.SummaryEncryption, Encoding.UTF8.GetBytes(backupId), sealedBytes, MaxSummaryBytes, out var problem)
            ?? throw new CorruptManifestException(backupId, "summary: " + problem);
        SummaryDocument summary;
        try
        {
            summary = JsonSerializer.Deserialize<SummaryDocument>(json, RepositoryJson.Options)
                ?? throw new CorruptManifestException(backupId, "summary is JSON null");
        }
        catch (JsonException e) { throw new CorruptManifestException(backupId, "not a valid summary: " + e.Message.Split('\n')[0]); }
        if (summary.Version != SummaryDocument.CurrentVersion)
            throw new UnsupportedFormatException($"backup {backupId} has summary version {summary.Version}; this Haven reads version {SummaryDocument.CurrentVersion}");
        if (summary.Id != backupId) throw new CorruptManifestException(backupId, $"summary names backup {summary.Id}");
        foreach (var disk in summary.Disks)
        {
            if (disk.ChunkSize != ChunkSize || disk.SizeBytes < 0 || ChunkIndexFormat.Length(DiskManifest.ChunkCount(disk.SizeBytes, disk.ChunkSize)) > ChunkIndexFormat.MaxBytes)
                throw new CorruptManifestException(backupId, $"disk {disk.Name}: size or chunk size out of range");
            if (!IsIndexName(disk.Index) || disk.IndexSha256.Length != 64 || !disk.IndexSha256.All(char.IsAsciiHexDigitLower))
                throw new CorruptManifestException(backupId, $"disk {disk.Name}: malformed index reference");
        }
        return summary;
    }

    /// <summary>An index name is one key segment: 1..100 of a-z 0-9 . _ -, not starting with a dot.</summary>
    internal static bool IsIndexName(string? name)
        => name is { Length: > 0 and <= 100 } && name[0] != '.' && name.All(c => char.IsAsciiDigit(c) || char.IsAsciiLetterLower(c) || c is '.' or '_' or '-');

    /// <summary>The summary of a backup (a version-1 manifest is read whole and summarised); null when it does not exist.</summary>
    internal async Task<SummaryDocument?> ReadSummaryAsync(string backupId, CancellationToken ct)
    {
        if (!BackupIds.IsValid(backupId)) return null;
        if (FormatVersion < 2)
        {
            var v1 = await Store.GetAsync(RepoKeys.Backup(backupId), ct);
            if (v1 is null) return null;
            var m = OpenManifest(backupId, v1);
            return SummaryDocument.Of(m, [.. m.Disks.Select(d => new DiskSummary { Name = d.Name, SizeBytes = d.SizeBytes, ChunkSize = d.ChunkSize, Index = "", IndexSha256 = "" })]);
        }
        var sealedBytes = await Store.GetAsync(RepoKeys.Summary(backupId), ct);
        return sealedBytes is null ? null : OpenSummary(backupId, sealedBytes);
    }

    /// <summary>
    /// The checked plaintext of one disk's index (header and entries). Missing, failing authentication, not the
    /// index the summary names (SHA-256), or not matching the disk → <see cref="CorruptManifestException"/>.
    /// </summary>
    /// <param name="reuse">A buffer to read into (and grow), for runs that read many indexes one after another: GC
    /// marking 2 million-chunk indexes would otherwise leave one 60 MiB array per index to the garbage collector.</param>
    internal async Task<ArraySegment<byte>> ReadIndexAsync(string backupId, DiskSummary disk, CancellationToken ct, IndexBuffer? reuse = null)
    {
        var key = RepoKeys.Index(disk.Index);
        var missing = () => new CorruptManifestException(backupId, $"disk {disk.Name}: index object {disk.Index} is missing");
        ArraySegment<byte> sealedBytes;
        if (reuse is null) sealedBytes = await Store.GetAsync(key, ct) ?? throw missing();
        else
        {
            var length = await Store.ReadAsync(key, reuse.Bytes, ct);
            if (length > reuse.Bytes.Length)
            {
                reuse.Bytes = GC.AllocateUninitializedArray<byte>(length);
                length = await Store.ReadAsync(key, reuse.Bytes, ct);
                // Index objects are create-only: one that grew between two reads is not what the summary names.
                if (length > reuse.Bytes.Length) throw new CorruptManifestException(backupId, $"disk {disk.Name}: index {disk.Index} changed while being read");
            }
            if (length < 0) throw missing();
            sealedBytes = new ArraySegment<byte>(reuse.Bytes, 0, length);
        }
        var index = SealedObject.OpenInPlace(SealedObject.IndexMagic, _keys.IndexEncryption, Encoding.UTF8.GetBytes(disk.Index), sealedBytes, ChunkIndexFormat.MaxBytes, out var problem)
            ?? throw new CorruptManifestException(backupId, $"disk {disk.Name}: index {disk.Index}: {problem}");
        Span<byte> sum = stackalloc byte[32];
        SHA256.HashData(index, sum);
        if (Convert.ToHexStringLower(sum) != disk.IndexSha256)
            throw new CorruptManifestException(backupId, $"disk {disk.Name}: index {disk.Index} is not the one the summary names (SHA-256 differs)");
        if (ChunkIndexFormat.Check(index, disk.ChunkSize, disk.SizeBytes) is { } bad)
            throw new CorruptManifestException(backupId, $"disk {disk.Name}: index {disk.Index}: {bad}");
        return index;
    }

    private async Task<BackupManifest> ReadManifestV2Async(string backupId, CancellationToken ct)
    {
        var summary = await ReadSummaryAsync(backupId, ct) ?? throw new BackupNotFoundException(backupId);
        var disks = new List<DiskManifest>(summary.Disks.Count);
        foreach (var disk in summary.Disks)
        {
            var index = await ReadIndexAsync(backupId, disk, ct);
            var chunks = new ChunkId?[ChunkIndexFormat.Count(index)];
            for (var i = 0; i < chunks.Length; i++) chunks[i] = ChunkIndexFormat.Entry(index, i);
            disks.Add(new DiskManifest { Name = disk.Name, SizeBytes = disk.SizeBytes, ChunkSize = disk.ChunkSize, Chunks = chunks });
        }
        return summary.ToManifest(disks);
    }

    /// <summary>
    /// Calls <paramref name="visit"/> with every chunk id a backup references (zero entries skipped). Returns false
    /// when the backup is gone (pruned meanwhile) or cannot be read (then it is added to <paramref name="unreadable"/>).
    /// Index objects named in <paramref name="indexesDone"/> are skipped (and read ones added), so an index shared by
    /// several summaries is read once per run.
    /// </summary>
    internal async Task<bool> VisitReferencesAsync(string backupId, Action<ChunkId> visit, HashSet<string>? indexesDone,
        List<ManifestProblem> unreadable, CancellationToken ct, IndexBuffer? reuse = null)
    {
        try
        {
            if (FormatVersion < 2)
            {
                var manifest = await ReadManifestAsync(backupId, ct);
                foreach (var disk in manifest.Disks)
                    foreach (var entry in disk.Chunks)
                        if (entry is { } id) visit(id);
                return true;
            }
            if (await ReadSummaryAsync(backupId, ct) is not { } summary) return false;
            foreach (var disk in summary.Disks)
            {
                if (indexesDone is not null && indexesDone.Contains(disk.Index)) continue;
                var index = await ReadIndexAsync(backupId, disk, ct, reuse);
                var count = ChunkIndexFormat.Count(index);
                for (long i = 0; i < count; i++)
                    if (ChunkIndexFormat.Entry(index, i) is { } id) visit(id);
                indexesDone?.Add(disk.Index);
            }
            return true;
        }
        catch (BackupNotFoundException) { return false; }
        catch (CorruptManifestException e) { unreadable.Add(new ManifestProblem(backupId, e.Reason)); }
        catch (UnsupportedFormatException e) { unreadable.Add(new ManifestProblem(backupId, e.Message)); }
        return false;
    }

    /// <summary>
    /// Writes a backup in format 2: one index object per disk (create-only, named "&lt;id&gt;.&lt;disk&gt;"), then the
    /// summary (create-only), the commit point. Returns false if an object of that id already exists (the caller
    /// picks another id; a deterministic rerun of upgrade treats existing objects as its own).
    /// </summary>
    internal async Task<bool> WriteSummaryAndIndexesAsync(BackupManifest manifest, ObjectRetention? retention, bool reuseExisting, CancellationToken ct)
    {
        var lockStore = retention is null ? null : (IObjectLockStore)Store;
        var disks = new List<DiskSummary>(manifest.Disks.Count);
        var written = new List<string>();
        for (var i = 0; i < manifest.Disks.Count; i++)
        {
            var disk = manifest.Disks[i];
            var name = $"{manifest.Id}.{i}";
            var index = ChunkIndexFormat.Write(disk);
            var sealedIndex = SealIndex(name, index);
            var created = lockStore is not null
                ? await lockStore.TryCreateAsync(RepoKeys.Index(name), sealedIndex, retention!, ct)
                : await Store.TryCreateAsync(RepoKeys.Index(name), sealedIndex, ct);
            if (!created && !reuseExisting)
            {
                foreach (var key in written) await Store.DeleteAsync(key, CancellationToken.None);
                return false;
            }
            if (created) written.Add(RepoKeys.Index(name));
            disks.Add(new DiskSummary { Name = disk.Name, SizeBytes = disk.SizeBytes, ChunkSize = disk.ChunkSize, Index = name, IndexSha256 = Convert.ToHexStringLower(SHA256.HashData(index)) });
        }
        var summary = SealSummary(SummaryDocument.Of(manifest, disks));
        var done = lockStore is not null
            ? await lockStore.TryCreateAsync(RepoKeys.Summary(manifest.Id), summary, retention!, ct)
            : await Store.TryCreateAsync(RepoKeys.Summary(manifest.Id), summary, ct);
        if (done || reuseExisting) return true;
        foreach (var key in written) await Store.DeleteAsync(key, CancellationToken.None);
        return false;
    }

    /// <summary>
    /// Converts a version-1 repository to version 2 in place under the exclusive lock (docs/repository-format.md,
    /// "Upgrading from version 1"): for every manifest, its index objects and summary (create-only, same names on a
    /// rerun), then the config at version 2 (staged as <c>config.v2</c>, then put over <c>config</c>), then the v1
    /// manifests are deleted. Killed at any step, the repository stays readable and a rerun finishes the work.
    /// A version-2 repository only has leftover v1 manifests deleted. An unreadable v1 manifest stops the
    /// upgrade before the config changes (nothing is lost; repair or remove it, then run again).
    /// </summary>
    public async Task<UpgradeResult> UpgradeAsync(string passphrase, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(passphrase);
        await using var exclusive = await HeldLock.AcquireExclusiveAsync(this, "upgrade", ct);
        Step("upgrade.after-lock");
        var fromVersion = FormatVersion;
        var manifests = await ListKeysAsync(RepoKeys.BackupsPrefix, ct);
        var converted = 0;
        if (fromVersion < 2)
        {
            foreach (var id in manifests)
            {
                exclusive.ThrowIfLost();
                BackupManifest manifest;
                try { manifest = await ReadManifestAsync(id, ct); }
                catch (BackupNotFoundException) { continue; }
                catch (Exception e) when (e is CorruptManifestException or UnsupportedFormatException)
                {
                    throw new UpgradeRefusedException($"cannot upgrade {Location}: {e.Message}; nothing was changed (restore or delete backups/{id}, then run upgrade again)");
                }
                // An immutable repository's converted backup keeps its manifest's lock (retain-until and mode).
                var retention = Immutability is not null && Store is IObjectLockStore lockStore
                    ? await lockStore.GetRetentionAsync(RepoKeys.Backup(id), ct) : null;
                if (retention is not null && retention.RetainUntil <= Clock.GetUtcNow()) retention = null;
                // Same names on every run: a rerun after a crash finds its own objects and keeps them.
                await WriteSummaryAndIndexesAsync(manifest, retention, reuseExisting: true, ct);
                converted++;
                Step("upgrade.after-summary");
            }
            var next = await Task.Run(() => _config.WithVersion(2, passphrase), ct);
            var json = next.ToJson();
            exclusive.ThrowIfLost();
            await Store.PutAsync(RepoKeys.StagedConfig, json, ct);
            Step("upgrade.after-staged-config");
            await Store.PutAsync(RepoKeys.Config, json, ct);
            _config = next;
            Step("upgrade.after-config");
        }
        await Store.DeleteAsync(RepoKeys.StagedConfig, ct);
        var deleted = 0;
        foreach (var id in manifests)
        {
            exclusive.ThrowIfLost();
            try
            {
                if (await Store.DeleteAsync(RepoKeys.Backup(id), ct)) deleted++;
            }
            catch (ObjectLockedException) { } // still under retention: version-2 readers ignore it; a later upgrade deletes it
            Step("upgrade.after-delete");
        }
        return new UpgradeResult(fromVersion, FormatVersion, converted, deleted);
    }

    /// <summary>Backup ids under <paramref name="prefix"/> (well-formed ids only).</summary>
    private async Task<List<string>> ListKeysAsync(string prefix, CancellationToken ct)
    {
        var ids = new List<string>();
        await foreach (var o in Store.ListAsync(prefix, ct))
        {
            var id = o.Key[prefix.Length..];
            if (BackupIds.IsValid(id)) ids.Add(id);
        }
        return ids;
    }
}

/// <summary>What <see cref="Repository.UpgradeAsync"/> did.</summary>
public sealed record UpgradeResult(int FromVersion, int ToVersion, int BackupsConverted, int ManifestsDeleted);

/// <summary>A growable read buffer reused across the index reads of one run (see Repository.ReadIndexAsync).</summary>
internal sealed class IndexBuffer
{
    public byte[] Bytes = [];
}
