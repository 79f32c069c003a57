using System.Text.Json;
using System.Text.Json.Serialization;

namespace Haven.Api;

// Wire contracts of havend's HTTP API (version 1, under /v1). JSON is camelCase, enums are strings.
// docs/api.md lists the routes; change both together.

[JsonConverter(typeof(JsonStringEnumConverter<CheckpointType>))]
public enum CheckpointType { Production, ProductionOnly, Standard, Disabled }

[JsonConverter(typeof(JsonStringEnumConverter<CheckpointKind>))]
public enum CheckpointKind { Production, Standard }

[JsonConverter(typeof(JsonStringEnumConverter<Consistency>))]
public enum Consistency { ApplicationConsistent, CrashConsistent }

[JsonConverter(typeof(JsonStringEnumConverter<VmState>))]
/// <summary>Unresponsive: QEMU is alive but does not answer (stopped, hung, or another QMP client holds its socket); see <see cref="VmInfo.StateReason"/>.</summary>
public enum VmState { Off, Running, Paused, Unresponsive }

public sealed record DiskSpec
{
    /// <summary>Existing image (qcow2, raw or vhdx) to import; the daemon copies it into its data folder.</summary>
    public string? ImportPath { get; init; }
    /// <summary>
    /// The format ImportPath must have: "qcow2", "raw" or "vhdx" (an image of another format is refused). Null:
    /// the format its header shows. Either way an image with a backing file or external data file is refused.
    /// </summary>
    public string? ImportFormat { get; init; }
    /// <summary>Size of a new empty disk, in bytes; used when ImportPath is null.</summary>
    public long? SizeBytes { get; init; }
}

public sealed record VmCreateRequest
{
    public required string Name { get; init; }
    public int Vcpus { get; init; } = 1;
    public int MemoryMiB { get; init; } = 256;
    public List<DiskSpec> Disks { get; init; } = [];
    public string? Kernel { get; init; }
    public string? Initrd { get; init; }
    public string? Append { get; init; }
    public bool GuestAgent { get; init; } = true;
    /// <summary>"none" or "user".</summary>
    public string Network { get; init; } = "none";
    /// <summary>"auto", "kvm" or "tcg".</summary>
    public string Accelerator { get; init; } = "auto";
    public CheckpointType CheckpointType { get; init; } = CheckpointType.Production;
    /// <summary>havend starts the VM when it starts.</summary>
    public bool Autostart { get; init; }
    /// <summary>NICs; null: one user-mode NIC for <see cref="Network"/> "user", none for "none". MACs left empty are generated.</summary>
    public List<NicSpec>? Nics { get; init; }
    /// <summary>"auto" (host on KVM, max on TCG) or a QEMU CPU model name.</summary>
    public string CpuModel { get; init; } = "auto";
    /// <summary>"virtio-blk" or "virtio-scsi".</summary>
    public string DiskBus { get; init; } = "virtio-blk";
    /// <summary>An ISO image for the VM's CD-ROM drive; null: no drive.</summary>
    public string? Cdrom { get; init; }
    /// <summary>Device ids in boot order (disk0, cdrom, nic0 ...); empty: firmware default.</summary>
    public List<string>? BootOrder { get; init; }
    /// <summary>"bios" (SeaBIOS) or "uefi" (OVMF).</summary>
    public string Firmware { get; init; } = "bios";
    /// <summary>UEFI only: the OVMF code image; null: Debian's /usr/share/OVMF/OVMF_CODE_4M.fd.</summary>
    public string? UefiCode { get; init; }
    /// <summary>UEFI only: an existing variable store to copy as the VM's own; null: a fresh copy of the template that goes with the code.</summary>
    public string? UefiVars { get; init; }
}

