using Haven.Api;
using Haven.Host.Vms;

namespace Haven.Host.Replication;

/// <summary>
/// A replication's failover network: for some of the VM's bridge NICs, the bridge of the replica host they use when the
/// replica is failed over (Hyper-V connects a failed-over VM to the switch named in its settings). NICs not mapped keep
/// their bridge; MACs never change. Set on the primary (<see cref="ReplicationSettings.FailoverNetwork"/>), sent with
/// every cycle, kept by the replica (docs/replication.md, "Networks at failover").
/// </summary>
public static class FailoverNetworkMap
{
    /// <summary>
    /// Checks a mapping against the VM's hardware (the user's input on the primary): each entry names one of its bridge
    /// NICs and a valid bridge name.
    /// </summary>
    public static void Validate(IReadOnlyDictionary<string, string>? map, VmHardware hw, string vmName)
    {
        if (map is null) return;
        CheckSyntax(map);
        foreach (var nic in map.Keys)
        {
            var n = hw.Nics.Find(x => x.Name == nic)
                ?? throw HavenException.Invalid($"failover network: VM '{vmName}' has no NIC '{nic}' (it has {Names(hw)})");
            if (n.Mode != "bridge") throw HavenException.Invalid($"failover network: {nic} of VM '{vmName}' is a user-mode NIC; only bridge NICs are mapped");
        }
    }

    /// <summary>
    /// What the replica checks of a peer's mapping: at most 8 entries, NIC names nic0..nic7, bridge names a Linux
    /// interface may have. Entries for NICs the replica VM does not have (the primary's NICs changed later) are ignored
    /// at failover, so they are not refused here.
    /// </summary>
    public static void CheckSyntax(IReadOnlyDictionary<string, string> map)
    {
        if (map.Count > Hardware.MaxNics) throw HavenException.Invalid($"a failover network maps at most {Hardware.MaxNics} NICs, not {map.Count}");
        foreach (var (nic, bridge) in map)
        {
            if (nic is not ['n', 'i', 'c', >= '0' and <= '7']) throw HavenException.Invalid($"failover network: '{Clip(nic)}' is not a NIC name (nic0..nic7)");
            if (!Hardware.IsBridgeName(bridge))
                throw HavenException.Invalid($"failover network: '{Clip(bridge)}' is not a bridge name (1-15 letters, digits, '-', '_', '.')");
        }
    }

    /// <summary>The hardware a failed-over VM runs with: each mapped NIC on its mapped bridge, everything else (MACs too) as it is.</summary>
    public static VmHardware Apply(VmHardware hw, IReadOnlyDictionary<string, string>? map) =>
        map is null || map.Count == 0 ? hw
            : hw with { Nics = hw.Nics.ConvertAll(n => n.Mode == "bridge" && map.TryGetValue(n.Name, out var b) ? n with { Bridge = b } : n) };

    /// <summary>
    /// Refuses, with one line naming them, when bridges <paramref name="hw"/>'s NICs need do not exist on this host:
    /// nothing has been changed yet when this runs.
    /// </summary>
    public static void CheckBridges(VmHardware hw, string what, string vmName)
    {
        var missing = hw.Nics.Where(n => n.Mode == "bridge" && !HostNetwork.BridgeExists(n.Bridge!)).ToList();
        if (missing.Count == 0) return;
        throw HavenException.Conflict($"{what} of '{vmName}' refused: " + string.Join("; ", missing.Select(n => $"{n.Name}'s bridge '{n.Bridge}' does not exist on this host"))
            + $". Create it, or map the NIC to another bridge on the primary ('haven replication set {vmName} --failover-network NIC=BRIDGE'); nothing was changed");
    }

    /// <summary>"nic0=br-dr, nic1=br2", or null for none.</summary>
    public static string? Format(IReadOnlyDictionary<string, string>? map) =>
        map is null || map.Count == 0 ? null : string.Join(", ", map.OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => $"{p.Key}={p.Value}"));

    private static string Names(VmHardware hw) => hw.Nics.Count == 0 ? "no NICs" : string.Join(", ", hw.Nics.Select(n => n.Name));

    private static string Clip(string s) => s.Length <= 32 ? s : s[..32] + "…";
}
