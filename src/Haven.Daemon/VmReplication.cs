using System.Collections.Concurrent;
using System.Text.Json;
using Haven.Api;
using Haven.Host;
using Haven.Host.Replication;
using Haven.Replication;

namespace Haven.Daemon;

/// <summary>
/// Replication of this host's VMs as havend runs it: the network targets (one mTLS channel per replica
/// server), the HTTP routes of both sides, and the scheduler that starts each VM's cycles at its frequency.
/// </summary>
public sealed class VmReplication(HavenHost host, ReplicaEndpoint endpoint) : IDisposable
{
    private readonly ConcurrentDictionary<(string, string?, bool, string?), GrpcReplicaTarget> _targets = new();

    /// <summary>The channel to a replica server, accepting only the certificate pinned in <paramref name="settings"/> (when pinned).</summary>
    public IReplicaTarget TargetFor(string address, ReplicationSettings settings)
        => _targets.GetOrAdd((address, settings.ReplicaName, settings.Compression, settings.ReplicaThumbprint),
            k => new GrpcReplicaTarget(endpoint, k.Item1, k.Item2, k.Item3, k.Item4));

    /// <summary>
    /// A VM's replication target, pinned to the replica's certificate. A replication that has not reached its replica
    /// yet (an exported initial copy; a record from before pinning) pins the certificate it meets at this first contact.
    /// </summary>
    public async Task<IReplicaTarget> TargetOfAsync(string vmName, CancellationToken ct)
    {
        var vm = host.Vms.Find(vmName);
        var record = host.Store.FindReplication(vm.Id) ?? throw HavenException.NotFound($"VM '{vm.Name}' is not replicated");
        var settings = Settings(record);
        if (settings.ReplicaThumbprint is null)
        {
            var (_, thumbprint) = await IdentifyAsync(record.Target, settings.ReplicaName, ct);
            await host.Replications.PinReplicaAsync(vm.Name, thumbprint, ct);
            settings = settings with { ReplicaThumbprint = thumbprint };
        }
        return TargetFor(record.Target, settings);
    }

    /// <summary>
    /// Who answers at <paramref name="address"/> now, over a new connection (trusted, and for <paramref name="expectedName"/>
    /// when given): the name and thumbprint of the certificate the TLS handshake proved.
    /// </summary>
    public async Task<(string Name, string Thumbprint)> IdentifyAsync(string address, string? expectedName, CancellationToken ct)
    {
        using var probe = new GrpcReplicaTarget(endpoint, address, expectedName, compression: false);
        return await probe.IdentifyAsync(ct);
    }

    /// <summary>One cycle now: a primary's, or an extended one when this VM is a replica sent on to a third host.</summary>
    public async Task<CycleResult> RunCycleAsync(string vmName, CancellationToken ct)
    {
        var vm = host.Vms.Find(vmName);
        var record = host.Store.FindReplication(vm.Id) ?? throw HavenException.NotFound($"VM '{vm.Name}' is not replicated");
        var target = await TargetOfAsync(vm.Name, ct);
        return Settings(record).Extended ? await host.Extended.RunCycleAsync(vm.Name, target, ct) : await host.Replications.RunCycleAsync(vm.Name, target, ct);
    }

    /// <summary>
    /// Planned failover to the VM's replica (see ReplicationService.PlannedFailoverAsync), or the rest of one that was
    /// interrupted: the same call finishes it.
    /// </summary>
    public async Task<CycleResult> PlannedFailoverAsync(string vmName, bool reverse, int shutdownTimeoutSeconds, CancellationToken ct)
    {
        var vm = host.Vms.Find(vmName);
        if (host.Store.FindReplication(vm.Id) is null) throw HavenException.NotFound($"VM '{vm.Name}' is not replicated");
        if (reverse && endpoint.Settings.Listen is null)
            throw HavenException.Conflict("reverse replication needs this host's replica server enabled (haven replica-server enable)");
        var target = (GrpcReplicaTarget)await TargetOfAsync(vm.Name, ct);
        // The name the pinned certificate carries, not the one the replica reports: it becomes the primary this host accepts,
        // and only that certificate may send this VM cycles once it is the replica.
        var (replicaHost, _) = await target.IdentifyAsync(ct);
        var identity = reverse && target.ReplicaThumbprint is { } thumbprint
            ? ReplicaAuthorization.OwnerOf(new PeerCredential(replicaHost, thumbprint, []), null)
            : null;
        return await host.Replications.PlannedFailoverAsync(vm.Name, target, replicaHost, reverse, ct,
            shutdownTimeoutSeconds: shutdownTimeoutSeconds, reverseAddress: endpoint.Settings.Listen, replicaIdentity: identity);
    }

