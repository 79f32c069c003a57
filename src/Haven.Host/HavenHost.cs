using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using Haven.Host.Backups;
using Haven.Host.Checkpoints;
using Haven.Host.State;
using Haven.Host.Vms;
using Haven.Qemu.Runtime;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Haven.Host;

/// <summary>
/// One host's state and services. Operations on one VM are serialised by a per-VM lock; creating and
/// removing VMs also take the host lock so names stay unique. Each VM lock taken outside a named
/// operation (<see cref="RunOperationAsync{T}"/>) starts one, so every log line of the work carries its VM and
/// operation id.
/// </summary>
public sealed class HavenHost : IAsyncDisposable
{
    private readonly ConcurrentDictionary<string, SemaphoreSlim> _vmLocks = new();
    private readonly SemaphoreSlim _hostLock = new(1, 1);
    private readonly ConcurrentDictionary<AcceleratorSetting, Accelerator> _accel = new();

    public HavenHost(string dataDirectory) : this(dataDirectory, new HavenHostOptions()) { }

    public HavenHost(string dataDirectory, HavenHostOptions options)
    {
        Time = options.Time;
        Logs = options.LoggerFactory;
        Log = Logs.CreateLogger("Haven.Host");
        Paths = new HostPaths(dataDirectory);
        Paths.EnsureCreated();
        Store = new HostStore(Paths.Database);
        Runtimes = new VmRuntimes(this);
        Vms = new VmService(this);
        Consoles = new VmConsoles(this);
        Checkpoints = new CheckpointService(this);
        Removal = new CheckpointRemoval(this);
        Repositories = new RepositoryAccess(this);
        Backups = new BackupService(this);
        Restores = new RestoreService(this);
        Mounts = new BackupMounts(this);
        Tracking = new Tracking.ChangeTracker(this);
        Jobs = new JobService(this);
        Replicas = new Replication.ReplicaService(this);
        Replications = new Replication.ReplicationService(this);
        Extended = new Replication.ExtendedReplication(this);
        Schedule = new Replication.CycleSchedule(this);
    }

    /// <summary>The clock of everything time-driven: scheduler, health, resync window, statistics.</summary>
    public TimeProvider Time { get; }
    public ILoggerFactory Logs { get; }
    internal ILogger Log { get; }
    public HostPaths Paths { get; }
    public HostStore Store { get; }
    public VmRuntimes Runtimes { get; }
    public VmService Vms { get; }
    public VmConsoles Consoles { get; }
    public CheckpointService Checkpoints { get; }
    public CheckpointRemoval Removal { get; }
    public RepositoryAccess Repositories { get; }
    public BackupService Backups { get; }
    public RestoreService Restores { get; }
    public BackupMounts Mounts { get; }
    /// <summary>Change tracking of VM disks for backups and replication alike.</summary>
    public Tracking.ChangeTracker Tracking { get; }
    public JobService Jobs { get; }
    public Replication.ReplicaService Replicas { get; }
    public Replication.ReplicationService Replications { get; }
    public Replication.ExtendedReplication Extended { get; }
    public Replication.CycleSchedule Schedule { get; }

    /// <summary>Re-attaches to running VMs and repairs what a crash left half done. Call once before serving.</summary>
    public Task<ReconcileReport> StartAsync(CancellationToken ct = default) => new Reconciler(this).RunAsync(ct);

    public async Task<Accelerator> ResolveAcceleratorAsync(AcceleratorSetting setting, CancellationToken ct)
    {
        if (_accel.TryGetValue(setting, out var a)) return a;
        a = await AcceleratorProbe.ResolveAsync(setting, ct);
        _accel[setting] = a;
        return a;
    }

    /// <summary>
    /// Serialises work on one VM. Not async on purpose: the operation it starts (when the caller is in none for
    /// this VM) must stay current in the caller's flow, which an async method's context would undo on return.
    /// </summary>
    public Task<IAsyncDisposable> LockVmAsync(string vmId, CancellationToken ct,
        [CallerMemberName] string caller = "", [CallerFilePath] string callerFile = "")
    {
        var started = VmOperation.Current is { } current && current.VmId == vmId
            ? null
            : VmOperation.Begin(Log, OperationName(callerFile, caller), Store.FindVm(vmId)?.Name ?? vmId, vmId, Time, logged: false);
        return AcquireAsync(_vmLocks.GetOrAdd(vmId, _ => new SemaphoreSlim(1, 1)), started, ct);
    }

    private static async Task<IAsyncDisposable> AcquireAsync(SemaphoreSlim sem, VmOperation? started, CancellationToken ct)
    {
        try { await sem.WaitAsync(ct); }
        catch { started?.End(null); throw; }
        return new Releaser(sem, started);
    }

    /// <summary>"CheckpointService.Create" from the caller's file and method.</summary>
    private static string OperationName(string file, string member) =>
        Path.GetFileNameWithoutExtension(file.Replace('\\', '/')) + "." + (member.EndsWith("Async", StringComparison.Ordinal) ? member[..^5] : member);

    /// <summary>
    /// Runs one operation on a VM (or on the host, <paramref name="vmName"/> null) and logs its start, its end and
    /// its failure with the VM, an operation id and the duration: the one place operations are logged.
    /// </summary>
    public async Task<T> RunOperationAsync<T>(string operation, string? vmName, Func<Task<T>> work)
    {
        var vmId = vmName is null ? null : Store.FindVmByName(vmName)?.Id;
        var op = VmOperation.Begin(Log, operation, vmName, vmId, Time, logged: true);
        try
        {
            var result = await work();
            op.End(null);
            return result;
        }
        catch (Exception e)
        {
            op.End(e);
            throw;
        }
    }

    public Task RunOperationAsync(string operation, string? vmName, Func<Task> work) =>
        RunOperationAsync<bool>(operation, vmName, async () => { await work(); return true; });

    /// <summary>
    /// Runs a clean-up step that must not hide the failure being cleaned up after: if it fails, the failure is
    /// logged at Warning with the VM and operation, and the caller carries on.
    /// </summary>
    public void Cleanup(string what, Action step)
    {
        try { step(); }
        catch (Exception e) { LogCleanupFailure(Log, what, e); }
    }

    public async Task CleanupAsync(string what, Func<Task> step)
    {
        try { await step(); }
        catch (Exception e) { LogCleanupFailure(Log, what, e); }
    }

    internal static void LogCleanupFailure(ILogger log, string what, Exception e)
    {
        var op = VmOperation.Current;
        log.LogWarning(e, "cleanup failed: {Cleanup} (VM {Vm} {VmId}, operation {Operation} {OperationId}): {Error}",
            what, op?.VmName, op?.VmId, op?.Name, op?.Id, e.Message.ReplaceLineEndings(" "));
    }

    public async Task<IAsyncDisposable> LockHostAsync(CancellationToken ct)
    {
        await _hostLock.WaitAsync(ct);
        return new Releaser(_hostLock);
    }

    private sealed class Releaser(SemaphoreSlim sem, VmOperation? started = null) : IAsyncDisposable
    {
        private int _released;
        public ValueTask DisposeAsync()
        {
            if (Interlocked.Exchange(ref _released, 1) == 0)
            {
                sem.Release();
                started?.End(null);
            }
            return ValueTask.CompletedTask;
        }
    }

    public async ValueTask DisposeAsync()
    {
        // VMs keep running: they outlive the daemon by design.
        await Runtimes.DisposeAsync();
        await Mounts.DisposeAsync();
        Repositories.Dispose();
        Store.Dispose();
    }
}
