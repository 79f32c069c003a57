using System.Diagnostics;
using System.Text.Json;
using Haven.Api;
using Haven.Backup;
using Haven.Host.Backups;
using Haven.Host.State;
using Haven.Host.Checkpoints;
using Haven.Host.Tracking;
using Haven.Nbd;
using Microsoft.Extensions.Logging;

namespace Haven.Host.Replication;

/// <summary>
/// The primary side of replication: a VM's replication settings and its cycles. A cycle takes a point in
/// time of the VM (the same fleecing view and dirty bitmaps as a backup, under the VM's own replication
/// consumer of change tracking, <see cref="TrackingConsumer.ForReplication"/>), reads the blocks changed since the last cycle the replica acknowledged and
/// sends them to an <see cref="IReplicaTarget"/>; only when the replica has committed the cycle do the new
/// bitmaps become the reference. A cycle that fails hands tracking back, so the next one resends its changes.
/// docs/replication.md, "Cycles".
/// </summary>
public sealed class ReplicationService(HavenHost host)
{
    public const string OperationKind = "replication";
    /// <summary>Change-tracking granularity: the unit in which changed blocks are found and sent.</summary>
    public const int BlockSize = 64 << 10;
    /// <summary>Largest data extent sent in one message.</summary>
    public const int MaxDataExtent = 1 << 20;

    private HostStore Store => host.Store;

    /// <summary>Test seam: runs at each named step of a cycle (the same names as the crash points).</summary>
    internal Func<string, Task>? AtStep { get; set; }

    private async Task StepAsync(string name)
    {
        CrashPoints.Hit(name);
        if (AtStep is not null) await AtStep(name);
    }

    /// <summary>
    /// Turns replication on for a VM: records the settings and has the target create the replica VM. The
    /// initial replication is the first cycle (<see cref="RunCycleAsync"/>), which sends every allocated block.
    /// </summary>
    public async Task<ReplicationRecord> EnableAsync(string vmName, string target, ReplicationSettings settings, IReplicaTarget replica, CancellationToken ct)
    {
        settings.Validate(host.Time.GetUtcNow());
        var vm = host.Vms.Find(vmName);
        FailoverNetworkMap.Validate(settings.FailoverNetwork, vm.Hardware, vm.Name);
        await using var _ = await host.LockVmAsync(vm.Id, ct);
        if (Store.FindReplication(vm.Id) is not null) throw HavenException.Conflict($"VM '{vm.Name}' is already replicated");
        if (Store.FindReplica(vm.Id) is not null) throw HavenException.Conflict($"VM '{vm.Name}' is itself a replica; use extended replication from its host");
        await replica.EnsureReplicaAsync(await SpecOfAsync(host, vm, settings, ct) with { AdoptExisting = settings.InitialFromExisting }, ct);
        var record = new ReplicationRecord(vm.Id, target, JsonSerializer.Serialize(settings, ApiJson.Options), 0);
        Store.Write(w => w.InsertReplication(record));
        return record;
    }

    /// <summary>What a replica of <paramref name="vm"/> needs: its name, disks and boot settings, as this host has them.</summary>
    internal static async Task<ReplicaCreateSpec> SpecOfAsync(HavenHost host, VmRecord vm, ReplicationSettings settings, CancellationToken ct)
    {
        var info = await host.Vms.DescribeAsync(vm, ct);
        return new ReplicaCreateSpec
        {
            VmName = vm.Name,
            PrimaryHost = settings.PrimaryHostName ?? Environment.MachineName,
            PrimaryVmId = vm.Id,
            TrustGroup = "",
            DiskSizes = host.Store.ListDisks(vm.Id).ConvertAll(d => d.SizeBytes),
            Vcpus = info.Vcpus,
            MemoryMiB = info.MemoryMiB,
            Kernel = info.Kernel,
            Initrd = info.Initrd,
            Append = info.Append,
            GuestAgent = info.GuestAgent,
            Accelerator = info.Accelerator,
            Hardware = vm.Hardware,
            AdditionalPoints = settings.AdditionalPoints,
        };
    }