/// <summary>
/// A VM's hardware, stored as one document (<c>vms.hardware</c>) and copied into each checkpoint: applying a
/// checkpoint brings back the hardware it was taken with (docs/architecture.md "VM hardware").
/// </summary>
public sealed record VmHardware
{
    public int Vcpus { get; init; } = 1;
    /// <summary>"auto" (host on KVM, max on TCG) or a QEMU CPU model name.</summary>
    public string CpuModel { get; init; } = "auto";
    public int MemoryMiB { get; init; } = 256;
    public List<NicSpec> Nics { get; init; } = [];
    /// <summary>"virtio-blk" or "virtio-scsi" (SCSI passes the guest's discards through as well).</summary>
    public string DiskBus { get; init; } = "virtio-blk";
    /// <summary>The VM has a CD-ROM drive (id "cdrom"); <see cref="CdromIso"/> is the medium in it, null when empty.</summary>
    public bool CdromDrive { get; init; }
    public string? CdromIso { get; init; }
    /// <summary>Device ids in boot order (disk0, cdrom, nic0 ...); empty: firmware default.</summary>
    public List<string> BootOrder { get; init; } = [];
    /// <summary>"bios" (SeaBIOS) or "uefi" (OVMF, with a per-VM variable store that is part of the VM).</summary>
    public string Firmware { get; init; } = "bios";
    /// <summary>UEFI: the read-only OVMF code image this VM runs; null for BIOS.</summary>
    public string? UefiCode { get; init; }
}

/// <summary>One network card. Mode "user": QEMU's user-mode NAT; "bridge": a tap device havend adds to <see cref="Bridge"/>.</summary>
public sealed record NicSpec
{
    /// <summary>nic0, nic1 ...; given by havend.</summary>
    public string Name { get; init; } = "";
    public string Mode { get; init; } = "user";
    public string? Bridge { get; init; }
    /// <summary>52:54:00:xx:xx:xx generated when empty; kept across restarts, checkpoints, restores in place and replication.</summary>
    public string? Mac { get; init; }
    /// <summary>"virtio" or "e1000".</summary>
    public string Model { get; init; } = "virtio";
    public bool LinkUp { get; init; } = true;
}

/// <summary>PATCH /v1/vms/{name}: every field left null stays as it is.</summary>
public sealed record VmUpdateRequest
{
    public CheckpointType? CheckpointType { get; init; }
    public bool? Autostart { get; init; }
    public int? Vcpus { get; init; }
    public int? MemoryMiB { get; init; }
    public string? CpuModel { get; init; }
    public string? DiskBus { get; init; }
    /// <summary>Puts this ISO into the CD-ROM drive (adding the drive while off).</summary>
    public string? Cdrom { get; init; }
    /// <summary>Empties the CD-ROM drive.</summary>
    public bool Eject { get; init; }
    public List<string>? BootOrder { get; init; }
    /// <summary>NICs to add (Name empty) or replace (Name of an existing NIC).</summary>
    public List<NicSpec>? SetNics { get; init; }
    /// <summary>Names of NICs to remove.</summary>
    public List<string>? RemoveNics { get; init; }
    /// <summary>Disk id to new size in bytes (grow only, VM off).</summary>
    public Dictionary<string, long>? Resize { get; init; }
}

/// <summary>POST /v1/vms/{name}/nics/{nic}/link: the NIC's link state, live through QMP when the VM runs.</summary>
public sealed record NicLinkRequest
{
    public required bool Up { get; init; }
}

/// <summary>POST /v1/host/shutdown-vms: ACPI shutdown of every running VM at once, then force off after the timeout.</summary>
public sealed record HostShutdownRequest
{
    public int TimeoutSeconds { get; init; } = 120;
}

public sealed record VmShutdownResult(string Name, string Outcome, string? Error = null);

public sealed record HostShutdownResult
{
    /// <summary>One entry per VM that was running: Outcome "shut-down" (obeyed ACPI), "forced-off" or "failed".</summary>
    public required List<VmShutdownResult> Vms { get; init; }
}

public sealed record VmStopRequest
{
    /// <summary>Skip the ACPI shutdown and end QEMU at once.</summary>
    public bool Force { get; init; }
    public int TimeoutSeconds { get; init; } = 30;
}

public sealed record LayerInfo(string Path, string? CheckpointName);

public sealed record DiskInfo
{
    public required string DeviceId { get; init; }
    public required long SizeBytes { get; init; }
    /// <summary>The disk's current layer chain, writable top first, base last.</summary>
    public required List<LayerInfo> Chain { get; init; }
}

