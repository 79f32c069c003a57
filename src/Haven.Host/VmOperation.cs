using Microsoft.Extensions.Logging;

namespace Haven.Host;

/// <summary>How a host is built: its clock and its logs. Defaults: the system clock, no logging.</summary>
public sealed class HavenHostOptions
{
    public TimeProvider Time { get; init; } = TimeProvider.System;
    public ILoggerFactory LoggerFactory { get; init; } = Microsoft.Extensions.Logging.Abstractions.NullLoggerFactory.Instance;
}

/// <summary>
/// One operation in progress (a checkpoint, a backup, a replication cycle...): the VM, a name, an id for the
/// logs and when it started. It is current for the async flow that began it, so clean-up warnings anywhere
/// below name it, and every log line written meanwhile carries it as a logging scope.
/// </summary>
public sealed class VmOperation
{
    private static readonly AsyncLocal<VmOperation?> CurrentOperation = new();

    private readonly ILogger _log;
    private readonly TimeProvider _time;
    private readonly long _start;
    private readonly bool _logged;
    private readonly VmOperation? _outer;
    private IDisposable? _scope;
    private int _ended;

    private VmOperation(ILogger log, string name, string? vmName, string? vmId, TimeProvider time, bool logged)
    {
        _log = log;
        _time = time;
        _logged = logged;
        _outer = CurrentOperation.Value;
        Name = name;
        VmName = vmName;
        VmId = vmId;
        _start = time.GetTimestamp();
    }

    /// <summary>The operation the calling code runs in, if any.</summary>
    public static VmOperation? Current => CurrentOperation.Value;

    public string Id { get; } = HostPaths.NewId();
    public string Name { get; }
    public string? VmName { get; }
    public string? VmId { get; }

    /// <summary>
    /// Makes a new operation current and logs its start: at Information when <paramref name="logged"/> (a named
    /// operation), at Debug for the implicit one a VM lock starts.
    /// </summary>
    internal static VmOperation Begin(ILogger log, string name, string? vmName, string? vmId, TimeProvider time, bool logged)
    {
        var op = new VmOperation(log, name, vmName, vmId, time, logged);
        CurrentOperation.Value = op;
        op._scope = log.BeginScope(new Scope(op));
        log.Log(logged ? LogLevel.Information : LogLevel.Debug, "operation {OperationId} {Operation} on VM {Vm} ({VmId}) started",
            op.Id, op.Name, op.VmName ?? "-", op.VmId ?? "-");
        return op;
    }

    /// <summary>Logs the end (or the failure) with the duration, once, and makes the outer operation current again.</summary>
    internal void End(Exception? failure)
    {
        if (Interlocked.Exchange(ref _ended, 1) != 0) return;
        var ms = Math.Round(_time.GetElapsedTime(_start).TotalMilliseconds);
        const string failed = "operation {OperationId} {Operation} on VM {Vm} ({VmId}) failed after {DurationMs} ms: {Error}";
        switch (failure)
        {
            case null:
                _log.Log(_logged ? LogLevel.Information : LogLevel.Debug, "operation {OperationId} {Operation} on VM {Vm} ({VmId}) ended in {DurationMs} ms",
                    Id, Name, VmName ?? "-", VmId ?? "-", ms);
                break;
            case OperationCanceledException:
                _log.LogInformation("operation {OperationId} {Operation} on VM {Vm} ({VmId}) cancelled after {DurationMs} ms", Id, Name, VmName ?? "-", VmId ?? "-", ms);
                break;
            case HavenException:
                // Refused or failed with a message for the user: the caller got it; the log keeps it at Warning.
                _log.LogWarning(failed, Id, Name, VmName ?? "-", VmId ?? "-", ms, failure.Message.ReplaceLineEndings(" "));
                break;
            default:
                _log.LogError(failure, failed, Id, Name, VmName ?? "-", VmId ?? "-", ms, failure.Message.ReplaceLineEndings(" "));
                break;
        }
        _scope?.Dispose();
        if (CurrentOperation.Value == this) CurrentOperation.Value = _outer;
    }

    /// <summary>The logging scope: structured (Vm, VmId, Operation, OperationId) and short as text.</summary>
    private sealed class Scope(VmOperation op) : IReadOnlyList<KeyValuePair<string, object?>>
    {
        public KeyValuePair<string, object?> this[int index] => index switch
        {
            0 => new("Vm", op.VmName),
            1 => new("VmId", op.VmId),
            2 => new("Operation", op.Name),
            _ => new("OperationId", op.Id),
        };

        public int Count => 4;

        public IEnumerator<KeyValuePair<string, object?>> GetEnumerator()
        {
            for (var i = 0; i < Count; i++) yield return this[i];
        }

        System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();

        public override string ToString() => $"vm={op.VmName ?? "-"} op={op.Name} {op.Id}";
    }
}