    /// <summary>
    /// One cycle: point in time, changed blocks (all allocated blocks for the initial one), sent; the replica
    /// commits them as a recovery point; then this side moves its reference on. Returns what was sent.
    /// </summary>
    public async Task<CycleResult> RunCycleAsync(string vmName, IReplicaTarget replica, CancellationToken ct, bool forceResync = false)
    {
        var clock = Stopwatch.StartNew();
        var vm = host.Vms.Find(vmName);
        await using var _ = await host.LockVmAsync(vm.Id, ct);
        vm = Store.FindVm(vm.Id)!;
        var record = Store.FindReplication(vm.Id) ?? throw HavenException.NotFound($"VM '{vm.Name}' is not replicated");
        CheckNoPlannedFailover(vm, "replicate");
        var disks = Store.ListDisks(vm.Id);
        var consumer = TrackingConsumer.ForReplication(vm.Id);
        var tracked = !forceResync && record.LastCycle > 0 && TrackingIntact(vm.Id, consumer, disks);
        var settings = JsonSerializer.Deserialize<ReplicationSettings>(record.Settings, ApiJson.Options)!;
        long dataBytes = 0, zeroBytes = 0, extents = 0;
        var waitsForWindow = false;
        try
        {
            // Where the replica really is decides the base. One cycle ahead of us: it committed a cycle whose
            // acknowledgement we lost (crash, cut connection); our changes since our last cycle are a superset of
            // what it lacks, so they apply on top of its point. Anything else: send the whole disk, zeroes included.
            var replicaLast = await replica.LastCycleAsync(vm.Id, ct)
                ?? throw HavenException.Conflict($"the replica server has no replica of VM '{vm.Name}'; enable replication again");
            if (replicaLast is < 0 or long.MaxValue) throw new InvalidDataException($"the replica server reported cycle {replicaLast} as its last");
            var baseCycle = record.LastCycle;
            if (replicaLast != record.LastCycle)
            {
                if (!(replicaLast == record.LastCycle + 1 && tracked)) tracked = false;
                baseCycle = replicaLast;
            }
            var cycle = baseCycle + 1;
            // Initial copy from an existing VM on the replica: compare, like a resync.
            var fromExisting = baseCycle == 0 && settings.InitialFromExisting;
            var skipZeroes = !tracked && baseCycle == 0 && !fromExisting; // a new replica's disks read as zeroes already
            // Tracking lost but the replica has a point: resynchronize, sending only the blocks whose hashes differ.
            if (!tracked && baseCycle > 0 && !forceResync && !settings.InResyncWindow(host.Time.GetUtcNow()))
            {
                // Not a failure: the scheduler waits for the window (ReplicationScheduler), the health says why.
                var why = $"VM '{vm.Name}' needs resynchronization (change tracking was lost); it runs automatically between " +
                    $"{settings.ResyncWindowStartHour:00}:00 and {settings.ResyncWindowEndHour:00}:00 UTC, or now with 'haven replication resync'";
                waitsForWindow = true;
                Store.Write(w => w.RecordResyncWaiting(vm.Id, why));
                throw HavenException.Conflict(why);
            }
            var diskSizes = disks.ConvertAll(d => d.SizeBytes);
            var theirs = !tracked && (baseCycle > 0 || fromExisting) ? await replica.HashBlocksAsync(vm.Id, diskSizes, ct) : null;
            // Checked before anything is read or sent: a replica's answer never exceeds what this VM's disks can have.
            if (theirs is not null) BlockHashes.Check(theirs, diskSizes);
            if (theirs is not null) await StepAsync("resync.after-hashes");
            var quiesce = settings.AppConsistentHours is not { } every || record.Statistics.LastAppConsistent is not { } lastApp
                || host.Time.GetUtcNow() - lastApp >= TimeSpan.FromHours(every);
            var (_, view) = await host.Backups.ReadPointInTimeAsync(vm, consumer, OperationKind, incremental: tracked, BlockSize, async view =>
            {
                // Every cycle carries the whole failover network: the replica always has the setting as of its latest point.
                var header = new ReplicaCycleHeader(cycle, baseCycle, diskSizes, host.Time.GetUtcNow(), view.Consistency, view.UefiVars)
                {
                    FailoverNetwork = settings.FailoverNetwork ?? [],
                };
                var committed = await replica.SendCycleAsync(vm.Id, header, ReadChangesAsync(view, skipZeroes, theirs, (d, z) =>
                {
                    dataBytes += d;
                    zeroBytes += z;
                    extents++;
                }, ct), ct);
                if (committed != cycle) throw new InvalidDataException($"the replica acknowledged cycle {committed}, not {cycle}");
                await StepAsync("replication.after-ack");
                return TrackingMark.OfCycle(cycle);
            }, ct, quiesce);
            Store.Write(w => w.RecordCycleSucceeded(vm.Id, cycle, dataBytes, clock.Elapsed, host.Time.GetUtcNow(), view.Consistency == Consistency.ApplicationConsistent));
            return new CycleResult(cycle, !tracked, view.Consistency, dataBytes, zeroBytes, extents, clock.Elapsed, Resync: theirs is not null);
        }
        catch (Exception e) when (e is not OperationCanceledException && !waitsForWindow)
        {
            Store.Write(w => w.RecordCycleFailed(vm.Id, e.Message.ReplaceLineEndings(" "), host.Time.GetUtcNow()));
            throw;
        }
    }

    /// <summary>Journal kind of a planned failover on the primary, between its last cycle and the roles recorded on both hosts.</summary>
    public const string PlannedFailoverOperation = "planned-failover";