public sealed record VmInfo
{
    public required string Id { get; init; }
    public required string Name { get; init; }
    public required VmState State { get; init; }
    /// <summary>Why the VM is <see cref="VmState.Unresponsive"/> (e.g. "QEMU did not answer stop within 30 s"); null otherwise.</summary>
    public string? StateReason { get; init; }
    public required int Vcpus { get; init; }
    public required int MemoryMiB { get; init; }
    public required CheckpointType CheckpointType { get; init; }
    public required string Accelerator { get; init; }
    public required string Network { get; init; }
    public required bool GuestAgent { get; init; }
    public bool Autostart { get; init; }
    public required List<DiskInfo> Disks { get; init; }
    public required string QmpSocket { get; init; }
    public string? GuestAgentSocket { get; init; }
    /// <summary>The VNC display's unix socket (owner-only) while QEMU runs; null when the VM is off.</summary>
    public string? VncSocket { get; init; }
    public int? Pid { get; init; }
    /// <summary>The checkpoint the running state descends from ("Now" hangs below it), if any.</summary>
    public string? CurrentCheckpoint { get; init; }
    public string? Kernel { get; init; }
    public string? Initrd { get; init; }
    public string? Append { get; init; }
    /// <summary>The whole hardware document (Vcpus, MemoryMiB and Network above are its summary); null from backups taken before it existed.</summary>
    public VmHardware? Hardware { get; init; }
}

/// <summary>First message of the console WebSocket: attached, or why not.</summary>
public sealed record ConsoleStatus
{
    public bool Attached { get; init; }
    public ErrorResponse? Error { get; init; }
}

public sealed record CheckpointInfo
{
    public required string Id { get; init; }
    public required string Name { get; init; }
    public string? Parent { get; init; }
    public required CheckpointKind Kind { get; init; }
    public required Consistency Consistency { get; init; }
    public required DateTimeOffset CreatedAt { get; init; }
    /// <summary>Memory and device state saved with the checkpoint (Standard checkpoints of a running VM).</summary>
    public required bool HasSavedState { get; init; }
    /// <summary>True for the checkpoint the VM's current state descends from.</summary>
    public required bool IsCurrent { get; init; }
}

public sealed record CheckpointCreateRequest
{
    public string? Name { get; init; }
}

public sealed record CheckpointCreateResult
{
    public required CheckpointInfo Checkpoint { get; init; }
    /// <summary>How long guest file systems were frozen, in milliseconds; null when no freeze happened.</summary>
    public double? FrozenMilliseconds { get; init; }
    /// <summary>Why a Production checkpoint fell back to Standard, when it did.</summary>
    public string? FallbackReason { get; init; }
    public required double ElapsedMilliseconds { get; init; }
}

public sealed record CheckpointApplyRequest
{
    /// <summary>Take a checkpoint of the current state first, so it is not lost.</summary>
    public bool CreateCheckpointFirst { get; init; }
    public string? NewCheckpointName { get; init; }
}

public sealed record CheckpointApplyResult
{
    public required VmState State { get; init; }
    public CheckpointInfo? CreatedFirst { get; init; }
}

public sealed record CheckpointRenameRequest
{
    public required string NewName { get; init; }
}

public sealed record CheckpointRemoveResult
{
    public required List<string> Removed { get; init; }
    public required bool Live { get; init; }
    public required double ElapsedMilliseconds { get; init; }
}

public sealed record CheckpointExportRequest
{
    public required string Path { get; init; }
    /// <summary>"qcow2", "raw" or "vhdx". With several disks, Path gets "-diskN" before the extension.</summary>
    public string Format { get; init; } = "qcow2";
}

public sealed record CheckpointExportResult
{
    public required List<string> Files { get; init; }
}

public sealed record HostInfo
{
    public required string Version { get; init; }
    public required string DataDirectory { get; init; }
    public required string Accelerator { get; init; }
    public required int VmCount { get; init; }
}

/// <summary>Body of every non-2xx answer.</summary>
public sealed record ErrorResponse(string Error, string Code);

public static class ApiJson
{
    public static readonly JsonSerializerOptions Options = new(JsonSerializerDefaults.Web)
    {
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        WriteIndented = false,
    };
}

