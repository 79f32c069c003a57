using Haven.Api;
using Haven.Host;
using Haven.Host.Checkpoints;
using Haven.Qemu.Images;
using Haven.TestSupport;
using Xunit;

namespace Haven.Host.Tests;

/// <summary>A host in a temp folder plus checks every checkpoint test wants.</summary>
public sealed class TestHost : IAsyncDisposable
{
    public TempDir Dir { get; } = new();
    public HavenHost Host { get; }
    public CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <param name="dataDirectory">Where havend's data lives (e.g. on a small tmpfs); default: a temp folder.</param>
    /// <param name="options">Clock and logs of the host (tests of time and logging); default: system clock, no logs.</param>
    public TestHost(string? dataDirectory = null, HavenHostOptions? options = null)
    {
        Host = new HavenHost(dataDirectory ?? Dir.File("data"), options ?? new HavenHostOptions());
    }

    public Task<VmInfo> CreateVmAsync(string name, long size = 32 << 20, CheckpointType type = CheckpointType.Production) =>
        Host.Vms.CreateAsync(new VmCreateRequest
        {
            Name = name,
            Disks = [new DiskSpec { SizeBytes = size }],
            Accelerator = "tcg",
            MemoryMiB = 64,
            CheckpointType = type,
        }, Ct);

    public Haven.Qemu.Qmp.QmpClient Qmp(string vm) => Host.Runtimes.Get(Host.Vms.Find(vm).Id)!.Qmp;

    public bool IsRunning(string vm) => Host.Runtimes.Get(Host.Vms.Find(vm).Id) is not null;

    /// <summary>Writes into the VM's disk the way a guest would, and into the model.</summary>
    public async Task WriteAsync(string vm, DiskModel model, byte pattern, long offset, long length)
    {
        if (IsRunning(vm)) await GuestWrites.WriteLiveAsync(Qmp(vm), "disk0", pattern, offset, length);
        else await GuestWrites.WriteOfflineAsync(TopLayer(vm), pattern, offset, length);
        await model.WriteAsync(pattern, offset, length);
    }

    public string TopLayer(string vm)
    {
        var v = Host.Vms.Find(vm);
        return Host.Paths.LayerFile(v.Id, Host.Store.ListDisks(v.Id)[0].ActiveLayerId);
    }

    /// <summary>The VM's current disk content equals the model.</summary>
    public async Task AssertCurrentAsync(string vm, DiskModel model)
    {
        var running = IsRunning(vm);
        if (running) await GuestWrites.FlushLiveAsync(Qmp(vm), "disk0");
        Assert.True(await model.EqualsImageAsync(TopLayer(vm), forceShare: running), $"current data of {vm} differs from the expected image");
    }

    /// <summary>The checkpoint, exported as a standalone image, equals the model.</summary>
    public async Task AssertCheckpointAsync(string vm, string checkpoint, DiskModel model)
    {
        var target = Dir.File($"export-{Guid.NewGuid():N}.qcow2");
        var r = await Host.Checkpoints.ExportAsync(vm, checkpoint, new CheckpointExportRequest { Path = target }, Ct);
        Assert.True(await model.EqualsImageAsync(r.Files[0]), $"checkpoint {checkpoint} of {vm} differs from the expected image");
        File.Delete(target);
    }

    /// <summary>
    /// Every layer row has its file, each file's backing link matches the row's parent, and no file
    /// in the VM's folder is unknown to the database.
    /// </summary>
    public async Task AssertConsistentAsync(string vm)
    {
        var v = Host.Vms.Find(vm);
        var layers = Host.Store.ListLayers(v.Id);
        var tree = new LayerTree(Host.Paths, layers);
        foreach (var l in layers)
        {
            var info = await QemuImg.InfoAsync(tree.PathOf(l), forceShare: true);
            var expected = l.ParentId is null ? null : tree.PathOf(tree[l.ParentId]);
            Assert.Equal(expected, info.BackingFile);
        }
        var files = Directory.GetFiles(Host.Paths.DisksDir(v.Id)).Select(f => Path.GetFileName(f)!).Order().ToList();
        var known = layers.Select(l => l.Id + ".qcow2").Order().ToList();
        Assert.Equal(known, files);
        Assert.Empty(Host.Store.ListOperations());
        var withState = Host.Store.ListCheckpoints(v.Id).Where(c => c.HasState).Select(c => c.Id + ".state").Order().ToList();
        Assert.Equal(withState, Directory.GetFiles(Host.Paths.StatesDir(v.Id)).Select(f => Path.GetFileName(f)!).Order().ToList());
        if (!IsRunning(vm))
            foreach (var l in layers) Assert.True(await QemuImg.CheckAsync(tree.PathOf(l)), $"qemu-img check found errors in {tree.PathOf(l)}");
    }

    /// <summary>No fleece node, no job, no export, no fleece file, no journal row: the backup's point-in-time view is gone.</summary>
    public async Task AssertNoBackupLeftoversAsync(string vm)
    {
        Assert.Empty(Directory.GetFiles(Host.Paths.RunDir, "*.fleece.qcow2"));
        Assert.Empty(Host.Store.ListOperations());
        if (!IsRunning(vm)) return;
        var qmp = Qmp(vm);
        Assert.Equal(0, (await qmp.ExecuteAsync("query-block-jobs", null, Ct)).GetArrayLength());
        Assert.Equal(0, (await qmp.ExecuteAsync("query-block-exports", null, Ct)).GetArrayLength());
        foreach (var n in (await qmp.ExecuteAsync("query-named-block-nodes", new { flat = true }, Ct)).EnumerateArray())
            Assert.DoesNotContain("fleece", n.GetProperty("node-name").GetString());
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var id in Host.Runtimes.RunningIds.ToList())
            if (Host.Runtimes.Get(id) is { } p) await p.QuitAsync();
        await Host.DisposeAsync();
        Dir.Dispose();
    }
}