    /// <summary>
    /// Planned failover from this (primary) side: the VM is shut down, a last cycle sends what is left (no
    /// data loss), the replica fails over to it and starts. With <paramref name="reverse"/> the roles swap:
    /// the replica replicates back, and this VM becomes its replica — from the same cycle, so only what
    /// changes from now on moves.
    /// <para>
    /// Two hosts change roles, so no single write can do it. After the last cycle a journal row (kind
    /// <see cref="PlannedFailoverOperation"/>) records the plan; while it stands the VM does not start and takes no
    /// cycle (a second running copy would be split brain). Each remote step is idempotent on the replica, so an
    /// interrupted failover is finished by running this again (havend does so by itself, see
    /// <see cref="InterruptedPlannedFailover"/>); the last local write swaps the role and deletes the row together.
    /// </para>
    /// <paramref name="replicaIdentity"/>: with <paramref name="reverse"/>, the identity (ReplicaAuthorization owner) that
    /// alone may send this VM cycles once it is the replica.
    /// </summary>
    public async Task<CycleResult> PlannedFailoverAsync(string vmName, IReplicaTarget replica, string replicaHostName, bool reverse, CancellationToken ct,
        int shutdownTimeoutSeconds = 60, string? reverseAddress = null, string? replicaIdentity = null)
    {
        var vm = host.Vms.Find(vmName);
        var record = Store.FindReplication(vm.Id) ?? throw HavenException.NotFound($"VM '{vm.Name}' is not replicated");
        await _plannedFailovers.WaitAsync(ct);
        try
        {
            CycleResult last;
            PlannedFailoverPlan plan;
            if (InterruptedPlannedFailover(vm.Id) is { } op)
            {
                plan = PlanJson.Read<PlannedFailoverPlan>(op.Payload);
                if (plan.Reverse != reverse)
                    throw HavenException.Conflict($"the interrupted planned failover of '{vm.Name}' was {(plan.Reverse ? "with" : "without")} --reverse; finish it the same way");
                host.Log.LogInformation("resuming the interrupted planned failover of VM {Vm} at cycle {Cycle}", vm.Name, plan.Cycle);
                last = new CycleResult(plan.Cycle, false, plan.Consistency, 0, 0, 0, TimeSpan.Zero);
            }
            else
            {
                // Before the VM goes down: a replica that could not start it on its failover network refuses now, with nothing changed.
                await replica.CheckFailoverAsync(vm.Id, JsonSerializer.Deserialize<ReplicationSettings>(record.Settings, ApiJson.Options)!.FailoverNetwork ?? [], ct);
                if (host.Runtimes.Get(vm.Id) is not null) await host.Vms.StopAsync(vm.Name, new VmStopRequest { TimeoutSeconds = shutdownTimeoutSeconds }, ct);
                last = await RunCycleAsync(vm.Name, replica, ct);
                plan = new PlannedFailoverPlan(last.Cycle, last.Consistency, reverse, replicaHostName, reverseAddress, ReplicaFailedOver: false);
                op = new OperationRecord(HostPaths.NewId(), vm.Id, PlannedFailoverOperation, PlanJson.Write(plan), host.Time.GetUtcNow());
                Store.Write(w => w.InsertOperation(op));
                await StepAsync("planned-failover.after-journal");
            }

            if (!plan.ReplicaFailedOver)
            {
                await replica.FailoverAsync(vm.Id, start: true, ct);
                await StepAsync("planned-failover.after-replica-failover");
                plan = plan with { ReplicaFailedOver = true };
                var payload = PlanJson.Write(plan);
                Store.Write(w => w.UpdateOperation(op.Id, payload));
            }
            if (!plan.Reverse)
            {
                Store.Write(w => w.DeleteOperation(op.Id));
                return last;
            }
            var settings = JsonSerializer.Deserialize<ReplicationSettings>(record.Settings, ApiJson.Options)!;
            var replicaVmId = await replica.ReverseAsync(vm.Id, plan.ReverseAddress ?? settings.PrimaryHostName ?? Environment.MachineName, settings, ct);
            await StepAsync("planned-failover.after-reverse");
            await using var _ = await host.LockVmAsync(vm.Id, ct);
            // This VM no longer replicates: its replication's change tracking goes with the row (a bitmap left by a crash
            // right after is swept at start, the VM being a replica then: Reconciler.SweepReplicaBitmapsAsync).
            await host.Tracking.DropAsync(vm.Id, TrackingConsumer.ForReplication(vm.Id), w =>
            {
                w.DeleteReplication(vm.Id);
                w.InsertReplica(new ReplicaRecord(vm.Id, plan.ReplicaHostName, replicaVmId, "", plan.Cycle, settings.AdditionalPoints, host.Time.GetUtcNow()));
                if (replicaIdentity is not null) w.SetReplicaIdentity(vm.Id, replicaIdentity);
                w.DeleteOperation(op.Id);
            }, ct);
            return last;
        }
        finally { _plannedFailovers.Release(); }
    }

    /// <summary>One planned failover at a time on this host: a user's rerun and havend's own resumption never interleave.</summary>
    private readonly SemaphoreSlim _plannedFailovers = new(1, 1);

    /// <summary>
    /// The journal row of a planned failover of this VM that started (its last cycle reached the replica) and has not
    /// finished; null when there is none.
    /// </summary>
    public OperationRecord? InterruptedPlannedFailover(string vmId)
        => Store.ListOperations().Find(o => o.VmId == vmId && o.Kind == PlannedFailoverOperation);

    /// <summary>Refuses what must wait while a planned failover of the VM is unfinished (starting it, a cycle).</summary>
    internal void CheckNoPlannedFailover(VmRecord vm, string what)
    {
        if (InterruptedPlannedFailover(vm.Id) is not null)
            throw HavenException.Conflict($"cannot {what} VM '{vm.Name}': its planned failover was interrupted and is not finished; "
                + $"run 'haven replication planned-failover {vm.Name}' again (havend also retries it every 30 s)");
    }