// ---- backup (v1) ----

/// <summary>
/// Which repository, and the passphrase that opens it: a local folder path, or "s3://bucket/prefix" for
/// S3-compatible object storage (docs/storage-backends.md).
/// </summary>
public record RepositoryRef
{
    public required string Repository { get; init; }
    public required string Passphrase { get; init; }
    /// <summary>Connection settings for an s3:// repository; whatever is left out havend takes from its own AWS environment.</summary>
    public S3Options? S3 { get; init; }
}

/// <summary>
/// How to reach an S3-compatible service. Every field is optional: havend falls back to its environment
/// (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE).
/// </summary>
public sealed record S3Options
{
    /// <summary>Service URL, e.g. "http://127.0.0.1:7480" for Ceph RGW; null for AWS itself.</summary>
    public string? Endpoint { get; init; }
    public string? Region { get; init; }
    /// <summary>Path-style addressing (bucket in the path); default: on when an endpoint is given.</summary>
    public bool? PathStyle { get; init; }
    public string? AccessKeyId { get; init; }
    public string? SecretAccessKey { get; init; }
    public string? SessionToken { get; init; }

    /// <summary>The same settings without credentials, safe to store (jobs) or show.</summary>
    public S3Options WithoutSecrets() => this with { AccessKeyId = null, SecretAccessKey = null, SessionToken = null };

    public override string ToString() => $"S3Options {{ Endpoint = {Endpoint}, Region = {Region}, PathStyle = {PathStyle} }}";
}

public sealed record RepositoryInitRequest : RepositoryRef
{
    /// <summary>Fixed chunk size in bytes (power of two, 64 KiB..16 MiB); default 1 MiB.</summary>
    public int? ChunkSize { get; init; }
    /// <summary>Lock every backup against deletion for this many days (S3 Object Lock); null for none.</summary>
    public int? ImmutableDays { get; init; }
    /// <summary>"governance" (default; a privileged user can lift it) or "compliance" (no one can).</summary>
    public string? ImmutableMode { get; init; }
}

public sealed record RepositoryInfo
{
    public required string Id { get; init; }
    public required string Location { get; init; }
    public required int ChunkSize { get; init; }
    /// <summary>"governance 30d" style description when backups are locked, else null.</summary>
    public string? Immutability { get; init; }
}

/// <summary>
/// Copy backups from the repository named by the base record (the source) to another repository; only
/// chunks the target lacks are uploaded. Exactly one of BackupIds, Vm or All.
/// </summary>
public sealed record RepositoryCopyRequest : RepositoryRef
{
    public required string Target { get; init; }
    public required string TargetPassphrase { get; init; }
    public S3Options? TargetS3 { get; init; }
    public List<string>? BackupIds { get; init; }
    /// <summary>Every backup of this VM.</summary>
    public string? Vm { get; init; }
    /// <summary>Every backup in the source.</summary>
    public bool All { get; init; }
}

public sealed record RepositoryCopyResult
{
    public required List<CopiedBackup> Backups { get; init; }
    public required double WallMilliseconds { get; init; }
}

public sealed record CopiedBackup
{
    public required string SourceId { get; init; }
    public required string TargetId { get; init; }
    public required string Vm { get; init; }
    /// <summary>True when the target already held this backup (copied before); nothing was uploaded.</summary>
    public required bool AlreadyPresent { get; init; }
    public required long ChunksRead { get; init; }
    public required long ChunksUploaded { get; init; }
    public required long BytesUploaded { get; init; }
}

public sealed record BackupRequest : RepositoryRef;

public sealed record BackupResult
{
    public required string BackupId { get; init; }
    public required string Vm { get; init; }
    /// <summary>"full" or "incremental".</summary>
    public required string Mode { get; init; }
    /// <summary>Why a full backup was taken when an incremental was possible in principle.</summary>
    public string? Reason { get; init; }
    public required Consistency Consistency { get; init; }
    public required long BytesRead { get; init; }
    public required long ChunksRead { get; init; }
    /// <summary>Plaintext bytes of chunks the repository did not have.</summary>
    public required long BytesNew { get; init; }
    public required long ChunksNew { get; init; }
    public required long ChunksZero { get; init; }
    public required long ChunksReused { get; init; }
    public double? FrozenMilliseconds { get; init; }
    public required double WallMilliseconds { get; init; }
}

