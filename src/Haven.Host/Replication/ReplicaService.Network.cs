using System.Text.Json;
using Haven.Api;
using Haven.Host.State;

namespace Haven.Host.Replication;

/// <summary>The replica's copy of the primary's failover network (docs/replication.md, "Networks at failover").</summary>
public sealed partial class ReplicaService
{
    /// <summary>Largest failover network file read back (8 short entries need a few hundred bytes).</summary>
    private const int MaxFailoverNetworkBytes = 4096;

    /// <summary>
    /// Kept in the replica VM's folder, not in its hardware document: a recovery point's hardware is what the primary had,
    /// and applying a point must not bring back an older mapping.
    /// </summary>
    private string FailoverNetworkFile(string vmId) => Path.Combine(Paths.VmDir(vmId), "failover-network.json");

    /// <summary>The failover network the primary last sent with a committed cycle; null when none.</summary>
    public Dictionary<string, string>? FailoverNetworkOf(string vmId)
    {
        var file = FailoverNetworkFile(vmId);
        if (!File.Exists(file)) return null;
        if (new FileInfo(file).Length > MaxFailoverNetworkBytes) throw new InvalidDataException($"{file} is larger than {MaxFailoverNetworkBytes} bytes");
        var map = JsonSerializer.Deserialize<Dictionary<string, string>>(File.ReadAllText(file), ApiJson.Options);
        if (map is null || map.Count == 0) return null;
        FailoverNetworkMap.CheckSyntax(map);
        return map;
    }

    /// <summary>Records the failover network a committed cycle carried (temporary file, fsync, rename; none: the file goes).</summary>
    private void StoreFailoverNetwork(string vmId, Dictionary<string, string> map)
    {
        var file = FailoverNetworkFile(vmId);
        if (map.Count == 0) { File.Delete(file); return; }
        var partial = file + ".partial";
        using (var stream = ExportMedia.CreateOwnerOnly(partial))
        {
            JsonSerializer.Serialize(stream, map, ApiJson.Options);
            stream.Flush(flushToDisk: true);
        }
        File.Move(partial, file, overwrite: true);
    }

    /// <summary>
    /// Would the replica fail over and start with <paramref name="failoverNetwork"/> (null: the one it has)? Refuses, with
    /// one line, when a bridge is missing on this host; changes nothing. A planned failover asks first.
    /// </summary>
    public void CheckFailover(string vmName, IReadOnlyDictionary<string, string>? failoverNetwork)
    {
        var replica = Find(vmName);
        if (replica.State == ReplicaState.FailedOver) return; // done already: the primary only finishes its steps
        var vm = Store.FindVm(replica.VmId)!;
        var checkpoint = Store.ListCheckpoints(vm.Id).Find(c => c.Id == Point(replica, null).CheckpointId)!;
        var hardware = FailoverNetworkMap.Apply(checkpoint.Hardware ?? vm.Hardware, failoverNetwork ?? FailoverNetworkOf(vm.Id));
        FailoverNetworkMap.CheckBridges(hardware, "planned failover", vm.Name);
    }

    /// <summary>The hardware the VM fails over with: <paramref name="hw"/> (a recovery point's) with the failover network's bridges.</summary>
    private VmHardware FailoverHardware(string vmId, VmHardware hw) => FailoverNetworkMap.Apply(hw, FailoverNetworkOf(vmId));
}