    /// <summary>
    /// This host's failed-over replica becomes the primary of reverse replication to <paramref name="newReplicaHost"/>:
    /// it stops being a replica (its recovery points stay, as ordinary checkpoints) and replicates from the
    /// cycle it failed over to, with the change tracking the failover started. Returns the VM's id here.
    /// <paramref name="callerThumbprint"/> (the old primary's client certificate over mTLS) is pinned as the replica's
    /// certificate: only the caller itself can receive the reverse cycles, at whatever address it named.
    /// </summary>
    public async Task<string> AdoptReverseAsync(string vmName, string newReplicaHost, string? callerThumbprint, ReplicationSettings settings, CancellationToken ct)
    {
        settings.Validate(host.Time.GetUtcNow());
        var vm = host.Vms.Find(vmName);
        await using var _ = await host.LockVmAsync(vm.Id, ct);
        var replica = Store.FindReplica(vm.Id) ?? throw HavenException.NotFound($"VM '{vm.Name}' is not a replica");
        if (replica.State != ReplicaState.FailedOver) throw HavenException.Conflict($"'{vm.Name}' is not failed over");
        var cycle = host.Tracking.PointsOf(vm.Id, TrackingConsumer.ForReplication(vm.Id)).FirstOrDefault()?.Mark.Cycle
            ?? throw HavenException.Conflict($"'{vm.Name}' has no change tracking from its failover");
        Store.Write(w =>
        {
            w.DeleteReplica(vm.Id);
            // The new replica is the caller: pinned to its certificate, whatever address it named.
            // No failover network: failing back puts the old primary's VM on its own bridges, as it had them.
            var reverse = settings with
            {
                PrimaryHostName = null, ReplicaName = null, ReplicaThumbprint = callerThumbprint, ReversedFromVmId = replica.PrimaryVmId, FailoverNetwork = null,
            };
            w.InsertReplication(new ReplicationRecord(vm.Id, newReplicaHost, JsonSerializer.Serialize(reverse, ApiJson.Options), cycle));
        });
        return vm.Id;
    }

    /// <summary>
    /// The VM that already replicates back to the caller after reversing the replica of <paramref name="primaryVmId"/>
    /// (the caller's VM id), pinned to <paramref name="callerThumbprint"/>; null when there is none. A primary whose planned
    /// failover was interrupted after the reverse asks again: it gets the same answer, and nobody else gets one.
    /// </summary>
    public string? FindReversed(string primaryVmId, string? callerThumbprint)
        => Store.ListReplications().Find(r => JsonSerializer.Deserialize<ReplicationSettings>(r.Settings, ApiJson.Options) is { } s
            && s.ReversedFromVmId == primaryVmId && s.ReplicaThumbprint == callerThumbprint)?.VmId;

    /// <summary>A VM's replication as Hyper-V's "replication health" shows it, from whichever side this host is.</summary>
    public async Task<ReplicationStatusInfo> StatusAsync(string vmName, CancellationToken ct)
    {
        var vm = host.Vms.Find(vmName);
        var now = host.Time.GetUtcNow();
        var extended = Store.FindReplica(vm.Id) is not null ? Store.FindReplication(vm.Id) : null;
        if (extended is null && Store.FindReplication(vm.Id) is { } r)
        {
            var settings = JsonSerializer.Deserialize<ReplicationSettings>(r.Settings, ApiJson.Options)!;
            var stats = r.Statistics;
            var (health, why) = ReplicationHealth.OfPrimary(stats, settings.FrequencySeconds, r.LastCycle, now);
            return new ReplicationStatusInfo
            {
                Vm = vm.Name, Role = "primary", Partner = r.Target, ReplicaThumbprint = settings.ReplicaThumbprint, Health = health.ToString(), HealthReason = why, State = "Replicating",
                FrequencySeconds = settings.FrequencySeconds, LastCycle = r.LastCycle,
                SuccessfulCycles = stats.SuccessfulCycles, FailedCycles = stats.FailedCycles, MissedCycles = stats.MissedCycles,
                AverageBytes = stats.SuccessfulCycles == 0 ? 0 : stats.TotalBytes / stats.SuccessfulCycles, MaxBytes = stats.MaxBytes,
                AverageSeconds = stats.SuccessfulCycles == 0 ? 0 : stats.TotalSeconds / stats.SuccessfulCycles, MaxSeconds = stats.MaxSeconds,
                PendingBytes = await PendingBytesAsync(vm.Id, ct), LastSuccess = stats.LastSuccess, LastError = stats.LastError,
                FailoverNetwork = settings.FailoverNetwork is { Count: > 0 } map ? map : null,
            };
        }
        if (Store.FindReplica(vm.Id) is { } replica)
        {
            var points = Store.ListReplicaPoints(vm.Id);
            var (health, why) = ReplicationHealth.OfReplica(replica, points.Count == 0 ? null : points[^1].PointTime, now);
            return new ReplicationStatusInfo
            {
                Vm = vm.Name, Role = "replica", Partner = replica.PrimaryHost, Health = health.ToString(), HealthReason = why, State = replica.State.ToString(),
                LastCycle = replica.LastCycle, LastSuccess = points.Count == 0 ? null : points[^1].PointTime, LastTestFailover = replica.LastTestFailover,
                RecoveryPoints = points.ConvertAll(p => new RecoveryPointInfo { Cycle = p.Cycle, PointInTime = p.PointTime, Consistency = p.Consistency }),
                ExtendedTo = extended?.Target,
                ReplicaThumbprint = extended is null ? null : JsonSerializer.Deserialize<ReplicationSettings>(extended.Settings, ApiJson.Options)!.ReplicaThumbprint,
                ExtendedLastCycle = extended?.LastCycle,
                FailoverNetwork = host.Replicas.FailoverNetworkOf(vm.Id),
            };
        }
        throw HavenException.NotFound($"VM '{vm.Name}' is not replicated");
    }