public sealed record BackupInfo
{
    public required string Id { get; init; }
    public required string Vm { get; init; }
    public required DateTimeOffset CreatedAt { get; init; }
    public required string Mode { get; init; }
    public required string Host { get; init; }
    public required long SizeBytes { get; init; }
    /// <summary>Set when the backup's manifest cannot be read: why. Vm, Mode and Host are then empty, SizeBytes 0, CreatedAt from the id.</summary>
    public string? Unreadable { get; init; }
}

public sealed record RestoreRequest : RepositoryRef
{
    public required string BackupId { get; init; }
    /// <summary>Restore the whole VM under this new name.</summary>
    public string? NewName { get; init; }
    /// <summary>Restore the whole VM over the existing VM of the backup's name (it must be off; its checkpoints go).</summary>
    public bool InPlace { get; init; }
    /// <summary>Restore one disk (index) to <see cref="TargetPath"/> instead of a VM.</summary>
    public int? Disk { get; init; }
    public string? TargetPath { get; init; }
    public string Format { get; init; } = "qcow2";
}

public sealed record RestoreResult
{
    public string? Vm { get; init; }
    public List<string> Files { get; init; } = [];
    public required long BytesWritten { get; init; }
    public required double WallMilliseconds { get; init; }
}

/// <summary>
/// One line of a streamed long operation (POST with "Accept: application/x-ndjson"): progress lines,
/// then exactly one line with Result or Error.
/// </summary>
public sealed record OperationEvent
{
    /// <summary>"progress", "result" or "error".</summary>
    public required string Type { get; init; }
    public string? Phase { get; init; }
    public int? Disk { get; init; }
    public int? DiskCount { get; init; }
    public long? BytesDone { get; init; }
    public long? BytesTotal { get; init; }
    public JsonElement? Result { get; init; }
    public ErrorResponse? Error { get; init; }
}

public sealed record RepositoryVerifyRequest : RepositoryRef
{
    /// <summary>Also read, decrypt and re-hash every chunk (slow); otherwise check structure only.</summary>
    public bool ReadData { get; init; }
}

public sealed record RepositoryPruneRequest : RepositoryRef
{
    public int KeepLast { get; init; }
    public int KeepHourly { get; init; }
    public int KeepDaily { get; init; }
    public int KeepWeekly { get; init; }
    public int KeepMonthly { get; init; }
    public int KeepYearly { get; init; }
    public bool DryRun { get; init; }
}

// ---- backup jobs (v1) ----

public sealed record JobDefinition
{
    public required string Name { get; init; }
    public required List<string> Vms { get; init; }
    public required string Repository { get; init; }
    /// <summary>A file whose first line is the repository passphrase; read at each run, never stored by havend.</summary>
    public required string PassphraseFile { get; init; }
    /// <summary>S3 endpoint/region/path-style for an s3:// repository; credentials come from havend's environment, never the job.</summary>
    public S3Options? S3 { get; init; }
    /// <summary>Five-field cron expression in UTC ("0 2 * * *"), or null for a job run only on demand.</summary>
    public string? Schedule { get; init; }
    public int KeepLast { get; init; }
    public int KeepHourly { get; init; }
    public int KeepDaily { get; init; }
    public int KeepWeekly { get; init; }
    public int KeepMonthly { get; init; }
    public int KeepYearly { get; init; }
}

public sealed record JobInfo
{
    public required JobDefinition Definition { get; init; }
    public DateTimeOffset? NextRun { get; init; }
    public DateTimeOffset? LastRun { get; init; }
    /// <summary>"success", "failed" or null before the first run.</summary>
    public string? LastStatus { get; init; }
    public string? LastError { get; init; }
}

public sealed record JobRunResult
{
    public required string Job { get; init; }
    public required List<BackupResult> Backups { get; init; }
    public required List<string> Errors { get; init; }
    public int PrunedBackups { get; init; }
}
