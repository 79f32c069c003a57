using System.Runtime.InteropServices;

namespace Haven.Bench;

/// <summary>CPU time and peak RSS of a running process (and its children) read from /proc.</summary>
public static partial class Proc
{
    private static readonly double TicksPerSecond = Sysconf(2 /* _SC_CLK_TCK */) is var t and > 0 ? t : 100;

    [LibraryImport("libc", EntryPoint = "sysconf")]
    private static partial long Sysconf(int name);

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);

    public static void Terminate(int pid) => Kill(pid, 15);

    /// <summary>utime+stime of the process, and cutime+cstime (children it has waited for), in seconds.</summary>
    public static (double Self, double Children)? Cpu(int pid)
    {
        string stat;
        try { stat = File.ReadAllText($"/proc/{pid}/stat"); }
        catch (IOException) { return null; }
        // Fields after the command name in parentheses: state is field 3; utime is 14 … cstime 17.
        var f = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        double T(int field) => long.Parse(f[field - 3]) / TicksPerSecond;
        return (T(14) + T(15), T(16) + T(17));
    }

    public static int? ParentOf(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            return int.Parse(stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[1]);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException) { return null; }
    }

    /// <summary>A field of /proc/pid/status in KiB (VmHWM, VmRSS), or null when the process is gone.</summary>
    public static long? StatusKiB(int pid, string field)
    {
        try
        {
            foreach (var line in File.ReadLines($"/proc/{pid}/status"))
                if (line.StartsWith(field + ":", StringComparison.Ordinal))
                    return long.Parse(line[(field.Length + 1)..].Trim().Split(' ')[0]);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        return null;
    }

    /// <summary>Resets the peak RSS (VmHWM) to the current RSS.</summary>
    public static bool ResetPeak(int pid)
    {
        try { File.WriteAllText($"/proc/{pid}/clear_refs", "5"); return true; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return false; }
    }

    public static IEnumerable<int> ChildrenOf(int pid)
    {
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out var p)) continue;
            if (ParentOf(p) == pid) yield return p;
        }
    }

    public static string CommandName(int pid)
    {
        try { return File.ReadAllText($"/proc/{pid}/comm").Trim(); }
        catch (IOException) { return "?"; }
    }
}

/// <summary>What one measured phase cost a process: CPU seconds and peak RSS.</summary>
public sealed record ProcessCost(double CpuSeconds, double ChildCpuSeconds, double PeakRssMiB, double ChildPeakRssMiB, string ChildNames);

/// <summary>
/// Measures one process over a phase: CPU = delta of utime+stime (plus cutime+cstime of the children it
/// reaped), peak RSS = VmHWM after resetting it at the start; children's peak RSS is sampled every 50 ms
/// (they may exit before the phase ends, so their VmHWM is read while they run).
/// </summary>
public sealed class ProcMeter : IAsyncDisposable
{
    private readonly int _pid;
    private readonly (double Self, double Children) _start;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _sampler;
    private long _childPeakKiB;
    private readonly HashSet<string> _childNames = [];

    private ProcMeter(int pid, bool sampleChildren)
    {
        _pid = pid;
        Proc.ResetPeak(pid);
        _start = Proc.Cpu(pid) ?? throw new InvalidOperationException($"process {pid} is gone");
        _sampler = sampleChildren ? Task.Run(SampleAsync) : Task.CompletedTask;
    }

    public static ProcMeter Start(int pid, bool sampleChildren = true) => new(pid, sampleChildren);

    private async Task SampleAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            foreach (var child in Proc.ChildrenOf(_pid))
            {
                if (Proc.StatusKiB(child, "VmHWM") is not { } hwm) continue;
                lock (_childNames) _childNames.Add(Proc.CommandName(child));
                if (hwm > Interlocked.Read(ref _childPeakKiB)) Interlocked.Exchange(ref _childPeakKiB, hwm);
            }
            try { await Task.Delay(50, _stop.Token); }
            catch (OperationCanceledException) { }
        }
    }

    public async Task<ProcessCost> StopAsync()
    {
        await _stop.CancelAsync();
        await _sampler;
        var end = Proc.Cpu(_pid) ?? throw new InvalidOperationException($"process {_pid} ended during the phase");
        var peak = Proc.StatusKiB(_pid, "VmHWM") ?? 0;
        string names;
        lock (_childNames) names = string.Join(", ", _childNames.Order());
        return new ProcessCost(end.Self - _start.Self, end.Children - _start.Children, peak / 1024.0, _childPeakKiB / 1024.0, names);
    }

    public async ValueTask DisposeAsync()
    {
        if (!_stop.IsCancellationRequested) await _stop.CancelAsync();
        try { await _sampler; } catch (OperationCanceledException) { }
        _stop.Dispose();
    }
}