    /// <summary>Every VM this host replicates or keeps as a replica (the replica server's overview), by name.</summary>
    public async Task<List<ReplicationStatusInfo>> StatusOfAllAsync(CancellationToken ct)
    {
        var list = new List<ReplicationStatusInfo>();
        foreach (var vm in Store.ListVms())
            if (Store.FindReplication(vm.Id) is not null || Store.FindReplica(vm.Id) is not null)
                list.Add(await StatusAsync(vm.Name, ct));
        return list;
    }

    /// <summary>Bytes written since the last cycle: the dirty count of the cycle's bitmaps, when the VM runs.</summary>
    private async Task<long?> PendingBytesAsync(string vmId, CancellationToken ct)
    {
        if (host.Runtimes.Get(vmId) is not { } qemu) return null;
        long total = 0;
        foreach (var rp in host.Tracking.PointsOf(vmId, TrackingConsumer.ForReplication(vmId)))
        {
            var bitmap = (await Qemu.Runtime.DirtyBitmaps.ListAsync(qemu.Qmp, "l" + rp.LayerId, ct)).Find(b => b.Name == rp.Bitmap);
            if (bitmap is null || bitmap.DirtyBytes < 0) return null;
            total += bitmap.DirtyBytes;
        }
        return total;
    }

    /// <summary>
    /// Pins the replica server's certificate (its SHA-256 thumbprint) for a VM's replication, or the third host's for an
    /// extended one: the explicit step after a replica legitimately changed its certificate. Returns the previous pin.
    /// </summary>
    public async Task<string?> PinReplicaAsync(string vmName, string thumbprint, CancellationToken ct)
    {
        if (ThumbprintProblem(thumbprint) is { } problem) throw HavenException.Invalid(problem);
        var vm = host.Vms.Find(vmName);
        await using var _ = await host.LockVmAsync(vm.Id, ct);
        var record = Store.FindReplication(vm.Id) ?? throw HavenException.NotFound($"VM '{vm.Name}' is not replicated");
        var settings = JsonSerializer.Deserialize<ReplicationSettings>(record.Settings, ApiJson.Options)!;
        Store.Write(w => w.SetReplicationSettings(vm.Id, JsonSerializer.Serialize(settings with { ReplicaThumbprint = thumbprint.ToUpperInvariant() }, ApiJson.Options)));
        return settings.ReplicaThumbprint;
    }

    /// <summary>
    /// Changes a replication's settings (primary side; an extended replication's on the replica host): the failover network,
    /// checked against the VM's NICs. The replica gets it with the next cycle.
    /// </summary>
    public async Task<ReplicationSettings> SetAsync(string vmName, ReplicationSetRequest req, CancellationToken ct)
    {
        var vm = host.Vms.Find(vmName);
        await using var _ = await host.LockVmAsync(vm.Id, ct);
        vm = Store.FindVm(vm.Id)!;
        var record = Store.FindReplication(vm.Id) ?? throw HavenException.NotFound($"VM '{vm.Name}' is not replicated");
        var settings = JsonSerializer.Deserialize<ReplicationSettings>(record.Settings, ApiJson.Options)!;
        if (req.FailoverNetwork is { } map)
        {
            FailoverNetworkMap.Validate(map, vm.Hardware, vm.Name);
            settings = settings with { FailoverNetwork = map.Count == 0 ? null : new Dictionary<string, string>(map) };
        }
        Store.Write(w => w.SetReplicationSettings(vm.Id, JsonSerializer.Serialize(settings, ApiJson.Options)));
        host.Log.LogInformation("replication of VM {Vm}: failover network {Map}", vm.Name, FailoverNetworkMap.Format(settings.FailoverNetwork) ?? "none");
        return settings;
    }

    /// <summary>Why <paramref name="thumbprint"/> is not a SHA-256 certificate thumbprint (64 hex digits), or null.</summary>
    public static string? ThumbprintProblem(string thumbprint) =>
        thumbprint.Length == 64 && thumbprint.All(char.IsAsciiHexDigit) ? null
            : $"a certificate thumbprint is 64 hex digits (SHA-256, as 'haven host certificate' shows it), not '{thumbprint}'";

