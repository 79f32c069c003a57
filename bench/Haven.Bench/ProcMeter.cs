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
    public static (double Self, double Children)? Cpu(int pid) => Times(pid) is { } t ? (t.User + t.System, t.Children) : null;

    /// <summary>utime, stime and cutime+cstime in seconds.</summary>
    public static (double User, double System, double Children)? Times(int pid)
    {
        string stat;
        try { stat = File.ReadAllText($"/proc/{pid}/stat"); }
        catch (IOException) { return null; }
        // Fields after the command name in parentheses: state is field 3; utime is 14 … cstime 17.
        var f = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        double T(int field) => long.Parse(f[field - 3]) / TicksPerSecond;
        return (T(14), T(15), T(16) + T(17));
    }

    /// <summary>CPU seconds (utime+stime) of each live thread, by thread id, with the thread's name (comm).</summary>
    public static Dictionary<int, (string Name, double Cpu)> ThreadTimes(int pid)
    {
        var result = new Dictionary<int, (string, double)>();
        try
        {
            foreach (var task in Directory.EnumerateDirectories($"/proc/{pid}/task"))
            {
                string stat;
                try { stat = File.ReadAllText(Path.Combine(task, "stat")); }
                catch (IOException) { continue; }
                var open = stat.IndexOf('(');
                var close = stat.LastIndexOf(')');
                var f = stat[(close + 2)..].Split(' ');
                result[int.Parse(Path.GetFileName(task))] = (stat[(open + 1)..close], (long.Parse(f[11]) + long.Parse(f[12])) / TicksPerSecond);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        return result;
    }

    /// <summary>How many of the process's threads are running (R) and in uninterruptible sleep (D, usually I/O) right now.</summary>
    public static (int Running, int DiskWait) ThreadStates(int pid)
    {
        int r = 0, d = 0;
        try
        {
            foreach (var task in Directory.EnumerateDirectories($"/proc/{pid}/task"))
            {
                string stat;
                try { stat = File.ReadAllText(Path.Combine(task, "stat")); }
                catch (IOException) { continue; }
                var state = stat[stat.LastIndexOf(')') + 2];
                if (state == 'R') r++;
                else if (state == 'D') d++;
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        return (r, d);
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

/// <summary>
/// What one measured phase cost a process: CPU seconds (user, system), its children's CPU, peak RSS, and the
/// average number of its threads found running (R) or waiting in the kernel for I/O (D) when sampled.
/// </summary>
public sealed record ProcessCost(double UserSeconds, double SystemSeconds, double ChildCpuSeconds, double PeakRssMiB, double ChildPeakRssMiB,
    string ChildNames, double AvgRunning, double AvgDiskWait, IReadOnlyList<(string Thread, double Cpu)> ByThread)
{
    /// <summary>"name 1.23 s, name 0.45 s, …" for the thread groups that used at least 2% of the CPU.</summary>
    public string ThreadSummary => string.Join(", ", ByThread.Where(t => t.Cpu >= 0.02 * CpuSeconds && t.Cpu >= 0.01).Select(t => $"{t.Thread} {t.Cpu:F2} s"));

    public double CpuSeconds => UserSeconds + SystemSeconds;
}

/// <summary>
/// Measures one process over a phase: CPU = delta of utime+stime (plus cutime+cstime of the children it
/// reaped), peak RSS = VmHWM after resetting it at the start; children's peak RSS is sampled every 100 ms
/// (they may exit before the phase ends, so their VmHWM is read while they run).
/// </summary>
public sealed class ProcMeter : IAsyncDisposable
{
    private readonly int _pid;
    private readonly (double User, double System, double Children) _start;
    private readonly Dictionary<int, (string Name, double Cpu)> _threadsAtStart;
    // Threads that end during the phase (thread-pool threads retire) are caught by the sampler's last look.
    private readonly Dictionary<int, (string Name, double Cpu)> _threadsLastSeen = [];
    private readonly bool _sampleChildren;
    private long _samples, _running, _diskWait;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _sampler;
    private long _childPeakKiB;
    private readonly HashSet<string> _childNames = [];

    private ProcMeter(int pid, bool sampleChildren)
    {
        _pid = pid;
        Proc.ResetPeak(pid);
        _start = Proc.Times(pid) ?? throw new InvalidOperationException($"process {pid} is gone");
        _threadsAtStart = Proc.ThreadTimes(pid);
        _sampleChildren = sampleChildren;
        _sampler = Task.Run(SampleAsync);
    }

    public static ProcMeter Start(int pid, bool sampleChildren = true) => new(pid, sampleChildren);

    private async Task SampleAsync()
    {
        var tick = 0;
        while (!_stop.IsCancellationRequested)
        {
            var (r, d) = Proc.ThreadStates(_pid);
            _samples++;
            _running += r;
            _diskWait += d;
            if (tick % 10 == 0)
                foreach (var (tid, t) in Proc.ThreadTimes(_pid)) _threadsLastSeen[tid] = t;
            if (_sampleChildren && tick % 5 == 0)
            {
                foreach (var child in Proc.ChildrenOf(_pid))
                {
                    if (Proc.StatusKiB(child, "VmHWM") is not { } hwm) continue;
                    lock (_childNames) _childNames.Add(Proc.CommandName(child));
                    if (hwm > Interlocked.Read(ref _childPeakKiB)) Interlocked.Exchange(ref _childPeakKiB, hwm);
                }
            }
            tick++;
            try { await Task.Delay(20, _stop.Token); }
            catch (OperationCanceledException) { }
        }
    }

    public async Task<ProcessCost> StopAsync()
    {
        await _stop.CancelAsync();
        await _sampler;
        var end = Proc.Times(_pid) ?? throw new InvalidOperationException($"process {_pid} ended during the phase");
        var peak = Proc.StatusKiB(_pid, "VmHWM") ?? 0;
        string names;
        lock (_childNames) names = string.Join(", ", _childNames.Order());
        var n = Math.Max(1, _samples);
        foreach (var (tid, t) in Proc.ThreadTimes(_pid)) _threadsLastSeen[tid] = t;
        var byThread = _threadsLastSeen
            .Select(kv => (Name: Normalize(kv.Value.Name), Cpu: kv.Value.Cpu - (_threadsAtStart.TryGetValue(kv.Key, out var s0) && s0.Name == kv.Value.Name ? s0.Cpu : 0)))
            .GroupBy(t => t.Name).Select(g => (g.Key, g.Sum(t => t.Cpu))).Where(g => g.Item2 > 0).OrderByDescending(g => g.Item2).ToList();
        return new ProcessCost(end.User - _start.User, end.System - _start.System, end.Children - _start.Children, peak / 1024.0, _childPeakKiB / 1024.0,
            names, (double)_running / n, (double)_diskWait / n, byThread);
    }

    /// <summary>Thread names with numbers folded: ".NET TP Worker", ".NET Server GC", "qemu-system-x86" …</summary>
    private static string Normalize(string name) => name.TrimEnd('0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ' ', '#', '/');

    public async ValueTask DisposeAsync()
    {
        if (!_stop.IsCancellationRequested) await _stop.CancelAsync();
        try { await _sampler; } catch (OperationCanceledException) { }
        _stop.Dispose();
    }
}
