using System.Diagnostics;
using System.Text;
using Haven.Qemu.Images;
using Haven.TestSupport;

namespace Haven.EndToEnd.Tests;

/// <summary>What one run of the haven CLI did.</summary>
public sealed record CliResult(string[] Args, int ExitCode, string Stdout, string Stderr)
{
    public string[] StderrLines => Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);

    public override string ToString() =>
        $"haven {string.Join(' ', Args)} -> exit {ExitCode}\n--- stdout ---\n{Stdout}\n--- stderr ---\n{Stderr}";
}

/// <summary>
/// A real havend process (<c>dotnet havend.dll --data DIR</c>), started and waited for until it listens,
/// and the haven CLI run as a process against it. The dlls are the ones the project references built
/// (same configuration as this test assembly), found from the repository root.
/// </summary>
public sealed class DaemonProcess : IAsyncDisposable
{
    private static readonly TimeSpan ListenTimeout = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan CliTimeout = TimeSpan.FromMinutes(2);

    private readonly Process _process;
    private readonly StringBuilder _stdout = new();
    private readonly StringBuilder _stderr = new();
    private readonly TaskCompletionSource _listening = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _exited = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private DaemonProcess(string dataDir, IReadOnlyDictionary<string, string>? env, IReadOnlyList<string>? args, string? netns)
    {
        DataDir = dataDir;
        // In a network namespace: ip netns exec replaces itself with dotnet, so the pid stays havend's.
        var psi = new ProcessStartInfo(netns is null ? "dotnet" : "ip")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        if (netns is not null) foreach (var a in new[] { "netns", "exec", netns, "dotnet" }) psi.ArgumentList.Add(a);
        psi.ArgumentList.Add(DaemonDll);
        psi.ArgumentList.Add("--data");
        psi.ArgumentList.Add(dataDir);
        foreach (var a in args ?? []) psi.ArgumentList.Add(a);
        psi.Environment.Remove("HAVEN_CRASH_AT");
        psi.Environment.Remove("HAVEN_HOME");
        // havend gets no AWS settings of the test runner's: S3 tests pass them with the CLI's requests.
        foreach (var v in new[] { "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE" })
            psi.Environment.Remove(v);
        if (env is not null)
            foreach (var (k, v) in env) psi.Environment[k] = v;
        _process = new Process { StartInfo = psi, EnableRaisingEvents = true };
        _process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (_stdout) _stdout.Append(e.Data).Append('\n');
            if (e.Data.StartsWith("havend: listening", StringComparison.Ordinal)) _listening.TrySetResult();
        };
        _process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (_stderr) _stderr.Append(e.Data).Append('\n');
        };
        _process.Exited += (_, _) => _exited.TrySetResult();
    }

    public string DataDir { get; }
    public int Pid => _process.Id;
    public bool HasExited => _process.HasExited;
    public int ExitCode => _process.ExitCode;

    public string Stdout { get { lock (_stdout) return _stdout.ToString(); } }
    public string Stderr { get { lock (_stderr) return _stderr.ToString(); } }

    /// <summary>The start-up report line ("havend: data ...; repaired N operation(s); removed ...").</summary>
    public string StartupReport => Stdout.Split('\n').FirstOrDefault(l => l.StartsWith("havend: data ", StringComparison.Ordinal)) ?? "";

    /// <param name="args">More havend arguments after <c>--data DIR</c>, e.g. <c>--host-name NAME</c>.</param>
    /// <param name="netns">A network namespace (ip netns) to run havend in; its bridges and taps are then that namespace's.</param>
    public static async Task<DaemonProcess> StartAsync(string dataDir, IReadOnlyDictionary<string, string>? env = null, IReadOnlyList<string>? args = null, string? netns = null)
    {
        var d = Launch(dataDir, env, args, netns);
        var done = await Task.WhenAny(d._listening.Task, d._exited.Task, Task.Delay(ListenTimeout));
        if (done != d._listening.Task)
        {
            var why = done == d._exited.Task ? $"exited with code {d._process.ExitCode}" : $"did not listen within {ListenTimeout.TotalSeconds} s";
            await d.DisposeAsync();
            throw new InvalidOperationException($"havend {why}\n--- stdout ---\n{d.Stdout}\n--- stderr ---\n{d.Stderr}");
        }
        return d;
    }

    /// <summary>Starts havend without waiting for it to listen (for one that is expected to die first).</summary>
    public static DaemonProcess Launch(string dataDir, IReadOnlyDictionary<string, string>? env = null, IReadOnlyList<string>? args = null, string? netns = null)
    {
        var d = new DaemonProcess(dataDir, env, args, netns);
        d._process.Start();
        d._process.BeginOutputReadLine();
        d._process.BeginErrorReadLine();
        return d;
    }

    public bool Listened => _listening.Task.IsCompleted;

    /// <summary>SIGTERM, then waits for a clean exit.</summary>
    public async Task StopAsync()
    {
        if (_process.HasExited) return;
        await ProcessRunner.RunAsync("kill", ["-TERM", _process.Id.ToString()], throwOnError: false);
        if (!await WaitForExitAsync(TimeSpan.FromSeconds(30)))
            throw new InvalidOperationException("havend did not exit within 30 s of SIGTERM\n" + Stdout + Stderr);
    }

    public async Task<bool> WaitForExitAsync(TimeSpan timeout)
    {
        if (await Task.WhenAny(_exited.Task, Task.Delay(timeout)) != _exited.Task) return false;
        await _process.WaitForExitAsync(); // drains the output readers
        return true;
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            try { _process.Kill(); } catch (InvalidOperationException) { }
            await WaitForExitAsync(TimeSpan.FromSeconds(10));
        }
        _process.Dispose();
    }

    // ---------------- the haven CLI ----------------

    /// <summary>Runs <c>dotnet haven.dll --host DATA args...</c> and returns what it did.</summary>
    public static Task<CliResult> HavenAsync(string dataDir, CancellationToken ct, params string[] args) => HavenAsync(dataDir, null, ct, args);

    /// <summary>As above, with <paramref name="env"/> set (a null value removes the variable) in the CLI's environment.</summary>
    public static async Task<CliResult> HavenAsync(string dataDir, IReadOnlyDictionary<string, string?>? env, CancellationToken ct, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add(CliDll);
        psi.ArgumentList.Add("--host");
        psi.ArgumentList.Add(dataDir);
        foreach (var a in args) psi.ArgumentList.Add(a);
        foreach (var v in new[] { "HAVEN_HOST", "HAVEN_TOKEN", "HAVEN_HOME" }) psi.Environment.Remove(v);
        psi.Environment["COLUMNS"] = "200";
        if (env is not null)
            foreach (var (name, value) in env)
                if (value is null) psi.Environment.Remove(name); else psi.Environment[name] = value;
        using var p = new Process { StartInfo = psi };
        p.Start();
        p.StandardInput.Close();
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(CliTimeout);
        try { await p.WaitForExitAsync(timeout.Token); }
        catch (OperationCanceledException)
        {
            p.Kill(entireProcessTree: true);
            ct.ThrowIfCancellationRequested();
            throw new TimeoutException($"haven {string.Join(' ', args)} did not finish within {CliTimeout}");
        }
        return new CliResult(args, p.ExitCode, await stdout, await stderr);
    }

    /// <summary>Runs haven against this havend's data folder.</summary>
    public Task<CliResult> Haven(params string[] args) => HavenAsync(DataDir, CancellationToken.None, args);

    // ---------------- locating the built programs ----------------

    /// <summary>Debug or Release: whatever this test assembly was built as.</summary>
    private static string Configuration =>
        Path.GetFileName(Path.GetDirectoryName(Path.TrimEndingDirectorySeparator(AppContext.BaseDirectory))!)!;

    private static string TargetFramework => Path.GetFileName(Path.TrimEndingDirectorySeparator(AppContext.BaseDirectory));

    public static string DaemonDll => Built("Haven.Daemon", "havend.dll");
    public static string CliDll => Built("Haven.Cli", "haven.dll");

    private static string Built(string project, string dll)
    {
        var path = Path.Combine(TestGuest.RepoRoot, "src", project, "bin", Configuration, TargetFramework, dll);
        if (!File.Exists(path)) throw new FileNotFoundException($"{dll} is not built (expected at {path})", path);
        return path;
    }
}