    /// <summary>
    /// Finishes the planned failovers a crash interrupted (their journal rows; the Reconciler leaves them, since their
    /// remaining steps are on the replica). Failures are logged and retried on the next call.
    /// </summary>
    public async Task ResumePlannedFailoversAsync(CancellationToken ct)
    {
        foreach (var op in host.Store.ListOperations().FindAll(o => o.Kind == ReplicationService.PlannedFailoverOperation))
        {
            if (host.Store.FindVm(op.VmId) is not { } vm) continue;
            var plan = Haven.Host.Checkpoints.PlanJson.Read<PlannedFailoverPlan>(op.Payload);
            try { await host.RunOperationAsync("planned failover (resumed)", vm.Name, () => PlannedFailoverAsync(vm.Name, plan.Reverse, 0, ct)); }
            catch (Exception) when (!ct.IsCancellationRequested) { } // logged by RunOperationAsync; tried again later
        }
    }

    /// <summary>
    /// The settings with the replica's certificate to pin: the one the user gave, or the one the replica server at
    /// <paramref name="address"/> presents now (it must be trusted, and carry the expected name when one is given).
    /// </summary>
    private async Task<ReplicationSettings> PinnedAsync(string address, ReplicationSettings settings, CancellationToken ct)
    {
        if (settings.ReplicaThumbprint is not null) return settings;
        var (_, thumbprint) = await IdentifyAsync(address, settings.ReplicaName, ct);
        return settings with { ReplicaThumbprint = thumbprint };
    }

    public static ReplicationSettings Settings(Haven.Host.State.ReplicationRecord r)
        => JsonSerializer.Deserialize<ReplicationSettings>(r.Settings, ApiJson.Options)!;

