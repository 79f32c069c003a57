using Grpc.Core;
using Haven.Api;
using Haven.Host;
using Haven.Host.Replication;
using Haven.Replication;
using Haven.Replication.V1;

namespace Haven.Daemon;

/// <summary>
/// The replica server's gRPC service (Protos/replication.proto). Every call first authorizes the primary: its client
/// certificate (already checked against the trust store by the TLS handshake, checked again here in case it was
/// removed since) names it by its CN, and <see cref="ReplicaAuthorization.Decide"/> must allow that name; otherwise
/// the call ends with PERMISSION_DENIED and a one-line reason, before anything else happens.
/// </summary>
public sealed class ReplicaGrpcService(ReplicaEndpoint endpoint) : Replica.ReplicaBase
{
    public override Task<HelloReply> Hello(HelloRequest request, ServerCallContext context)
    {
        var (_, decision) = Authorize(context);
        if (request.ProtocolVersion != ReplicaChannel.ProtocolVersion)
            throw new RpcException(new Status(StatusCode.FailedPrecondition,
                $"replication protocol {request.ProtocolVersion} is not spoken here; this replica server speaks {ReplicaChannel.ProtocolVersion}"));
        return Task.FromResult(new HelloReply
        {
            ReplicaHost = endpoint.Identity.Name,
            ProtocolVersion = ReplicaChannel.ProtocolVersion,
            StorageLocation = decision.Storage ?? "",
            TrustGroup = decision.TrustGroup ?? "",
        });
    }

    /// <summary>
    /// One cycle: CycleBegin, extents, CycleEnd. The extents go straight into the replica VM's active layers;
    /// the recovery point exists only once CycleEnd has arrived and the checkpoint is committed. A stream that
    /// breaks, or lies about its counts, is discarded whole (ReplicaService.ApplyCycleAsync).
    /// </summary>
    public override async Task<CycleAck> SendCycle(IAsyncStreamReader<CycleMessage> requestStream, ServerCallContext context)
    {
        var (primary, decision) = Authorize(context);
        var ct = context.CancellationToken;
        if (!await requestStream.MoveNext(ct) || requestStream.Current.BodyCase != CycleMessage.BodyOneofCase.Begin)
            throw new RpcException(new Status(StatusCode.InvalidArgument, "a cycle starts with CycleBegin"));
        var begin = requestStream.Current.Begin;
        var replica = FindOwned(primary, decision, begin.VmId);
        var consistency = begin.Consistency == "application" ? Consistency.ApplicationConsistent : Consistency.CrashConsistent;
        var disks = new List<long>(begin.Disks.Count);
        foreach (var d in begin.Disks) disks.Add((long)d.SizeBytes);
        var header = new ReplicaCycleHeader((long)begin.CycleNumber, (long)begin.BaseCycleNumber, disks,
            DateTimeOffset.FromUnixTimeMilliseconds(begin.PointInTimeUnixMs), consistency);
        try
        {
            var point = await Host.Replicas.ApplyCycleAsync(replica.VmId, header, ExtentsAsync(requestStream, begin.Compression, ct), ct);
            return new CycleAck { CommittedCycleNumber = (ulong)point.Cycle, RecoveryPointId = point.CheckpointId };
        }
        catch (ReplicaOutOfSyncException e)
        {
            throw new RpcException(new Status(StatusCode.FailedPrecondition, e.Message), new Metadata { { "replica-cycle", e.ReplicaCycle.ToString(System.Globalization.CultureInfo.InvariantCulture) } });
        }
        catch (HavenException e) { throw ToRpc(e); }
    }

