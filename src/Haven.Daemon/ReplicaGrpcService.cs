using Grpc.Core;
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

    public override Task<CycleAck> SendCycle(IAsyncStreamReader<CycleMessage> requestStream, ServerCallContext context)
    {
        Authorize(context);
        throw new RpcException(new Status(StatusCode.Unimplemented, "replication cycles are not implemented by this replica server yet"));
    }

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
