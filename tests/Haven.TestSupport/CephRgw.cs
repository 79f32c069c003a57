using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Haven.Storage.S3;

namespace Haven.TestSupport;

/// <summary>
/// One Ceph RGW (S3) per test process, started on first use by scripts/ceph-start.sh on free loopback
/// ports and stopped at process exit. When HAVEN_TEST_S3_ENDPOINT is set (with HAVEN_TEST_S3_ACCESS_KEY,
/// HAVEN_TEST_S3_SECRET_KEY, and HAVEN_TEST_CEPH_DIR to allow gateway restarts) that running instance is
/// used instead and left running.
/// </summary>
public sealed class CephRgw
{
    private static readonly Lazy<Task<CephRgw>> Shared = new(StartOrAttachAsync);
    private static int _buckets;

    private CephRgw(string endpoint, string accessKey, string secretKey, string? dir)
    {
        Endpoint = endpoint;
        AccessKey = accessKey;
        SecretKey = secretKey;
        Dir = dir;
    }

    public string Endpoint { get; }
    public string AccessKey { get; }
    public string SecretKey { get; }
    /// <summary>The cluster's folder (ceph.conf, run/*.pid, log/); null when attached without HAVEN_TEST_CEPH_DIR.</summary>
    public string? Dir { get; }
    public bool CanRestartGateway => Dir is not null;

    public static Task<CephRgw> GetAsync() => Shared.Value;

    /// <summary>Settings for this gateway; <paramref name="endpoint"/> overrides it (e.g. a proxy in front).</summary>
    public S3Settings Settings(string? endpoint = null, string? secretKey = null, int maxAttempts = 5)
        => new()
        {
            Endpoint = endpoint ?? Endpoint,
            Region = "us-east-1",
            AccessKeyId = AccessKey,
            SecretAccessKey = secretKey ?? SecretKey,
            MaxAttempts = maxAttempts,
            RequestTimeout = TimeSpan.FromSeconds(30),
        };

    /// <summary>
    /// Puts this gateway in the process's AWS environment (endpoint, keys, region), the way a user would
    /// configure havend; S3 locations given without settings then reach it. Every caller sets the same values.
    /// </summary>
    public void ExportAwsEnvironment()
    {
        Environment.SetEnvironmentVariable("AWS_ENDPOINT_URL", Endpoint);
        Environment.SetEnvironmentVariable("AWS_ACCESS_KEY_ID", AccessKey);
        Environment.SetEnvironmentVariable("AWS_SECRET_ACCESS_KEY", SecretKey);
        Environment.SetEnvironmentVariable("AWS_REGION", "us-east-1");
    }

    /// <summary>A bucket name no other test (in this or another test process) uses.</summary>
    public string NewBucketName()
        => $"hv-{Environment.ProcessId}-{Interlocked.Increment(ref _buckets)}-{Guid.NewGuid().ToString("N")[..8]}";