    public static void Map(RouteGroupBuilder v1)
    {
        // Primary side.
        v1.MapPost("/vms/{name}/replication", async (HavenHost h, VmReplication r, ReplicaEndpoint e, string name, ReplicationEnableRequest req, CancellationToken ct) =>
        {
            var settings = SettingsOf(req, e.Identity.Name, extended: false);
            settings.Validate(h.Time.GetUtcNow());
            switch (req.Initial)
            {
                case "network" or "existing":
                    settings = await r.PinnedAsync(req.Replica, settings, ct);
                    await h.Replications.EnableAsync(name, req.Replica, settings, r.TargetFor(req.Replica, settings), ct);
                    break;
                case "export":
                    if (string.IsNullOrWhiteSpace(req.ExportFolder)) throw HavenException.Invalid("an exported initial copy needs a folder");
                    // The first cycle goes to the folder now; later cycles go to the replica server once it has imported it.
                    var media = new FolderReplicaTarget(Path.GetFullPath(req.ExportFolder), e.Identity.Certificate);
                    await h.Replications.EnableAsync(name, req.Replica, settings, media, ct);
                    await h.Replications.RunCycleAsync(name, media, ct);
                    break;
                default:
                    throw HavenException.Invalid($"the initial replication is network, export or existing, not '{req.Initial}'");
            }
            return await h.Replications.StatusAsync(name, ct);
        });
        v1.MapGet("/vms/{name}/replication", (HavenHost h, string name, CancellationToken ct) => h.Replications.StatusAsync(name, ct));
        v1.MapPatch("/vms/{name}/replication", async (HavenHost h, string name, ReplicationSetRequest req, CancellationToken ct) =>
        {
            await h.Replications.SetAsync(name, req, ct);
            return await h.Replications.StatusAsync(name, ct);
        });
        v1.MapGet("/replication", (HavenHost h, CancellationToken ct) => h.Replications.StatusOfAllAsync(ct));
        v1.MapPost("/replication/import", async (HavenHost h, ReplicaEndpoint e, ReplicationImportRequest req, CancellationToken ct) =>
        {
            // The folder is signed by the primary's host key: its certificate must be trusted here and pass the
            // authorization entries exactly as over the network, and the replica is bound to that identity.
            var replica = await h.Replicas.ImportAsync(Path.GetFullPath(req.Folder), signer =>
            {
                if (e.Trust.Identify(signer, out var error) is not { } peer)
                    return new ImportDecision(false, "the export folder's signer is refused: " + error);
                var decision = e.Settings.Decide(peer);
                return new ImportDecision(decision.Allowed, decision.Reason, peer.Name, decision.Owner, decision.TrustGroup, decision.Storage);
            }, ct);
            return await h.Replications.StatusAsync(h.Store.FindVm(replica.VmId)!.Name, ct);
        });
        v1.MapDelete("/vms/{name}/replication", async (HavenHost h, string name, CancellationToken ct) =>
        {
            await h.Replications.DisableAsync(name, ct);
            return Results.NoContent();
        });
        v1.MapPost("/vms/{name}/replication/cycle", async (HavenHost h, VmReplication r, string name, CancellationToken ct) =>
            ToApi(await r.RunCycleAsync(name, ct)));
        v1.MapPost("/vms/{name}/replication/resync", async (HavenHost h, VmReplication r, string name, CancellationToken ct) =>
            ToApi(await h.Replications.RunCycleAsync(name, await r.TargetOfAsync(name, ct), ct, forceResync: true)));
        // Re-pinning the replica's certificate is always this explicit step: with a thumbprint given, that one; without,
        // the certificate the replica server presents now (trusted, with the expected name).
        v1.MapPost("/vms/{name}/replication/repin", async (HavenHost h, VmReplication r, string name, ReplicationRepinRequest req, CancellationToken ct) =>
        {
            var vm = h.Vms.Find(name);
            var record = h.Store.FindReplication(vm.Id) ?? throw HavenException.NotFound($"VM '{vm.Name}' is not replicated");
            var thumbprint = req.Thumbprint ?? (await r.IdentifyAsync(record.Target, Settings(record).ReplicaName, ct)).Thumbprint;
            await h.Replications.PinReplicaAsync(vm.Name, thumbprint, ct);
            return await h.Replications.StatusAsync(vm.Name, ct);
        });
        // Replica side: extended replication of a replica VM to a third host.
        v1.MapPost("/vms/{name}/replication/extend", async (HavenHost h, VmReplication r, ReplicaEndpoint e, string name, ReplicationEnableRequest req, CancellationToken ct) =>
        {
            var settings = await r.PinnedAsync(req.Replica, SettingsOf(req, e.Identity.Name, extended: true), ct);
            await h.Extended.EnableAsync(name, req.Replica, settings, r.TargetFor(req.Replica, settings), ct);
            return await h.Replications.StatusAsync(name, ct);
        });
        v1.MapPost("/vms/{name}/replication/planned-failover", async (VmReplication r, string name, PlannedFailoverRequest req, CancellationToken ct) =>
            ToApi(await r.PlannedFailoverAsync(name, req.Reverse, req.ShutdownTimeoutSeconds, ct)));

        // Replica side.
        v1.MapPost("/vms/{name}/replication/test-failover", (HavenHost h, string name, ReplicaFailoverRequest req, CancellationToken ct) =>
            h.Replicas.TestFailoverAsync(name, req.Cycle, req.Start, ct));
        v1.MapDelete("/vms/{name}/replication/test-failover", async (HavenHost h, string name, CancellationToken ct) =>
        {
            await h.Replicas.StopTestFailoverAsync(name, ct);
            return Results.NoContent();
        });
        v1.MapPost("/vms/{name}/replication/failover", (HavenHost h, string name, ReplicaFailoverRequest req, CancellationToken ct) =>
            h.Replicas.FailoverAsync(name, req.Cycle, req.Start, ct));
        v1.MapPost("/vms/{name}/replication/failover/cancel", async (HavenHost h, string name, CancellationToken ct) =>
        {
            await h.Replicas.CancelFailoverAsync(name, ct);
            return await h.Replications.StatusAsync(name, ct);
        });
        v1.MapPost("/vms/{name}/replication/failover/complete", async (HavenHost h, string name, CancellationToken ct) =>
        {
            await h.Replicas.CompleteFailoverAsync(name, ct);
            return Results.NoContent();
        });
    }

