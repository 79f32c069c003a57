using System.Buffers;
using Google.Protobuf;
using Grpc.Core;
using Haven.Api;
using Haven.Host;
using Haven.Host.Replication;
using Haven.Replication;
using Haven.Replication.V1;

namespace Haven.Daemon;

/// <summary>
/// A replica server over the network: the primary's side of Protos/replication.proto, on an mTLS channel with
/// this host's certificate. Cycles stream as CycleBegin, extents (each awaited: HTTP/2 flow control is the
/// back-pressure), CycleEnd; the replica's acknowledgement is the commit. With <paramref name="pinnedThumbprint"/> the
/// replica must present exactly that certificate in every TLS handshake.
/// </summary>
public sealed class GrpcReplicaTarget(ReplicaEndpoint endpoint, string address, string? expectedName, bool compression, string? pinnedThumbprint = null)
    : IReplicaTarget, IDisposable
{
    private readonly ReplicaChannel _channel = ReplicaChannel.Create(address, endpoint.Identity, endpoint.Trust, expectedName, pinnedThumbprint);

    public async Task<long> EnsureReplicaAsync(ReplicaCreateSpec spec, CancellationToken ct)
    {
        var request = new EnsureReplicaRequest
        {
            VmId = spec.PrimaryVmId,
            VmName = spec.VmName,
            Vcpus = (uint)spec.Vcpus,
            MemoryMib = (uint)spec.MemoryMiB,
            GuestAgent = spec.GuestAgent,
            Accelerator = spec.Accelerator,
            AdditionalPoints = (uint)spec.AdditionalPoints,
        };
        if (spec.Append is not null) request.Append = spec.Append;
        if (spec.Hardware is { } hw)
        {
            request.CpuModel = hw.CpuModel;
            request.DiskBus = hw.DiskBus;
            request.BootOrder.Add(hw.BootOrder);
            request.Firmware = hw.Firmware;
            request.UefiCodeName = Path.GetFileName(hw.UefiCode ?? "");
            foreach (var n in hw.Nics)
                request.Nics.Add(new NicInfo { Name = n.Name, Mode = n.Mode, Bridge = n.Bridge ?? "", Mac = n.Mac ?? "", Model = n.Model, LinkUp = n.LinkUp });
        }
        for (var i = 0; i < spec.DiskSizes.Count; i++) request.Disks.Add(new Haven.Replication.V1.DiskInfo { Index = (uint)i, SizeBytes = (ulong)spec.DiskSizes[i] });
        var state = await CallAsync(() => _channel.Client.EnsureReplicaAsync(request, cancellationToken: ct).ResponseAsync);
        // Boot files travel as bytes: the replica never takes a path on its host from a primary.
        if (spec.Kernel is not null) await SendBootFileAsync(spec.PrimaryVmId, BootFileKind.BootFileKernel, spec.Kernel, ct);
        if (spec.Initrd is not null) await SendBootFileAsync(spec.PrimaryVmId, BootFileKind.BootFileInitrd, spec.Initrd, ct);
        return (long)state.LastCycle;
    }

    private async Task SendBootFileAsync(string primaryVmId, BootFileKind kind, string path, CancellationToken ct)
    {
        await using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20, useAsync: true);
        if (file.Length > ReplicaService.MaxBootFileBytes) throw HavenException.Invalid($"{path} is larger than the {ReplicaService.MaxBootFileBytes} bytes a replica accepts as a boot file");
        await CallAsync(async () =>
        {
            using var call = _channel.Client.SendBootFile(cancellationToken: ct);
            var buffer = new byte[1 << 20];
            var first = new BootFileChunk { VmId = primaryVmId, Kind = kind, Size = (ulong)file.Length };
            int n;
            while ((n = await file.ReadAsync(buffer, ct)) > 0)
            {
                first.Data = ByteString.CopyFrom(buffer, 0, n);
                await call.RequestStream.WriteAsync(first, ct);
                first = new BootFileChunk();
            }
            await call.RequestStream.CompleteAsync();
            return await call.ResponseAsync;
        });
    }

    /// <summary>The replica server's certificate thumbprint, once a call has been answered (null before).</summary>
    public string? ReplicaThumbprint => _channel.ServerCertificate is { } c ? HostIdentity.ThumbprintOf(c) : null;

    public async Task<long?> LastCycleAsync(string primaryVmId, CancellationToken ct)
    {
        var state = await CallAsync(() => _channel.Client.GetReplicaAsync(new ReplicaRef { VmId = primaryVmId }, cancellationToken: ct).ResponseAsync);
        return state.Exists ? (long)state.LastCycle : null;
    }

    public async Task<byte[][]> HashBlocksAsync(string primaryVmId, IReadOnlyList<long> diskSizes, CancellationToken ct)
    {
        return await CallAsync(async () =>
        {
            using var call = _channel.Client.HashBlocks(new ReplicaRef { VmId = primaryVmId }, cancellationToken: ct);
            // Bounded by this VM's own disks: a part that does not fit them ends the call at once.
            var hashes = new Haven.Host.Replication.BlockHashes.Collector(diskSizes);
            await foreach (var part in call.ResponseStream.ReadAllAsync(ct))
                hashes.Add(part.Disk, part.FirstBlock, part.Hashes.Span);
            return hashes.Complete();
        });
    }

    public async Task<long> SendCycleAsync(string primaryVmId, ReplicaCycleHeader header, IAsyncEnumerable<ReplicaExtent> extents, CancellationToken ct)
    {
        return await CallAsync(async () =>
        {
            using var call = _channel.Client.SendCycle(cancellationToken: ct);
            var begin = new CycleBegin
            {
                VmId = primaryVmId,
                CycleNumber = (ulong)header.Cycle,
                BaseCycleNumber = (ulong)header.BaseCycle,
                Consistency = header.Consistency == Consistency.ApplicationConsistent ? "application" : "crash",
                PointInTimeUnixMs = header.PointInTime.ToUnixTimeMilliseconds(),
                Compression = compression ? Compression.Zstd : Compression.None,
            };
            begin.FailoverNetwork.Add(Nics(header.FailoverNetwork));
            if (header.UefiVars is { } vars) begin.UefiVarsGzip = ByteString.CopyFrom(Haven.Host.Vms.VarsWire.Pack(vars));
            for (var i = 0; i < header.DiskSizes.Count; i++) begin.Disks.Add(new Haven.Replication.V1.DiskInfo { Index = (uint)i, SizeBytes = (ulong)header.DiskSizes[i] });
            await call.RequestStream.WriteAsync(new CycleMessage { Begin = begin }, ct);
            ulong count = 0, bytes = 0;
            using var zstd = compression ? new ZstdSharp.Compressor(1) : null;
            var packed = zstd is null ? null : ArrayPool<byte>.Shared.Rent(ZstdSharp.Compressor.GetCompressBound(ReplicaService.MaxExtentBytes));
            try
            {
                await foreach (var e in extents.WithCancellation(ct))
                {
                    var extent = new Extent { Disk = (uint)e.Disk, Offset = (ulong)e.Offset, Length = (uint)e.Length, Zero = e.Data is null };
                    // No copy: gRPC serializes the message before WriteAsync returns, and the extent's data (a pooled buffer
                    // of the reader's) stays valid until the next extent is asked for.
                    if (e.Data is { } data)
                        extent.Data = zstd is null ? UnsafeByteOperations.UnsafeWrap(data) : UnsafeByteOperations.UnsafeWrap(packed!.AsMemory(0, zstd.Wrap(data.Span, packed)));
                    await call.RequestStream.WriteAsync(new CycleMessage { Extent = extent }, ct);
                    count++;
                    bytes += (ulong)e.Length;
                }
            }
            finally { if (packed is not null) ArrayPool<byte>.Shared.Return(packed); }
            await call.RequestStream.WriteAsync(new CycleMessage { End = new CycleEnd { ExtentCount = count, ByteCount = bytes } }, ct);
            await call.RequestStream.CompleteAsync();
            var ack = await call.ResponseAsync;
            return (long)ack.CommittedCycleNumber;
        });
    }

    /// <summary>
    /// Who the replica server is, as the TLS handshake proved it: its certificate's CN and SHA-256 thumbprint (not the
    /// name it reports about itself in Hello).
    /// </summary>
    public async Task<(string Name, string Thumbprint)> IdentifyAsync(CancellationToken ct)
    {
        try { await _channel.HelloAsync(null, ct); }
        catch (RpcException e) { throw _channel.Map(e); }
        var certificate = _channel.ServerCertificate
            ?? throw new ReplicationException(ReplicationFailure.Protocol, $"no TLS certificate was seen from the replica server at {address}");
        return (HostIdentity.CommonName(certificate), HostIdentity.ThumbprintOf(certificate));
    }

    public async Task FailoverAsync(string primaryVmId, bool start, CancellationToken ct)
        => await CallAsync(() => _channel.Client.FailoverAsync(new FailoverRequest { VmId = primaryVmId, Start = start }, cancellationToken: ct).ResponseAsync);

    public async Task CheckFailoverAsync(string primaryVmId, IReadOnlyDictionary<string, string>? failoverNetwork, CancellationToken ct)
    {
        var request = new FailoverRequest { VmId = primaryVmId, Start = true, CheckOnly = true };
        request.FailoverNetwork.Add(Nics(failoverNetwork));
        await CallAsync(() => _channel.Client.FailoverAsync(request, cancellationToken: ct).ResponseAsync);
    }

    private static IEnumerable<FailoverNic> Nics(IReadOnlyDictionary<string, string>? map)
        => (map ?? new Dictionary<string, string>()).Select(p => new FailoverNic { Nic = p.Key, Bridge = p.Value });

    public async Task<string> ReverseAsync(string primaryVmId, string newReplicaHost, ReplicationSettings settings, CancellationToken ct)
    {
        var reply = await CallAsync(() => _channel.Client.ReverseAsync(new ReverseRequest
        {
            VmId = primaryVmId,
            ReplicaAddress = newReplicaHost,
            FrequencySeconds = (uint)settings.FrequencySeconds,
            AdditionalPoints = (uint)settings.AdditionalPoints,
            Compression = settings.Compression,
        }, cancellationToken: ct).ResponseAsync);
        return reply.NewPrimaryVmId;
    }

    /// <summary>One-line errors: gRPC failures become <see cref="ReplicationException"/>s naming the replica server.</summary>
    private async Task<T> CallAsync<T>(Func<Task<T>> call)
    {
        try
        {
            var result = await call();
            _channel.NoteAnswered();
            return result;
        }
        catch (RpcException e) { throw _channel.Map(e); }
    }

    public void Dispose() => _channel.Dispose();
}
