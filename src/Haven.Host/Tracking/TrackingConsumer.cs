using System.Text.Json;
using System.Text.Json.Serialization;

namespace Haven.Host.Tracking;

public enum TrackingConsumerKind
{
    /// <summary>Backups of the VM to one repository (<see cref="TrackingConsumer.Target"/>: the repository id).</summary>
    Backup,
    /// <summary>Replication cycles of the VM (<see cref="TrackingConsumer.Target"/>: the VM id).</summary>
    Replication,
}

/// <summary>
/// Who a VM's change tracking serves: each consumer has its own dirty bitmap per disk, started at its own last
/// point, so a backup never moves a replication's reference and the reverse. Stored as <see cref="ToString"/>
/// ("backup:&lt;repository id&gt;", "replication:&lt;vm id&gt;").
/// </summary>
[JsonConverter(typeof(TrackingConsumerJsonConverter))]
public sealed record TrackingConsumer(TrackingConsumerKind Kind, string Target)
{
    private const string BackupPrefix = "backup:";
    private const string ReplicationPrefix = "replication:";

    public static TrackingConsumer ForBackup(string repositoryId) => new(TrackingConsumerKind.Backup, repositoryId);
    public static TrackingConsumer ForReplication(string vmId) => new(TrackingConsumerKind.Replication, vmId);

    public override string ToString() => (Kind == TrackingConsumerKind.Backup ? BackupPrefix : ReplicationPrefix) + Target;

    public static TrackingConsumer Parse(string text) =>
        text.StartsWith(BackupPrefix, StringComparison.Ordinal) ? ForBackup(text[BackupPrefix.Length..])
        : text.StartsWith(ReplicationPrefix, StringComparison.Ordinal) ? ForReplication(text[ReplicationPrefix.Length..])
        : throw new InvalidDataException($"'{text}' is not a change-tracking consumer");
}

/// <summary>Journal payloads hold a consumer as its stable string form.</summary>
internal sealed class TrackingConsumerJsonConverter : JsonConverter<TrackingConsumer>
{
    public override TrackingConsumer Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
        => TrackingConsumer.Parse(reader.GetString() ?? throw new JsonException("a tracking consumer is a string"));

    public override void Write(Utf8JsonWriter writer, TrackingConsumer value, JsonSerializerOptions options) => writer.WriteStringValue(value.ToString());
}

/// <summary>
/// The point a consumer's tracking starts at: the backup it was taken with, or the replication cycle. Exactly one is
/// set, by the consumer's kind.
/// </summary>
public sealed record TrackingMark(string? BackupId, long? Cycle)
{
    public static TrackingMark OfBackup(string backupId) => new(backupId, null);
    public static TrackingMark OfCycle(long cycle) => new(null, cycle);
}

/// <summary>
/// "Changes since here" for one disk and one consumer (Hyper-V RCT's reference point): a persistent dirty bitmap in
/// the disk's writable layer, started at the instant of <see cref="Mark"/>.
/// </summary>
public sealed record TrackingPoint
{
    public required string VmId { get; init; }
    public required int DiskIndex { get; init; }
    public required TrackingConsumer Consumer { get; init; }
    public required string Bitmap { get; init; }
    /// <summary>The layer holding the bitmap; if the disk's writable layer is another one, tracking no longer covers the disk.</summary>
    public required string LayerId { get; init; }
    public required TrackingMark Mark { get; init; }
    public required Haven.Api.Consistency Consistency { get; init; }
    public required DateTimeOffset CreatedAt { get; init; }
    /// <summary>Size and modification time of the layer file when no QEMU had it open; a change means someone wrote it outside Haven.</summary>
    public string? FileStamp { get; init; }
    public string? UntrustedReason { get; init; }
}