    /// <summary>Replication off (primary side): the record goes; the replica keeps its points until removed there.</summary>
    public async Task DisableAsync(string vmName, CancellationToken ct)
    {
        var vm = host.Vms.Find(vmName);
        await using var _ = await host.LockVmAsync(vm.Id, ct);
        if (Store.FindReplication(vm.Id) is null) throw HavenException.NotFound($"VM '{vm.Name}' is not replicated");
        // A primary's bitmaps would only cost write overhead from now on. A replica (extended replication) keeps the
        // tracking its failover started: reverse replication needs it.
        if (Store.FindReplica(vm.Id) is null) await host.Tracking.DropAsync(vm.Id, TrackingConsumer.ForReplication(vm.Id), w => w.DeleteReplication(vm.Id), ct);
        else Store.Write(w => w.DeleteReplication(vm.Id));
    }

    /// <summary>Cycles that were due and did not start (the previous one still ran, or the host was down): added in place.</summary>
    public void CountMissed(string vmId, long count = 1)
    {
        if (count > 0) Store.Write(w => w.AddMissedCycles(vmId, count));
    }

    public ReplicationStatistics StatisticsOf(string vmName)
    {
        var vm = host.Vms.Find(vmName);
        var record = Store.FindReplication(vm.Id) ?? throw HavenException.NotFound($"VM '{vm.Name}' is not replicated");
        return record.Statistics;
    }

    /// <summary>
    /// Every disk still has the tracking point of the last cycle, on its current layer, and (VM off) nothing
    /// wrote to the layer file behind Haven's back. Any doubt means a full copy: never a missed change.
    /// </summary>
    private bool TrackingIntact(string vmId, TrackingConsumer consumer, List<DiskRecord> disks)
    {
        if (host.Tracking.Doubt(vmId, consumer, disks, vmOff: host.Runtimes.Get(vmId) is null) is not { } doubt) return true;
        host.Log.LogInformation("replication of VM {Vm} cannot use its change tracking: {Reason}", vmId, doubt);
        return false;
    }

    /// <summary>
    /// The changed blocks of every disk as extents: runs of data up to <see cref="MaxDataExtent"/>, runs of
    /// zeroes up to <see cref="ReplicaService.MaxExtentBytes"/> (<see cref="BlockRuns"/>), read several at a time ahead of
    /// the sender. The initial copy skips zeroes (the replica's new disks read as zeroes already); a full resend onto an
    /// existing replica includes them. An extent's data is only valid until the next one is asked for.
    /// </summary>
    private static async IAsyncEnumerable<ReplicaExtent> ReadChangesAsync(PointInTimeView view, bool skipZeroes, byte[][]? theirs, Action<long, long> sent,
        [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct)
    {
        var mine = new byte[BlockHashes.HashSize];
        foreach (var d in view.Disks)
        {
            var contexts = d.DirtyContext is null ? new List<string> { "base:allocation" } : ["base:allocation", d.DirtyContext];
            await using var nbd = await NbdClient.ConnectAsync(d.Endpoint, d.Export, contexts, ct);
            var plan = await ChunkPlan.BuildAsync(nbd, BlockSize, d.DirtyContext, ct);
            var hashes = theirs?[d.Disk];
            if (hashes is not null && hashes.Length != (long)plan.ChunkCount * BlockHashes.HashSize)
                throw new InvalidDataException($"the replica hashed {hashes.Length / BlockHashes.HashSize} blocks of disk {d.Disk}, this disk has {plan.ChunkCount}");
            bool Same(int block, ReadOnlySpan<byte> hash) => hashes is not null && hash.SequenceEqual(hashes.AsSpan(block * BlockHashes.HashSize, BlockHashes.HashSize));
            // Zero blocks: all of them unless the initial copy (none) or a resync (those the replica does not have as zeroes).
            Func<int, bool>? wanted = skipZeroes ? i => !plan.Zero[i]
                : hashes is null ? null
                : i => !plan.Zero[i] || !Same(i, BlockHashes.Zero(plan.ChunkLength(i)));
            await foreach (var (run, data) in BlockRuns.ReadAsync(nbd, BlockRuns.Of(plan, wanted), ct))
            {
                if (!run.IsData)
                {
                    sent(0, run.Length);
                    yield return new ReplicaExtent(d.Disk, run.Offset, run.Length, null);
                    continue;
                }
                if (hashes is null)
                {
                    sent(run.Length, 0);
                    yield return new ReplicaExtent(d.Disk, run.Offset, run.Length, data);
                    continue;
                }
                // Resync: within what was read, send only the runs of blocks the replica has otherwise.
                var b = run.FirstBlock;
                while (b < run.EndBlock)
                {
                    if (SameAt(b)) { b++; continue; }
                    var from = b;
                    do b++; while (b < run.EndBlock && !SameAt(b));
                    var at = (from - run.FirstBlock) * BlockSize;
                    var length = (int)(Math.Min(plan.DiskSize, (long)b * BlockSize) - (long)from * BlockSize);
                    sent(length, 0);
                    yield return new ReplicaExtent(d.Disk, (long)from * BlockSize, length, data.Slice(at, length));
                }
                bool SameAt(int block)
                {
                    XxHash(data.Span.Slice((block - run.FirstBlock) * BlockSize, plan.ChunkLength(block)), mine);
                    return Same(block, mine);
                }
            }
        }
    }

    private static void XxHash(ReadOnlySpan<byte> data, Span<byte> into) => System.IO.Hashing.XxHash128.Hash(data, into);
}

/// <summary>Where a primary's cycles go: the replica server (over the network), or another host in the same process in tests.</summary>
public interface IReplicaTarget
{
    /// <summary>Creates the replica VM if it does not exist yet; returns the last cycle it has committed.</summary>
    Task<long> EnsureReplicaAsync(ReplicaCreateSpec spec, CancellationToken ct);

