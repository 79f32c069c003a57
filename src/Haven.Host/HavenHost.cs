using System.Collections.Concurrent;
using Haven.Host.Backups;
using Haven.Host.Checkpoints;
using Haven.Host.State;
using Haven.Host.Vms;
using Haven.Qemu.Runtime;

namespace Haven.Host;

/// <summary>
/// One host's state and services. Operations on one VM are serialised by a per-VM lock; creating and
/// removing VMs also take the host lock so names stay unique.
/// </summary>
public sealed class HavenHost : IAsyncDisposable
{
    private readonly ConcurrentDictionary<string, SemaphoreSlim> _vmLocks = new();
    private readonly SemaphoreSlim _hostLock = new(1, 1);
    private readonly ConcurrentDictionary<AcceleratorSetting, Accelerator> _accel = new();

    public HavenHost(string dataDirectory)
    {
        Paths = new HostPaths(dataDirectory);
        Paths.EnsureCreated();
        Store = new HostStore(Paths.Database);
        Runtimes = new VmRuntimes(this);
        Vms = new VmService(this);
        Checkpoints = new CheckpointService(this);
        Removal = new CheckpointRemoval(this);
        Repositories = new RepositoryAccess(this);
        Backups = new BackupService(this);
        Restores = new RestoreService(this);
        Stamps = new ReferencePointStamps(this);
        Jobs = new JobService(this);
        Replicas = new Replication.ReplicaService(this);
        Replications = new Replication.ReplicationService(this);
        Extended = new Replication.ExtendedReplication(this);
    }

    public HostPaths Paths { get; }
    public HostStore Store { get; }
    public VmRuntimes Runtimes { get; }
    public VmService Vms { get; }
    public CheckpointService Checkpoints { get; }
    public CheckpointRemoval Removal { get; }
    public RepositoryAccess Repositories { get; }
    public BackupService Backups { get; }
    public RestoreService Restores { get; }
    public ReferencePointStamps Stamps { get; }
    public JobService Jobs { get; }
    public Replication.ReplicaService Replicas { get; }
    public Replication.ReplicationService Replications { get; }
    public Replication.ExtendedReplication Extended { get; }

    /// <summary>Re-attaches to running VMs and repairs what a crash left half done. Call once before serving.</summary>
    public Task<ReconcileReport> StartAsync(CancellationToken ct = default) => new Reconciler(this).RunAsync(ct);

    public async Task<Accelerator> ResolveAcceleratorAsync(AcceleratorSetting setting, CancellationToken ct)
    {
        if (_accel.TryGetValue(setting, out var a)) return a;
        a = await AcceleratorProbe.ResolveAsync(setting, ct);
        _accel[setting] = a;
        return a;
    }

    public async Task<IAsyncDisposable> LockVmAsync(string vmId, CancellationToken ct)
    {
        var sem = _vmLocks.GetOrAdd(vmId, _ => new SemaphoreSlim(1, 1));
        await sem.WaitAsync(ct);
        return new Releaser(sem);
    }

    public async Task<IAsyncDisposable> LockHostAsync(CancellationToken ct)
    {
        await _hostLock.WaitAsync(ct);
        return new Releaser(_hostLock);
    }

    private sealed class Releaser(SemaphoreSlim sem) : IAsyncDisposable
    {
        private int _released;
        public ValueTask DisposeAsync()
        {
            if (Interlocked.Exchange(ref _released, 1) == 0) sem.Release();
            return ValueTask.CompletedTask;
        }
    }

    public async ValueTask DisposeAsync()
    {
        // VMs keep running: they outlive the daemon by design.
        await Runtimes.DisposeAsync();
        Repositories.Dispose();
        Store.Dispose();
    }
}
