using Haven.Api;

namespace Haven.Cli;

// Host identity, trust, replica server and replication routes (docs/replication.md).
public sealed partial class HavenClient
{
    public Task<HostCertificateInfo> GetHostCertificateAsync(CancellationToken ct) =>
        SendAsync<HostCertificateInfo>(HttpMethod.Get, "/v1/host/certificate", null, ct);

    public Task<HostCertificateInfo> SetHostCertificateAsync(HostCertificateSetRequest request, CancellationToken ct) =>
        SendAsync<HostCertificateInfo>(HttpMethod.Put, "/v1/host/certificate", request, ct);

    public Task<List<TrustedCertificateInfo>> ListTrustedAsync(CancellationToken ct) =>
        SendAsync<List<TrustedCertificateInfo>>(HttpMethod.Get, "/v1/host/trusted", null, ct);

    public Task<TrustedCertificateInfo> AddTrustedAsync(TrustAddRequest request, CancellationToken ct) =>
        SendAsync<TrustedCertificateInfo>(HttpMethod.Post, "/v1/host/trusted", request, ct);

    public Task RemoveTrustedAsync(string thumbprint, CancellationToken ct) =>
        SendAsync(HttpMethod.Delete, "/v1/host/trusted/" + Uri.EscapeDataString(thumbprint), null, ct);

    public Task<ReplicaServerInfo> GetReplicaServerAsync(CancellationToken ct) =>
        SendAsync<ReplicaServerInfo>(HttpMethod.Get, "/v1/replica-server", null, ct);

    public Task<ReplicaServerInfo> EnableReplicaServerAsync(ReplicaServerEnableRequest request, CancellationToken ct) =>
        SendAsync<ReplicaServerInfo>(HttpMethod.Post, "/v1/replica-server/enable", request, ct);

    public Task<ReplicaServerInfo> DisableReplicaServerAsync(CancellationToken ct) =>
        SendAsync<ReplicaServerInfo>(HttpMethod.Post, "/v1/replica-server/disable", null, ct);

    public Task<ReplicaServerInfo> AllowPrimaryAsync(ReplicaAuthorizationRequest request, CancellationToken ct) =>
        SendAsync<ReplicaServerInfo>(HttpMethod.Post, "/v1/replica-server/authorizations", request, ct);

    public Task<ReplicaServerInfo> DenyPrimaryAsync(string pattern, CancellationToken ct) =>
        SendAsync<ReplicaServerInfo>(HttpMethod.Delete, "/v1/replica-server/authorizations/" + Uri.EscapeDataString(pattern), null, ct);

    public Task<ReplicationTestConnectionResult> TestReplicaConnectionAsync(ReplicationTestConnectionRequest request, CancellationToken ct) =>
        SendAsync<ReplicationTestConnectionResult>(HttpMethod.Post, "/v1/replication/test-connection", request, ct);

    // --- replication of one VM (primary side) ---
    public Task<ReplicationStatusInfo> EnableReplicationAsync(string vm, ReplicationEnableRequest request, CancellationToken ct, bool extend = false) =>
        SendAsync<ReplicationStatusInfo>(HttpMethod.Post, VmPath(vm) + (extend ? "/replication/extend" : "/replication"), request, ct);

    public Task<ReplicationStatusInfo> ImportReplicaAsync(ReplicationImportRequest request, CancellationToken ct) =>
        SendAsync<ReplicationStatusInfo>(HttpMethod.Post, "/v1/replication/import", request, ct);

    public Task<List<ReplicationStatusInfo>> ListReplicationsAsync(CancellationToken ct) =>
        SendAsync<List<ReplicationStatusInfo>>(HttpMethod.Get, "/v1/replication", null, ct);

    public Task<ReplicationStatusInfo> GetReplicationAsync(string vm, CancellationToken ct) =>
        SendAsync<ReplicationStatusInfo>(HttpMethod.Get, VmPath(vm) + "/replication", null, ct);

    public Task DisableReplicationAsync(string vm, CancellationToken ct) =>
        SendAsync(HttpMethod.Delete, VmPath(vm) + "/replication", null, ct);

    public Task<ReplicationCycleResult> RunReplicationCycleAsync(string vm, CancellationToken ct, bool resync = false) =>
        SendAsync<ReplicationCycleResult>(HttpMethod.Post, VmPath(vm) + "/replication/" + (resync ? "resync" : "cycle"), null, ct);

    public Task<ReplicationStatusInfo> SetReplicationAsync(string vm, ReplicationSetRequest request, CancellationToken ct) =>
        SendAsync<ReplicationStatusInfo>(HttpMethod.Patch, VmPath(vm) + "/replication", request, ct);

    public Task<ReplicationStatusInfo> RepinReplicationAsync(string vm, ReplicationRepinRequest request, CancellationToken ct) =>
        SendAsync<ReplicationStatusInfo>(HttpMethod.Post, VmPath(vm) + "/replication/repin", request, ct);

    public Task<ReplicationCycleResult> PlannedFailoverAsync(string vm, PlannedFailoverRequest request, CancellationToken ct) =>
        SendAsync<ReplicationCycleResult>(HttpMethod.Post, VmPath(vm) + "/replication/planned-failover", request, ct);

    // --- replica side ---
    public Task<VmInfo> TestFailoverAsync(string vm, ReplicaFailoverRequest request, CancellationToken ct) =>
        SendAsync<VmInfo>(HttpMethod.Post, VmPath(vm) + "/replication/test-failover", request, ct);

    public Task StopTestFailoverAsync(string vm, CancellationToken ct) =>
        SendAsync(HttpMethod.Delete, VmPath(vm) + "/replication/test-failover", null, ct);

    public Task<VmInfo> FailoverAsync(string vm, ReplicaFailoverRequest request, CancellationToken ct) =>
        SendAsync<VmInfo>(HttpMethod.Post, VmPath(vm) + "/replication/failover", request, ct);

    public Task<ReplicationStatusInfo> CancelFailoverAsync(string vm, CancellationToken ct) =>
        SendAsync<ReplicationStatusInfo>(HttpMethod.Post, VmPath(vm) + "/replication/failover/cancel", null, ct);

    public Task CompleteFailoverAsync(string vm, CancellationToken ct) =>
        SendAsync(HttpMethod.Post, VmPath(vm) + "/replication/failover/complete", null, ct);
}
