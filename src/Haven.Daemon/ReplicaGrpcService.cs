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
/// removed since) gives its credential (CN, thumbprint, issuing CAs), and <see cref="ReplicaAuthorization.Decide"/>
/// must find an entry that pins it; otherwise the call ends with PERMISSION_DENIED and a one-line reason, before
/// anything else happens. A replica is bound to the identity of the primary that created it: no other primary (same
/// name, same trust group, or not) may write it, read its hashes, fail it over or reverse it. Every field a primary
/// sends is checked before use; none names a path on this host.
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
        var (peer, _) = Authorize(context);
        var ct = context.CancellationToken;
        if (!await requestStream.MoveNext(ct) || requestStream.Current.BodyCase != CycleMessage.BodyOneofCase.Begin)
            throw new RpcException(new Status(StatusCode.InvalidArgument, "a cycle starts with CycleBegin"));
        var begin = requestStream.Current.Begin;
        var replica = FindOwned(peer, begin.VmId);
        var consistency = begin.Consistency switch
        {
            "application" => Consistency.ApplicationConsistent,
            "crash" => Consistency.CrashConsistent,
            _ => throw Invalid($"consistency is 'application' or 'crash', not '{Clip(begin.Consistency)}'"),
        };
        if (begin.Compression is not (Compression.None or Compression.Zstd)) throw Invalid($"unknown compression {(int)begin.Compression}");
        if (begin.CycleNumber is 0 or > long.MaxValue || begin.BaseCycleNumber >= begin.CycleNumber)
            throw Invalid($"cycle {begin.CycleNumber} on base {begin.BaseCycleNumber}: a cycle number is positive and after its base");
        if (begin.PointInTimeUnixMs is < 0 or > 253402300799999) throw Invalid($"point in time {begin.PointInTimeUnixMs} ms is out of range");
        byte[]? vars;
        try { vars = begin.UefiVarsGzip.IsEmpty ? null : Haven.Host.Vms.VarsWire.Unpack(begin.UefiVarsGzip.Span); }
        catch (InvalidDataException e) { throw Invalid("the UEFI variable store does not unpack: " + e.Message); }
        var header = new ReplicaCycleHeader((long)begin.CycleNumber, (long)begin.BaseCycleNumber, DiskSizes(begin.Disks),
            DateTimeOffset.FromUnixTimeMilliseconds(begin.PointInTimeUnixMs), consistency, vars) { FailoverNetwork = FailoverNetworkOf(begin.FailoverNetwork) };
        try
        {
            var point = await Host.RunOperationAsync("replica cycle " + header.Cycle, Host.Store.FindVm(replica.VmId)?.Name,
                () => Host.Replicas.ApplyCycleAsync(replica.VmId, header, ExtentsAsync(requestStream, begin.Compression, ct), ct));
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
                        if (e.Disk > int.MaxValue || e.Offset > long.MaxValue || e.Zero && !e.Data.IsEmpty)
                            throw new RpcException(new Status(StatusCode.InvalidArgument, $"extent for disk {e.Disk} at {e.Offset} is malformed"));
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
                        // The stream must end here: a cycle commits only once the primary has said all it will say.
                        if (await stream.MoveNext(ct))
                            throw new RpcException(new Status(StatusCode.InvalidArgument, "nothing may follow CycleEnd; the cycle is discarded"));
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
        var (peer, decision) = Authorize(context);
        CheckVmId(request.VmId);
        var existing = FindOwnedOrNull(peer, request.VmId);
        if (existing is not null) return State(existing);
        if (request.HasAppend && (request.Append.Length > MaxAppendChars || request.Append.Any(char.IsControl)))
            throw Invalid($"the kernel command line is at most {MaxAppendChars} characters without control characters");
        if (request.Vcpus > int.MaxValue || request.MemoryMib > int.MaxValue || request.AdditionalPoints > 24)
            throw Invalid("vcpus, memory or additional recovery points out of range");
        if (request.Nics.Count > Haven.Host.Vms.Hardware.MaxNics || request.BootOrder.Count > 64)
            throw Invalid("too many NICs or boot devices");
        try
        {
            var created = await Host.Replicas.CreateAsync(new ReplicaCreateSpec
            {
                VmName = request.VmName,
                PrimaryHost = peer.Name,
                PrimaryIdentity = decision.Owner,
                PrimaryVmId = request.VmId,
                TrustGroup = decision.TrustGroup ?? "",
                StorageLocation = decision.Storage,
                DiskSizes = DiskSizes(request.Disks),
                Vcpus = (int)request.Vcpus,
                MemoryMiB = (int)request.MemoryMib,
                // Boot files arrive as bytes afterwards (SendBootFile), never as paths on this host.
                Append = request.HasAppend ? request.Append : null,
                GuestAgent = request.GuestAgent,
                Accelerator = request.Accelerator.Length == 0 ? "auto" : request.Accelerator,
                AdditionalPoints = (int)request.AdditionalPoints,
                // A peer's values: ReplicaService/VmService validate every field (names, MAC syntax, models, counts).
                Hardware = new VmHardware
                {
                    CpuModel = request.CpuModel.Length == 0 ? "auto" : request.CpuModel,
                    // Only a file name: ReplicaService picks the code image in this host's OVMF folder (Firmware.LocalCode).
                    Firmware = request.Firmware.Length == 0 ? "bios" : request.Firmware,
                    UefiCode = request.Firmware == "uefi" ? request.UefiCodeName : null,
                    DiskBus = request.DiskBus.Length == 0 ? "virtio-blk" : request.DiskBus,
                    BootOrder = [.. request.BootOrder],
                    Nics = [.. request.Nics.Select(n => new NicSpec
                    {
                        Name = n.Name, Mode = n.Mode, Bridge = n.Bridge.Length == 0 ? null : n.Bridge, Mac = n.Mac, Model = n.Model, LinkUp = n.LinkUp,
                    })],
                },
            }, context.CancellationToken);
            return State(created);
        }
        catch (HavenException e) { throw ToRpc(e); }
    }

    public override async Task<ReplicaState> SendBootFile(IAsyncStreamReader<BootFileChunk> requestStream, ServerCallContext context)
    {
        var (peer, _) = Authorize(context);
        var ct = context.CancellationToken;
        if (!await requestStream.MoveNext(ct)) throw Invalid("a boot file starts with a chunk naming the VM, the file and its size");
        var first = requestStream.Current;
        var replica = FindOwned(peer, first.VmId);
        var kind = first.Kind switch
        {
            BootFileKind.BootFileKernel => BootFile.Kernel,
            BootFileKind.BootFileInitrd => BootFile.Initrd,
            _ => throw Invalid($"unknown boot file kind {(int)first.Kind}"),
        };
        if (first.Size is 0 or > (ulong)ReplicaService.MaxBootFileBytes)
            throw Invalid($"a boot file is 1..{ReplicaService.MaxBootFileBytes} bytes, not {first.Size}");
        try
        {
            await Host.Replicas.SetBootFileAsync(replica.VmId, kind, (long)first.Size, ChunksAsync(first, requestStream, ct), ct);
            return State(Host.Store.FindReplica(replica.VmId)!);
        }
        catch (HavenException e) { throw ToRpc(e); }
    }

    static async IAsyncEnumerable<ReadOnlyMemory<byte>> ChunksAsync(BootFileChunk first, IAsyncStreamReader<BootFileChunk> stream,
        [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct)
    {
        var chunk = first;
        while (true)
        {
            if (chunk.Data.Length > ReplicaService.MaxExtentBytes) throw Invalid($"a boot file chunk carries at most {ReplicaService.MaxExtentBytes} bytes");
            if (!chunk.Data.IsEmpty) yield return chunk.Data.Memory;
            if (!await stream.MoveNext(ct)) yield break;
            chunk = stream.Current;
        }
    }

    const int MaxAppendChars = 4096;

    /// <summary>A peer's failover network: at most 8 entries, each NIC once (names and bridges are checked by FailoverNetworkMap).</summary>
    static Dictionary<string, string> FailoverNetworkOf(IList<FailoverNic> nics)
    {
        if (nics.Count > Haven.Host.Vms.Hardware.MaxNics) throw Invalid($"a failover network maps at most {Haven.Host.Vms.Hardware.MaxNics} NICs, not {nics.Count}");
        var map = new Dictionary<string, string>();
        foreach (var n in nics)
            if (!map.TryAdd(n.Nic, n.Bridge)) throw Invalid($"the failover network names NIC '{Clip(n.Nic)}' twice");
        try { FailoverNetworkMap.CheckSyntax(map); }
        catch (HavenException e) { throw Invalid(e.Message); }
        return map;
    }

    static RpcException Invalid(string message) => new(new Status(StatusCode.InvalidArgument, message));

    static string Clip(string s) => s.Length <= 64 ? s : s[..64] + "…";

    /// <summary>A primary's VM id: 1-64 letters, digits, '-' or '_' (it is stored and shown, never used as a path).</summary>
    static void CheckVmId(string vmId)
    {
        if (vmId.Length is 0 or > 64 || !vmId.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_'))
            throw Invalid($"'{Clip(vmId)}' is not a VM id (1-64 letters, digits, '-' or '_')");
    }

    /// <summary>Disk sizes in order: indexes 0..n-1, each size at most 64 TiB (the VM code checks the rest).</summary>
    static List<long> DiskSizes(IList<Haven.Replication.V1.DiskInfo> disks)
    {
        if (disks.Count > 16) throw Invalid($"a VM has at most 16 disks, not {disks.Count}");
        var sizes = new List<long>(disks.Count);
        for (var i = 0; i < disks.Count; i++)
        {
            if (disks[i].Index != i) throw Invalid($"disk {i} is listed with index {disks[i].Index}");
            if (disks[i].SizeBytes > MaxDiskBytes) throw Invalid($"disk {i} is {disks[i].SizeBytes} bytes; at most {MaxDiskBytes}");
            sizes.Add((long)disks[i].SizeBytes);
        }
        return sizes;
    }

    const ulong MaxDiskBytes = 64UL << 40;

    public override Task<ReplicaState> GetReplica(ReplicaRef request, ServerCallContext context)
    {
        var (peer, _) = Authorize(context);
        var existing = FindOwnedOrNull(peer, request.VmId);
        return Task.FromResult(existing is null ? new ReplicaState { Exists = false } : State(existing));
    }

    public override async Task<ReplicaState> Failover(FailoverRequest request, ServerCallContext context)
    {
        var (peer, _) = Authorize(context);
        var replica = FindOwned(peer, request.VmId);
        try
        {
            if (request.CheckOnly)
            {
                Host.Replicas.CheckFailover(Host.Store.FindVm(replica.VmId)!.Name, FailoverNetworkOf(request.FailoverNetwork));
                return State(replica);
            }
            await Host.Replicas.FailoverForPrimaryAsync(Host.Store.FindVm(replica.VmId)!.Name, request.Start, context.CancellationToken);
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
        var (peer, _) = Authorize(context);
        // Asked again (the caller's planned failover was interrupted after this step): the same answer, to the same caller only.
        if (FindOwnedOrNull(peer, request.VmId) is null && Host.Replications.FindReversed(request.VmId, peer.Thumbprint) is { } done)
            return new ReverseReply { NewPrimaryVmId = done };
        var replica = FindOwned(peer, request.VmId);
        try
        {
            var settings = new ReplicationSettings
            {
                FrequencySeconds = (int)Math.Min(request.FrequencySeconds, int.MaxValue),
                AdditionalPoints = (int)Math.Min(request.AdditionalPoints, int.MaxValue),
                Compression = request.Compression,
            };
            if (request.FrequencySeconds > int.MaxValue || request.AdditionalPoints > int.MaxValue) throw Invalid("frequency or additional recovery points out of range");
            settings.Validate(Host.Time.GetUtcNow());
            if (!Uri.TryCreate(request.ReplicaAddress, UriKind.Absolute, out var back) || back.Scheme != Uri.UriSchemeHttps || back.AbsolutePath != "/" || back.UserInfo.Length > 0)
                throw Invalid($"'{Clip(request.ReplicaAddress)}' is not a replica server address (https://HOST:PORT)");
            var id = await Host.Replications.AdoptReverseAsync(Host.Store.FindVm(replica.VmId)!.Name, request.ReplicaAddress, peer.Thumbprint, settings, context.CancellationToken);
            return new ReverseReply { NewPrimaryVmId = id };
        }
        catch (HavenException e) { throw ToRpc(e); }
    }

    public override async Task HashBlocks(ReplicaRef request, IServerStreamWriter<Haven.Replication.V1.BlockHashes> responseStream, ServerCallContext context)
    {
        var (peer, _) = Authorize(context);
        var replica = FindOwned(peer, request.VmId);
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
    /// The replica of the primary's VM <paramref name="vmId"/>, if <paramref name="peer"/> may touch it: only the
    /// identity it is bound to (<see cref="ReplicaAuthorization.Owns"/>) may. Trust groups grant nothing here, and a
    /// primary with the owner's name but another certificate (from a CA, say) is refused: PERMISSION_DENIED.
    /// </summary>
    Haven.Host.State.ReplicaRecord? FindOwnedOrNull(PeerCredential peer, string vmId)
    {
        var existing = Host.Store.ListReplicas().Find(r => r.PrimaryVmId == vmId);
        if (existing is null) return null;
        if (!ReplicaAuthorization.Owns(existing.PrimaryIdentity, peer))
        {
            var reason = $"the replica of VM {Clip(vmId)} belongs to another primary server identity; '{peer.Name}' (thumbprint {peer.Thumbprint}) may not touch it";
            endpoint.Log.LogWarning("replica server refused: {Reason}", reason);
            throw new RpcException(new Status(StatusCode.PermissionDenied, reason));
        }
        return existing;
    }

    Haven.Host.State.ReplicaRecord FindOwned(PeerCredential peer, string vmId)
        => FindOwnedOrNull(peer, vmId) ?? throw new RpcException(new Status(StatusCode.NotFound, $"no replica of VM {Clip(vmId)} on this replica server"));

    static RpcException ToRpc(HavenException e) => new(new Status(e.Code switch
    {
        ErrorCode.InvalidArgument => StatusCode.InvalidArgument,
        ErrorCode.NotFound => StatusCode.NotFound,
        ErrorCode.Conflict => StatusCode.FailedPrecondition,
        _ => StatusCode.Internal,
    }, e.Message.ReplaceLineEndings(" ")));

    (PeerCredential Peer, ReplicaDecision Decision) Authorize(ServerCallContext context)
    {
        var certificate = context.GetHttpContext().Connection.ClientCertificate
            ?? throw new RpcException(new Status(StatusCode.Unauthenticated, "no client certificate: a primary server authenticates with its host certificate"));
        var peer = endpoint.Trust.Identify(certificate, out var error)
            ?? throw new RpcException(new Status(StatusCode.Unauthenticated, error));
        var decision = endpoint.Settings.Decide(peer);
        if (!decision.Allowed)
        {
            endpoint.Log.LogWarning("replica server refused primary '{Primary}' (thumbprint {Thumbprint}): {Reason}", peer.Name, peer.Thumbprint, decision.Reason);
            throw new RpcException(new Status(StatusCode.PermissionDenied, decision.Reason));
        }
        return (peer, decision);
    }
}