    /// <summary>The last cycle the replica of <paramref name="primaryVmId"/> committed, or null when there is no replica.</summary>
    Task<long?> LastCycleAsync(string primaryVmId, CancellationToken ct);

    /// <summary>
    /// The replica's block hashes of its latest point, per disk (<see cref="BlockHashes"/>), for resynchronization.
    /// <paramref name="diskSizes"/> are the primary's disks: a network target holds no more than they have blocks.
    /// </summary>
    Task<byte[][]> HashBlocksAsync(string primaryVmId, IReadOnlyList<long> diskSizes, CancellationToken ct);

    /// <summary>Sends one cycle; returns the cycle number the replica committed (the header's, on success).</summary>
    Task<long> SendCycleAsync(string primaryVmId, ReplicaCycleHeader header, IAsyncEnumerable<ReplicaExtent> extents, CancellationToken ct);

    /// <summary>Fails the replica over to its latest recovery point (planned failover: after the last cycle).</summary>
    Task FailoverAsync(string primaryVmId, bool start, CancellationToken ct);

    /// <summary>
    /// Refuses (one line) when the replica could not fail over and start with <paramref name="failoverNetwork"/> (a bridge
    /// missing on its host); changes nothing. Planned failover asks before it shuts the VM down.
    /// </summary>
    Task CheckFailoverAsync(string primaryVmId, IReadOnlyDictionary<string, string>? failoverNetwork, CancellationToken ct);

    /// <summary>
    /// Reverse replication: the failed-over replica becomes the primary, replicating back to
    /// <paramref name="newReplicaHost"/> (this caller) from the cycle both sides hold.
    /// </summary>
    Task<string> ReverseAsync(string primaryVmId, string newReplicaHost, ReplicationSettings settings, CancellationToken ct);
}

/// <summary>A replica host reached directly (same process): what the network service does on the replica, without the network.</summary>
public sealed class LocalReplicaTarget(HavenHost replicaHost, string primaryHost, string trustGroup) : IReplicaTarget
{
    public async Task<long> EnsureReplicaAsync(ReplicaCreateSpec spec, CancellationToken ct)
    {
        var existing = replicaHost.Replicas.FindByPrimary(primaryHost, spec.PrimaryVmId);
        if (existing is not null) return existing.LastCycle;
        var created = await replicaHost.Replicas.CreateAsync(spec with { PrimaryHost = primaryHost, TrustGroup = trustGroup }, ct);
        return created.LastCycle;
    }

    public Task<long?> LastCycleAsync(string primaryVmId, CancellationToken ct)
        => Task.FromResult(replicaHost.Replicas.FindByPrimary(primaryHost, primaryVmId)?.LastCycle);

    public async Task<byte[][]> HashBlocksAsync(string primaryVmId, IReadOnlyList<long> diskSizes, CancellationToken ct)
    {
        var replica = replicaHost.Replicas.FindByPrimary(primaryHost, primaryVmId)
            ?? throw HavenException.NotFound($"no replica of {primaryHost}'s VM {primaryVmId} on this host");
        return await replicaHost.Replicas.HashLatestAsync(replica.VmId, ct);
    }

    public async Task<long> SendCycleAsync(string primaryVmId, ReplicaCycleHeader header, IAsyncEnumerable<ReplicaExtent> extents, CancellationToken ct)
    {
        var replica = replicaHost.Replicas.FindByPrimary(primaryHost, primaryVmId)
            ?? throw HavenException.NotFound($"no replica of {primaryHost}'s VM {primaryVmId} on this host");
        var point = await replicaHost.Replicas.ApplyCycleAsync(replica.VmId, header, extents, ct);
        return point.Cycle;
    }

    public async Task FailoverAsync(string primaryVmId, bool start, CancellationToken ct)
        => await replicaHost.Replicas.FailoverForPrimaryAsync(Name(primaryVmId), start, ct);

    public Task CheckFailoverAsync(string primaryVmId, IReadOnlyDictionary<string, string>? failoverNetwork, CancellationToken ct)
    {
        replicaHost.Replicas.CheckFailover(Name(primaryVmId), failoverNetwork);
        return Task.CompletedTask;
    }

    public async Task<string> ReverseAsync(string primaryVmId, string newReplicaHost, ReplicationSettings settings, CancellationToken ct)
        => replicaHost.Replicas.FindByPrimary(primaryHost, primaryVmId) is null && replicaHost.Replications.FindReversed(primaryVmId, null) is { } done
            ? done
            : await replicaHost.Replications.AdoptReverseAsync(Name(primaryVmId), newReplicaHost, null, settings, ct);