    private static ReplicationSettings SettingsOf(ReplicationEnableRequest req, string thisHost, bool extended)
    {
        if (ReplicaChannel.AddressProblem(req.Replica) is { } address) throw HavenException.Invalid(address);
        if (req.ReplicaThumbprint is { } t && ReplicationService.ThumbprintProblem(t) is { } thumbprint) throw HavenException.Invalid(thumbprint);
        return new()
        {
            FrequencySeconds = req.FrequencySeconds,
            AdditionalPoints = req.AdditionalPoints,
            Compression = req.Compression,
            PrimaryHostName = thisHost,
            ReplicaName = req.ReplicaName,
            ReplicaThumbprint = req.ReplicaThumbprint?.ToUpperInvariant(),
            StartAt = req.StartAt,
            ResyncWindowStartHour = req.ResyncWindowStartHour,
            ResyncWindowEndHour = req.ResyncWindowEndHour,
            InitialFromExisting = !extended && req.Initial == "existing",
            InitialByExport = !extended && req.Initial == "export",
            AppConsistentHours = req.AppConsistentHours,
            Extended = extended,
            FailoverNetwork = req.FailoverNetwork is { Count: > 0 } map ? new Dictionary<string, string>(map) : null,
        };
    }

    public static ReplicationCycleResult ToApi(CycleResult c) => new()
    {
        Cycle = c.Cycle,
        Full = c.Full,
        Resync = c.Resync,
        Consistency = c.Consistency,
        DataBytes = c.DataBytes,
        ZeroBytes = c.ZeroBytes,
        Extents = c.Extents,
        WallMilliseconds = c.Elapsed.TotalMilliseconds,
    };

    public void Dispose()
    {
        foreach (var t in _targets.Values) t.Dispose();
        _targets.Clear();
    }
}

/// <summary>
/// Starts every replicated VM's cycles when <see cref="CycleSchedule"/> says they are due (and counts the missed
/// ones, as in Hyper-V's statistics); each cycle is one logged operation.
/// </summary>
public sealed class ReplicationScheduler(HavenHost host, VmReplication replication) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(1), host.Time);
        var resumeAt = host.Time.GetUtcNow();
        Task? resuming = null;
        while (await timer.WaitForNextTickAsync(stoppingToken))
        {
            // Interrupted planned failovers: at start, then every 30 s until the replica answers.
            if (host.Time.GetUtcNow() >= resumeAt && (resuming is null || resuming.IsCompleted))
            {
                resumeAt = host.Time.GetUtcNow().AddSeconds(30);
                resuming = Task.Run(() => replication.ResumePlannedFailoversAsync(stoppingToken), CancellationToken.None);
            }
            host.Schedule.Tick(vm => Task.Run(async () =>
            {
                // RunOperationAsync has logged the failure, with the VM, operation id and duration.
                try { await host.RunOperationAsync("replication cycle", vm.Name, () => replication.RunCycleAsync(vm.Name, stoppingToken)); }
                catch (Exception) when (stoppingToken.IsCancellationRequested) { }
                catch (Exception) { }
            }, CancellationToken.None));
        }
    }
}
