using Haven.Host.State;
using Haven.Qemu.Runtime;

namespace Haven.Host.Checkpoints;

/// <summary>A VM's layers as a tree, for walking chains and finding children.</summary>
public sealed class LayerTree
{
    private readonly Dictionary<string, LayerRecord> _byId = [];
    private readonly HostPaths _paths;

    public LayerTree(HostPaths paths, IEnumerable<LayerRecord> layers)
    {
        _paths = paths;
        foreach (var l in layers) _byId[l.Id] = l;
    }

    public LayerRecord this[string id] => _byId[id];

    public LayerRecord? Parent(LayerRecord l) => l.ParentId is null ? null : _byId[l.ParentId];

    public List<LayerRecord> Children(string layerId)
    {
        var list = new List<LayerRecord>();
        foreach (var l in _byId.Values) if (l.ParentId == layerId) list.Add(l);
        list.Sort((a, b) => string.CompareOrdinal(a.Id, b.Id));
        return list;
    }

    /// <summary>The layer of <paramref name="checkpointId"/> on disk <paramref name="disk"/>.</summary>
    public LayerRecord LayerOf(string checkpointId, int disk)
    {
        foreach (var l in _byId.Values) if (l.CheckpointId == checkpointId && l.DiskIndex == disk) return l;
        throw new InvalidOperationException($"checkpoint {checkpointId} has no layer for disk {disk}");
    }

    /// <summary>Layers from <paramref name="top"/> down to the base.</summary>
    public List<LayerRecord> ChainFrom(string top)
    {
        var chain = new List<LayerRecord>();
        for (LayerRecord? l = _byId[top]; l is not null; l = Parent(l)) chain.Add(l);
        return chain;
    }

    public string PathOf(LayerRecord l) => _paths.LayerFile(l.VmId, l.Id);

    /// <summary>The chain as QEMU opens it: base first, top last.</summary>
    public List<LayerRef> LaunchChain(string top)
    {
        var chain = ChainFrom(top);
        chain.Reverse();
        return chain.ConvertAll(l => new LayerRef(l.NodeName, PathOf(l)));
    }

    public LayerRef Ref(LayerRecord l) => new(l.NodeName, PathOf(l));
}
