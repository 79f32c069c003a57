using Haven.Api;
using Haven.Host.State;
using Haven.Qemu.GuestAgent;

namespace Haven.Host.Vms;

/// <summary>
/// The one place that decides whether a running VM's file systems can be frozen for a point in time
/// (checkpoints and backups alike): Production and ProductionOnly ask the guest agent; without an
/// agent, Production goes on without a freeze and ProductionOnly refuses.
/// </summary>
public static class GuestQuiescing
{
    public static readonly TimeSpan ConnectTimeout = TimeSpan.FromSeconds(5);
    public static readonly TimeSpan FreezeTimeout = TimeSpan.FromSeconds(60);

    public static bool Wanted(VmRecord vm) => vm.CheckpointType is CheckpointType.Production or CheckpointType.ProductionOnly;

    /// <summary>
    /// The agent, ready to freeze; or null and why not. Throws a conflict for ProductionOnly VMs, naming
    /// <paramref name="purpose"/> ("take a production checkpoint of", "back up application-consistently").
    /// </summary>
    public static async Task<(GuestAgentClient? Agent, string? Unavailable)> ConnectAsync(VmRecord vm, HostPaths paths, string purpose, CancellationToken ct)
    {
        try
        {
            if (!vm.GuestAgent) throw new GuestAgentUnavailableException("the VM has no guest-agent channel");
            return (await GuestAgentClient.ConnectAsync(paths.GuestAgentSocket(vm.Id), ConnectTimeout, ct), null);
        }
        catch (GuestAgentUnavailableException e)
        {
            if (vm.CheckpointType == CheckpointType.ProductionOnly)
                throw HavenException.Conflict($"cannot {purpose} '{vm.Name}': {e.Message} (checkpoint type ProductionOnly does not fall back)");
            return (null, e.Message);
        }
    }

    /// <summary>Thaws after a crash left a freeze behind; nothing frozen or no agent is fine.</summary>
    public static async Task ThawQuietlyAsync(string vmId, HostPaths paths, CancellationToken ct, Microsoft.Extensions.Logging.ILogger? log = null)
    {
        try
        {
            await using var agent = await GuestAgentClient.ConnectAsync(paths.GuestAgentSocket(vmId), ConnectTimeout, ct);
            await agent.ThawFileSystemsAsync(FreezeTimeout, ct);
        }
        catch (GuestAgentUnavailableException) { } // no agent: nothing can be frozen
        catch (GuestAgentException e) { if (log is not null) HavenHost.LogCleanupFailure(log, "thaw the guest's file systems", e); }
    }
}