    /// <summary>The extents of a cycle as they arrive; throws when the stream ends before CycleEnd or breaks its own counts.</summary>
    static async IAsyncEnumerable<ReplicaExtent> ExtentsAsync(IAsyncStreamReader<CycleMessage> stream, Compression compression,
        [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct)
    {
        var buffer = System.Buffers.ArrayPool<byte>.Shared.Rent(ReplicaService.MaxExtentBytes);
        using var zstd = compression == Compression.Zstd ? new ZstdSharp.Decompressor() : null;
        try
        {
            ulong count = 0, bytes = 0;
            while (await stream.MoveNext(ct))
            {
                var m = stream.Current;
                switch (m.BodyCase)
                {
                    case CycleMessage.BodyOneofCase.Extent:
                        var e = m.Extent;
                        if (e.Length == 0 || e.Length > ReplicaService.MaxExtentBytes)
                            throw new RpcException(new Status(StatusCode.InvalidArgument, $"an extent covers 1..{ReplicaService.MaxExtentBytes} bytes, not {e.Length}"));
                        count++;
                        bytes += e.Length;
                        if (e.Zero)
                        {
                            yield return new ReplicaExtent((int)e.Disk, (long)e.Offset, (int)e.Length, null);
                            continue;
                        }
                        ReadOnlyMemory<byte> data;
                        if (zstd is null) data = e.Data.Memory;
                        else
                        {
                            int n;
                            try { n = zstd.Unwrap(e.Data.Span, buffer.AsSpan(0, ReplicaService.MaxExtentBytes)); }
                            catch (ZstdSharp.ZstdException x) { throw new RpcException(new Status(StatusCode.InvalidArgument, "an extent does not decompress: " + x.Message)); }
                            data = buffer.AsMemory(0, n);
                        }
                        yield return new ReplicaExtent((int)e.Disk, (long)e.Offset, (int)e.Length, data);
                        break;
                    case CycleMessage.BodyOneofCase.End:
                        if (m.End.ExtentCount != count || m.End.ByteCount != bytes)
                            throw new RpcException(new Status(StatusCode.InvalidArgument, $"CycleEnd counts {m.End.ExtentCount} extents / {m.End.ByteCount} bytes, {count} / {bytes} arrived"));
                        yield break;
                    default:
                        throw new RpcException(new Status(StatusCode.InvalidArgument, "a cycle has one CycleBegin, then extents, then CycleEnd"));
                }
            }
            throw new IOException("the cycle stream ended before CycleEnd; the cycle is discarded");
        }
        finally { System.Buffers.ArrayPool<byte>.Shared.Return(buffer); }
    }

    public override async Task<ReplicaState> EnsureReplica(EnsureReplicaRequest request, ServerCallContext context)
    {
        var (primary, decision) = Authorize(context);
        var existing = FindOwnedOrNull(primary, decision, request.VmId);
        if (existing is not null) return State(existing);
        var disks = new List<long>(request.Disks.Count);
        foreach (var d in request.Disks) disks.Add((long)d.SizeBytes);
        try
        {
            var created = await Host.Replicas.CreateAsync(new ReplicaCreateSpec
            {
                VmName = request.VmName,
                PrimaryHost = primary,
                PrimaryVmId = request.VmId,
                TrustGroup = decision.TrustGroup ?? "",
                StorageLocation = decision.Storage,
                DiskSizes = disks,
                Vcpus = (int)Math.Max(1, request.Vcpus),
                MemoryMiB = (int)Math.Max(16, request.MemoryMib),
                Kernel = request.HasKernel ? request.Kernel : null,
                Initrd = request.HasInitrd ? request.Initrd : null,
                Append = request.HasAppend ? request.Append : null,
                GuestAgent = request.GuestAgent,
                Accelerator = request.Accelerator.Length == 0 ? "auto" : request.Accelerator,
                AdditionalPoints = (int)request.AdditionalPoints,
            }, context.CancellationToken);
            return State(created);
        }
        catch (HavenException e) { throw ToRpc(e); }
    }

    public override Task<ReplicaState> GetReplica(ReplicaRef request, ServerCallContext context)
    {
        var (primary, decision) = Authorize(context);
        var existing = FindOwnedOrNull(primary, decision, request.VmId);
        return Task.FromResult(existing is null ? new ReplicaState { Exists = false } : State(existing));
    }

    public override async Task<ReplicaState> Failover(FailoverRequest request, ServerCallContext context)
    {
        var (primary, decision) = Authorize(context);
        var replica = FindOwned(primary, decision, request.VmId);
        try
        {
            await Host.Replicas.FailoverAsync(Host.Store.FindVm(replica.VmId)!.Name, null, request.Start, context.CancellationToken);
            return State(Host.Store.FindReplica(replica.VmId)!);
        }
        catch (HavenException e) { throw ToRpc(e); }
    }

    /// <summary>
    /// Reverse replication after a planned failover: this host's replica becomes the primary and replicates back to the
    /// caller. The caller names its replica server's address (only it knows where it listens), but the replication is
    /// pinned to the caller's own client certificate (this mTLS connection's): at any other address, a host with another
    /// certificate fails the first cycle's handshake, so the VM can only go back to the caller.
    /// </summary>
    public override async Task<ReverseReply> Reverse(ReverseRequest request, ServerCallContext context)
    {
        var (primary, decision) = Authorize(context);
        var replica = FindOwned(primary, decision, request.VmId);
        if (ReplicaChannel.AddressProblem(request.ReplicaAddress) is { } address)
            throw new RpcException(new Status(StatusCode.InvalidArgument, address));
        var caller = HostIdentity.ThumbprintOf(context.GetHttpContext().Connection.ClientCertificate!);
        try
        {
            var settings = new ReplicationSettings
            {
                FrequencySeconds = (int)Math.Min(request.FrequencySeconds, int.MaxValue),
                AdditionalPoints = (int)Math.Min(request.AdditionalPoints, int.MaxValue),
                Compression = request.Compression,
            };
            var id = await Host.Replications.AdoptReverseAsync(Host.Store.FindVm(replica.VmId)!.Name, request.ReplicaAddress, caller, settings, context.CancellationToken);
            return new ReverseReply { NewPrimaryVmId = id };
        }
        catch (HavenException e) { throw ToRpc(e); }
    }

    public override async Task HashBlocks(ReplicaRef request, IServerStreamWriter<Haven.Replication.V1.BlockHashes> responseStream, ServerCallContext context)
    {
        var (primary, decision) = Authorize(context);
        var replica = FindOwned(primary, decision, request.VmId);
        byte[][] hashes;
        try { hashes = await Host.Replicas.HashLatestAsync(replica.VmId, context.CancellationToken); }
        catch (HavenException e) { throw ToRpc(e); }
        const int PerMessage = 1 << 20; // bytes of hashes per message (65536 blocks = 4 GiB of disk)
        for (var disk = 0; disk < hashes.Length; disk++)
            for (var at = 0; at < hashes[disk].Length; at += PerMessage)
                await responseStream.WriteAsync(new Haven.Replication.V1.BlockHashes
                {
                    Disk = (uint)disk,
                    FirstBlock = (ulong)(at / Haven.Host.Replication.BlockHashes.HashSize),
                    Hashes = Google.Protobuf.ByteString.CopyFrom(hashes[disk].AsSpan(at, Math.Min(PerMessage, hashes[disk].Length - at))),
                }, context.CancellationToken);
    }

    HavenHost Host => endpoint.Host ?? throw new RpcException(new Status(StatusCode.Unavailable, "the replica server is starting"));

    static ReplicaState State(Haven.Host.State.ReplicaRecord r) => new() { Exists = true, LastCycle = (ulong)r.LastCycle, ReplicaVmId = r.VmId };

    /// <summary>
    /// The replica of the primary's VM <paramref name="vmId"/>, if this primary may touch it: it replicated it,
    /// or it is in the same (non-empty) trust group as the primary that did. Another primary gets PERMISSION_DENIED.
    /// </summary>
    Haven.Host.State.ReplicaRecord? FindOwnedOrNull(string primary, ReplicaDecision decision, string vmId)
    {
        var existing = Host.Store.ListReplicas().Find(r => r.PrimaryVmId == vmId);
        if (existing is null) return null;
        var sameGroup = existing.TrustGroup.Length > 0 && existing.TrustGroup == (decision.TrustGroup ?? "");
        if (!string.Equals(existing.PrimaryHost, primary, StringComparison.OrdinalIgnoreCase) && !sameGroup)
        {
            var reason = $"the replica of VM {vmId} belongs to primary '{existing.PrimaryHost}'" +
                (existing.TrustGroup.Length > 0 ? $" in trust group '{existing.TrustGroup}'" : "") + $"; '{primary}' is not in that trust group";
            Console.Error.WriteLine("havend: replica server refused: " + reason);
            throw new RpcException(new Status(StatusCode.PermissionDenied, reason));
        }
        return existing;
    }

    Haven.Host.State.ReplicaRecord FindOwned(string primary, ReplicaDecision decision, string vmId)
        => FindOwnedOrNull(primary, decision, vmId) ?? throw new RpcException(new Status(StatusCode.NotFound, $"no replica of VM {vmId} on this replica server"));

    static RpcException ToRpc(HavenException e) => new(new Status(e.Code switch
    {
        ErrorCode.InvalidArgument => StatusCode.InvalidArgument,
        ErrorCode.NotFound => StatusCode.NotFound,
        ErrorCode.Conflict => StatusCode.FailedPrecondition,
        _ => StatusCode.Internal,
    }, e.Message.ReplaceLineEndings(" ")));

    (string Primary, ReplicaDecision Decision) Authorize(ServerCallContext context)
    {
        var certificate = context.GetHttpContext().Connection.ClientCertificate
            ?? throw new RpcException(new Status(StatusCode.Unauthenticated, "no client certificate: a primary server authenticates with its host certificate"));
        if (!endpoint.Trust.Validate(certificate, out var error))
            throw new RpcException(new Status(StatusCode.Unauthenticated, error));
        var primary = HostIdentity.CommonName(certificate);
        var decision = endpoint.Settings.Decide(primary);
        if (!decision.Allowed)
        {
            Console.Error.WriteLine($"havend: replica server refused primary '{primary}': {decision.Reason}");
            throw new RpcException(new Status(StatusCode.PermissionDenied, decision.Reason));
        }
        return (primary, decision);
    }
}
