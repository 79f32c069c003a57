using Haven.Api;

namespace Haven.Cli;

public sealed partial class HavenClient
{
    public Task<VmInfo> ImportLibvirtAsync(LibvirtImportRequest request, CancellationToken ct) =>
        SendAsync<VmInfo>(HttpMethod.Post, "/v1/vms/import-libvirt", request, ct);
}