    private string Name(string primaryVmId)
    {
        var replica = replicaHost.Replicas.FindByPrimary(primaryHost, primaryVmId)
            ?? throw HavenException.NotFound($"no replica of {primaryHost}'s VM {primaryVmId} on this host");
        return replicaHost.Store.FindVm(replica.VmId)!.Name;
    }
}

/// <summary>How a VM is replicated (Hyper-V's choices, and shorter frequencies where the engine allows).</summary>
public sealed record ReplicationSettings
{
    /// <summary>Seconds between cycles: 30, 300 or 900 as Hyper-V offers, or any value down to 5.</summary>
    public int FrequencySeconds { get; init; } = 300;
    /// <summary>Hourly recovery points kept besides the latest: 0..24.</summary>
    public int AdditionalPoints { get; init; }
    /// <summary>Name this host goes by on the replica (its certificate's name); default: the machine name.</summary>
    public string? PrimaryHostName { get; init; }
    /// <summary>Compress changed blocks on the wire (zstd).</summary>
    public bool Compression { get; init; }
    /// <summary>The replica server's expected certificate name, when given.</summary>
    public string? ReplicaName { get; init; }
    /// <summary>
    /// The replica server's certificate pinned for this replication (SHA-256 thumbprint, upper-case hex): recorded when
    /// replication is enabled (or reversed: the caller's), checked in every TLS handshake; any other certificate is
    /// refused, even a trusted one. Changed only by an explicit re-pin. Null: not contacted yet (export initial copy).
    /// </summary>
    public string? ReplicaThumbprint { get; init; }
    /// <summary>Reverse replication: the old primary's VM id (now this VM's replica), so a repeated reverse request finds it.</summary>
    public string? ReversedFromVmId { get; init; }
    /// <summary>When to start the initial replication; null: at once.</summary>
    public DateTimeOffset? StartAt { get; init; }
    /// <summary>Extended replication: this host is a replica and sends its recovery points on to a third host.</summary>
    public bool Extended { get; init; }
    /// <summary>The initial replication compares with a VM of the same name already on the replica host (an existing copy).</summary>
    public bool InitialFromExisting { get; init; }
    /// <summary>The initial copy travels on external media: no network cycle until it is there (the scheduler waits).</summary>
    public bool InitialByExport { get; init; }
    /// <summary>
    /// Hours between app-consistent points (guest frozen through qemu-ga), 1–12, as Hyper-V offers when additional
    /// recovery points are kept; cycles in between are crash-consistent and do not disturb the guest. Null: every cycle
    /// is app-consistent when the guest agent answers.
    /// </summary>
    public int? AppConsistentHours { get; init; }
    /// <summary>Automatic resynchronization only between these UTC hours (end exclusive, may wrap); null: any time.</summary>
    public int? ResyncWindowStartHour { get; init; }
    public int? ResyncWindowEndHour { get; init; }
    /// <summary>
    /// Failover network (<see cref="FailoverNetworkMap"/>): a bridge NIC's name to the replica host's bridge it
    /// uses when failed over. Sent with every cycle; null or empty: none.
    /// </summary>
    public Dictionary<string, string>? FailoverNetwork { get; init; }

    public bool InResyncWindow(DateTimeOffset now)
    {
        if (ResyncWindowStartHour is not { } start || ResyncWindowEndHour is not { } end) return true;
        var h = now.UtcDateTime.Hour;
        return start <= end ? h >= start && h < end : h >= start || h < end;
    }

    /// <summary>When automatic resynchronization may run next: <paramref name="now"/> inside the window (or without one), else the window's next start.</summary>
    public DateTimeOffset ResyncWindowOpensAt(DateTimeOffset now)
    {
        if (InResyncWindow(now)) return now;
        var day = now.UtcDateTime.Date;
        var start = new DateTimeOffset(day.AddHours(ResyncWindowStartHour!.Value), TimeSpan.Zero);
        return start > now ? start : start.AddDays(1);
    }

    /// <param name="now">The host's clock: the initial copy may be scheduled up to 7 days after it.</param>
    public void Validate(DateTimeOffset now)
    {
        if (FrequencySeconds is < 5 or > 86400) throw HavenException.Invalid("replication frequency must be 5 s .. 24 h");
        if (AdditionalPoints is < 0 or > 24) throw HavenException.Invalid("additional recovery points must be 0..24");
        if (StartAt is { } at && at > now.AddDays(7)) throw HavenException.Invalid("the initial replication can be scheduled up to 7 days ahead");
        if (AppConsistentHours is < 1 or > 12) throw HavenException.Invalid("app-consistent points are 1..12 hours apart");
        if ((ResyncWindowStartHour is null) != (ResyncWindowEndHour is null) || ResyncWindowStartHour is < 0 or > 23 || ResyncWindowEndHour is < 0 or > 23
            || (ResyncWindowStartHour is not null && ResyncWindowStartHour == ResyncWindowEndHour))
            throw HavenException.Invalid("a resync window needs a start and a different end hour, 0..23 UTC");
    }
}

/// <summary>The journal of a planned failover on the primary: the last cycle and how far the replica got.</summary>
public sealed record PlannedFailoverPlan(long Cycle, Consistency Consistency, bool Reverse, string ReplicaHostName, string? ReverseAddress, bool ReplicaFailedOver);

public sealed record CycleResult(long Cycle, bool Full, Consistency Consistency, long DataBytes, long ZeroBytes, long Extents, TimeSpan Elapsed, bool Resync = false);
