using System.Text.Json;
using Haven.Api;

namespace Haven.Host.Checkpoints;

// Journal payloads. Each is written to the operations table before the first side effect and
// updated as steps finish, so the reconciler knows how far an operation got.

public sealed record NewLayerPlan(int Disk, string LayerId, string ParentLayerId);

public sealed record CreatePlan
{
    public required string CheckpointId { get; init; }
    public required string Name { get; init; }
    public required string? ParentCheckpointId { get; init; }
    public required CheckpointKind Kind { get; init; }
    public required Consistency Consistency { get; init; }
    public required bool Live { get; init; }
    public required List<NewLayerPlan> NewLayers { get; init; }
    public bool Freezing { get; set; }
    public bool PausedByUs { get; set; }
    public bool Snapshotted { get; set; }
}

public sealed record ApplyPlan
{
    public required string CheckpointId { get; init; }
    public required List<NewLayerPlan> NewLayers { get; init; }
    public required List<string> DiscardedLayers { get; init; }
    /// <summary>The hardware the checkpoint was taken with, set in the same transaction as the layers; null (older checkpoints, older journals): kept.</summary>
    public VmHardware? Hardware { get; init; }
    /// <summary>Each disk's size in the checkpoint (a disk grown since shrinks back with its layers); null: kept.</summary>
    public List<long>? DiskSizes { get; init; }
}

/// <summary>How one disk loses the removed checkpoint's layer.</summary>
public enum MergeMode
{
    /// <summary>No layer sits on it: the file is deleted.</summary>
    Delete,
    /// <summary>One layer sits on it: that child is committed down into it and the file takes the child's place.</summary>
    CommitChild,
    /// <summary>Several layers sit on it: its data is copied up into each child, then the file is deleted.</summary>
    StreamIntoChildren,
}

public sealed record DiskRemovalPlan(int Disk, string LayerId, string? ParentLayerId, List<string> Children, MergeMode Mode);

public sealed record RemovePlan
{
    public required string CheckpointId { get; init; }
    public required List<DiskRemovalPlan> Disks { get; init; }
    public List<int> DisksMerged { get; init; } = [];
}

public sealed record RemoveSubtreePlan(List<string> CheckpointIds);

public static class PlanJson
{
    private static readonly JsonSerializerOptions Options = new(JsonSerializerDefaults.Web);
    public static string Write<T>(T plan) => JsonSerializer.Serialize(plan, Options);
    public static T Read<T>(string json) => JsonSerializer.Deserialize<T>(json, Options) ?? throw new InvalidDataException("empty journal payload");
}

public static class OperationKinds
{
    public const string CreateCheckpoint = "create-checkpoint";
    public const string ApplyCheckpoint = "apply-checkpoint";
    public const string RemoveCheckpoint = "remove-checkpoint";
    public const string RemoveSubtree = "remove-subtree";
}