    /// <summary>Kills radosgw (SIGKILL), as if the gateway died mid-operation; the cluster itself keeps running.</summary>
    public async Task StopGatewayAsync()
    {
        var pidFile = Path.Combine(RequireDir(), "run", "rgw.pid");
        if (!int.TryParse(File.ReadAllText(pidFile).Trim(), out var pid)) throw new InvalidOperationException($"no pid in {pidFile}");
        try
        {
            using var process = Process.GetProcessById(pid);
            process.Kill();
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (ArgumentException) { } // already gone
    }

    /// <summary>Starts radosgw again (same config) and waits until it answers HTTP.</summary>
    public async Task StartGatewayAsync()
    {
        var dir = RequireDir();
        var conf = Path.Combine(dir, "ceph.conf");
        var script = $"radosgw -c '{conf}' -n client.rgw.a -f >> '{dir}/log/rgw.a.out' 2>&1 < /dev/null & echo $! > '{dir}/run/rgw.pid'";
        var (code, output) = await RunAsync("bash", ["-c", script], TimeSpan.FromSeconds(30));
        if (code != 0) throw new InvalidOperationException($"radosgw restart failed: {output}");
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
        var deadline = DateTime.UtcNow.AddSeconds(90);
        while (true)
        {
            try { using var _ = await http.GetAsync(Endpoint); return; }
            catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
            {
                if (DateTime.UtcNow > deadline) throw new TimeoutException($"radosgw did not answer at {Endpoint} within 90 s after a restart");
                await Task.Delay(200);
            }
        }
    }

    private string RequireDir()
        => Dir ?? throw new InvalidOperationException("the gateway can only be restarted when its cluster folder is known (HAVEN_TEST_CEPH_DIR)");

    private static async Task<CephRgw> StartOrAttachAsync()
    {
        if (Environment.GetEnvironmentVariable("HAVEN_TEST_S3_ENDPOINT") is { Length: > 0 } endpoint)
        {
            return new CephRgw(endpoint,
                Environment.GetEnvironmentVariable("HAVEN_TEST_S3_ACCESS_KEY") ?? throw new InvalidOperationException("HAVEN_TEST_S3_ACCESS_KEY is not set"),
                Environment.GetEnvironmentVariable("HAVEN_TEST_S3_SECRET_KEY") ?? throw new InvalidOperationException("HAVEN_TEST_S3_SECRET_KEY is not set"),
                Environment.GetEnvironmentVariable("HAVEN_TEST_CEPH_DIR") is { Length: > 0 } d ? d : null);
        }
        var root = RepoRoot();
        var dir = Directory.CreateTempSubdirectory("hvceph").FullName;
        var stop = Path.Combine(root, "scripts", "ceph-stop.sh");
        var rgwPort = FreePort();
        var monPort = FreeMonPort();
        var env = new Dictionary<string, string> { ["RGW_PORT"] = rgwPort.ToString(), ["MON_PORT"] = monPort.ToString() };
        var (code, output) = await RunAsync("bash", [Path.Combine(root, "scripts", "ceph-start.sh"), dir], TimeSpan.FromSeconds(120), env);
        if (code != 0)
        {
            await RunAsync("bash", [stop, dir], TimeSpan.FromSeconds(60));
            throw new InvalidOperationException($"scripts/ceph-start.sh failed (exit {code}): {output}");
        }
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            using var p = Process.Start(new ProcessStartInfo("bash", [stop, dir]) { RedirectStandardOutput = true, RedirectStandardError = true });
            p?.WaitForExit(60_000);
        };
        var values = File.ReadAllLines(Path.Combine(dir, "env"))
            .Select(l => l.Split('=', 2)).Where(p => p.Length == 2).ToDictionary(p => p[0], p => p[1]);
        return new CephRgw(values["S3_ENDPOINT"], values["S3_ACCESS_KEY"], values["S3_SECRET_KEY"], dir);
    }

    private static string RepoRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "Haven.slnx"))) return d.FullName;
        throw new InvalidOperationException($"no Haven.slnx above {AppContext.BaseDirectory}");
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    /// <summary>A base port P with P and P+1 free; the daemons also bind in P+10..P+99.</summary>
    private static int FreeMonPort()
    {
        for (var i = 0; i < 50; i++)
        {
            var port = 20000 + Random.Shared.Next(0, 300) * 100;
            if (IsFree(port) && IsFree(port + 1) && IsFree(port + 10)) return port;
        }
        throw new InvalidOperationException("no free port range for the Ceph monitor");
    }

    private static bool IsFree(int port)
    {
        try
        {
            using var listener = new TcpListener(IPAddress.Loopback, port);
            listener.Start();
            return true;
        }
        catch (SocketException) { return false; }
    }

    private static async Task<(int Code, string Output)> RunAsync(string file, string[] args, TimeSpan timeout, Dictionary<string, string>? env = null)
    {
        var info = new ProcessStartInfo(file, args) { RedirectStandardOutput = true, RedirectStandardError = true };
        if (env is not null) foreach (var (k, v) in env) info.Environment[k] = v;
        using var process = Process.Start(info) ?? throw new InvalidOperationException($"cannot start {file}");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout);
        try { await process.WaitForExitAsync(cts.Token); }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            return (-1, $"timed out after {timeout.TotalSeconds:0} s: {await stderr}");
        }
        return (process.ExitCode, (await stdout + await stderr).Trim());
    }
}
