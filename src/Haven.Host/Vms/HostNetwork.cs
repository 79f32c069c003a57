using Haven.Qemu.Images;

namespace Haven.Host.Vms;

/// <summary>
/// The host's network interfaces as bridge NICs need them: which bridges exist, which MACs the host's own
/// interfaces have, and the tap devices havend creates per bridge NIC (with iproute2's ip) and removes.
/// </summary>
public static class HostNetwork
{
    private const string SysNet = "/sys/class/net";

    public static bool BridgeExists(string bridge) => Directory.Exists(Path.Combine(SysNet, bridge, "bridge"));

    /// <summary>Interface names, those of taps included.</summary>
    public static List<string> Interfaces() =>
        Directory.Exists(SysNet) ? Directory.GetFileSystemEntries(SysNet).Select(p => Path.GetFileName(p)).ToList() : [];

    /// <summary>MACs of the host's interfaces, Haven's own taps left out (their MAC is not the guest's).</summary>
    public static HashSet<string> InterfaceMacs()
    {
        var macs = new HashSet<string>();
        foreach (var name in Interfaces())
        {
            if (Hardware.VmIdPrefixOfTap(name) is not null) continue;
            try { macs.Add(File.ReadAllText(Path.Combine(SysNet, name, "address")).Trim().ToLowerInvariant()); }
            catch (IOException) { } // gone meanwhile
        }
        return macs;
    }

    /// <summary>Creates the tap (replacing a leftover of the same name), attaches it to the bridge and sets it up.</summary>
    public static async Task CreateTapAsync(string tap, string bridge, CancellationToken ct)
    {
        if (!BridgeExists(bridge)) throw HavenException.Invalid($"bridge '{bridge}' does not exist on this host");
        await DeleteTapAsync(tap, ct);
        try
        {
            await Ip(ct, "tuntap", "add", "dev", tap, "mode", "tap");
            await Ip(ct, "link", "set", "dev", tap, "master", bridge);
            await Ip(ct, "link", "set", "dev", tap, "up");
        }
        catch (ToolFailedException e)
        {
            await DeleteTapAsync(tap, CancellationToken.None);
            throw new HavenException(ErrorCode.Failed, $"could not create tap device {tap} on bridge '{bridge}': {e.Message}", e);
        }
    }

    /// <summary>Removes the tap if it exists.</summary>
    public static async Task DeleteTapAsync(string tap, CancellationToken ct)
    {
        if (!Directory.Exists(Path.Combine(SysNet, tap))) return;
        await ProcessRunner.RunAsync("ip", ["link", "delete", "dev", tap], ct, throwOnError: false);
    }

    /// <summary>
    /// Removes every tap of the VM (synchronously: it runs when QEMU is found gone, <see cref="VmRuntimes.Forget"/>).
    /// QEMU closed them; they would otherwise stay on their bridges.
    /// </summary>
    public static void DeleteTapsOf(string vmId)
    {
        foreach (var tap in Interfaces())
            if (Hardware.VmIdPrefixOfTap(tap) is { } prefix && vmId.StartsWith(prefix, StringComparison.Ordinal))
                DeleteTapAsync(tap, CancellationToken.None).GetAwaiter().GetResult();
    }

    /// <summary>Haven's taps whose VM id prefix is not in <paramref name="runningVmIds"/>: left by a QEMU or havend that died.</summary>
    public static List<string> OrphanTaps(IEnumerable<string> runningVmIds)
    {
        var running = runningVmIds.ToList();
        return Interfaces().Where(t => Hardware.VmIdPrefixOfTap(t) is { } prefix && !running.Exists(id => id.StartsWith(prefix, StringComparison.Ordinal))).ToList();
    }

    private static Task Ip(CancellationToken ct, params string[] args) => ProcessRunner.RunAsync("ip", args, ct);
}
