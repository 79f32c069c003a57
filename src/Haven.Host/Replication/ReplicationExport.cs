using System.Buffers.Binary;
using System.Text.Json;
using Haven.Api;

namespace Haven.Host.Replication;

/// <summary>
/// Initial replication by external media (Hyper-V's "send initial copy using external media"): the first cycle
/// is written to a folder instead of the network, carried to the replica host, and imported there; from then on
/// cycles go over the network as usual. The folder holds <c>replica.json</c> (the replica's definition, the primary's
/// name and VM id, the cycle header) and <c>cycle.bin</c> (the extents). Format: docs/replication.md, "Initial
/// replication".
/// </summary>
public sealed class FolderReplicaTarget(string folder, string primaryHost) : IReplicaTarget
{
    public const string DefinitionFile = "replica.json";
    public const string ExtentsFile = "cycle.bin";
    private ReplicaCreateSpec? _spec;

    public Task<long> EnsureReplicaAsync(ReplicaCreateSpec spec, CancellationToken ct)
    {
        if (!Directory.Exists(folder)) throw HavenException.Invalid($"export folder does not exist: {folder}");
        if (File.Exists(Path.Combine(folder, DefinitionFile))) throw HavenException.Conflict($"{folder} already holds an exported replica");
        _spec = spec;
        return Task.FromResult(0L);
    }

    public Task<long?> LastCycleAsync(string primaryVmId, CancellationToken ct) => Task.FromResult<long?>(0);

    public Task<byte[][]> HashBlocksAsync(string primaryVmId, IReadOnlyList<long> diskSizes, CancellationToken ct)
        => throw HavenException.Invalid("an export folder cannot be compared block by block");

    public async Task<long> SendCycleAsync(string primaryVmId, ReplicaCycleHeader header, IAsyncEnumerable<ReplicaExtent> extents, CancellationToken ct)
    {
        var spec = _spec ?? throw new InvalidOperationException("EnsureReplicaAsync comes first");
        var extentsPath = Path.Combine(folder, ExtentsFile);
        var partial = extentsPath + ".partial";
        await using (var file = new FileStream(partial, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20, useAsync: true))
        {
            var head = new byte[21];
            await foreach (var e in extents.WithCancellation(ct))
            {
                BinaryPrimitives.WriteInt32LittleEndian(head, e.Disk);
                BinaryPrimitives.WriteInt64LittleEndian(head.AsSpan(4), e.Offset);
                BinaryPrimitives.WriteInt32LittleEndian(head.AsSpan(12), e.Length);
                head[16] = e.Data is null ? (byte)1 : (byte)0;
                BinaryPrimitives.WriteInt32LittleEndian(head.AsSpan(17), e.Data?.Length ?? 0);
                await file.WriteAsync(head, ct);
                if (e.Data is { } data) await file.WriteAsync(data, ct);
            }
            await file.FlushAsync(ct);
            file.Flush(flushToDisk: true);
        }
        File.Move(partial, extentsPath, overwrite: true);
        var definition = new ExportedReplica { PrimaryHost = primaryHost, Spec = spec with { PrimaryHost = primaryHost }, Header = header };
        await File.WriteAllBytesAsync(Path.Combine(folder, DefinitionFile), JsonSerializer.SerializeToUtf8Bytes(definition, ApiJson.Options), ct);
        return header.Cycle;
    }

    public Task FailoverAsync(string primaryVmId, bool start, CancellationToken ct) => throw HavenException.Invalid("an export folder cannot fail over");

    public Task<string> ReverseAsync(string primaryVmId, string newReplicaHost, ReplicationSettings settings, CancellationToken ct)
        => throw HavenException.Invalid("an export folder cannot replicate back");

    /// <summary>Reads an exported folder's extents (replica side, <see cref="ReplicaService.ImportAsync"/>).</summary>
    public static async IAsyncEnumerable<ReplicaExtent> ReadExtentsAsync(string folder, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct)
    {
        await using var file = new FileStream(Path.Combine(folder, ExtentsFile), FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20, useAsync: true);
        var head = new byte[21];
        var data = new byte[ReplicaService.MaxExtentBytes];
        while (true)
        {
            var n = await file.ReadAtLeastAsync(head, head.Length, throwOnEndOfStream: false, ct);
            if (n == 0) yield break;
            if (n != head.Length) throw HavenException.Invalid($"{ExtentsFile} is truncated");
            var disk = BinaryPrimitives.ReadInt32LittleEndian(head);
            var offset = BinaryPrimitives.ReadInt64LittleEndian(head.AsSpan(4));
            var length = BinaryPrimitives.ReadInt32LittleEndian(head.AsSpan(12));
            var dataLength = BinaryPrimitives.ReadInt32LittleEndian(head.AsSpan(17));
            if (head[16] == 1) { yield return new ReplicaExtent(disk, offset, length, null); continue; }
            if (dataLength != length || length <= 0 || length > data.Length) throw HavenException.Invalid($"{ExtentsFile} holds a malformed extent at {offset}");
            if (await file.ReadAtLeastAsync(data.AsMemory(0, length), length, throwOnEndOfStream: false, ct) != length) throw HavenException.Invalid($"{ExtentsFile} is truncated");
            yield return new ReplicaExtent(disk, offset, length, data.AsMemory(0, length));
        }
    }
}

/// <summary>The definition an export folder carries.</summary>
public sealed record ExportedReplica
{
    public required string PrimaryHost { get; init; }
    public required ReplicaCreateSpec Spec { get; init; }
    public required ReplicaCycleHeader Header { get; init; }
}
