using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Haven.Bench.Storage;

/// <summary>A throwaway one-node Ceph with radosgw, through scripts/ceph-start.sh and ceph-stop.sh, on free ports.</summary>
public sealed class Ceph
{
    private readonly string _repoRoot;

    private Ceph(string repoRoot, string dir, string endpoint, string accessKey, string secretKey, int rgwPort, int monPort)
    {
        _repoRoot = repoRoot;
        Dir = dir;
        Endpoint = endpoint;
        AccessKey = accessKey;
        SecretKey = secretKey;
        RgwPort = rgwPort;
        MonPort = monPort;
    }

    public string Dir { get; }
    public string Endpoint { get; }
    public string AccessKey { get; }
    public string SecretKey { get; }
    public int RgwPort { get; }
    public int MonPort { get; }

    public static async Task<Ceph> StartAsync(string repoRoot, string dir, CancellationToken ct)
    {
        var (mon, rgw) = PickPorts();
        var env = new Dictionary<string, string> { ["MON_PORT"] = mon.ToString(), ["RGW_PORT"] = rgw.ToString() };
        var r = await RunAsync("bash", [Path.Combine(repoRoot, "scripts/ceph-start.sh"), dir], env, ct);
        if (r.ExitCode != 0)
            throw new InvalidOperationException($"scripts/ceph-start.sh failed ({r.ExitCode}):\n{r.Output}");
        var values = File.ReadAllLines(Path.Combine(dir, "env"))
            .Select(l => l.Split('=', 2)).Where(p => p.Length == 2).ToDictionary(p => p[0], p => p[1]);
        return new Ceph(repoRoot, dir, values["S3_ENDPOINT"], values["S3_ACCESS_KEY"], values["S3_SECRET_KEY"], rgw, mon);
    }

    /// <summary>Stops the daemons by the PIDs the start script recorded and deletes the folder (unless <paramref name="keep"/>).</summary>
    public async Task StopAsync(bool keep)
    {
        var env = new Dictionary<string, string>();
        if (keep) env["KEEP"] = "1";
        await RunAsync("bash", [Path.Combine(_repoRoot, "scripts/ceph-stop.sh"), Dir], env, CancellationToken.None);
    }

    public static async Task<string> VersionAsync()
    {
        try { return (await RunAsync("radosgw", ["--version"], null, CancellationToken.None)).Output.Split('\n')[0].Trim(); }
        catch (System.ComponentModel.Win32Exception) { return "radosgw not installed"; }
    }

    /// <summary>A monitor port with its +1 and the daemons' +10..+99 range free, and a free radosgw port, below the ephemeral range.</summary>
    private static (int Mon, int Rgw) PickPorts()
    {
        for (var attempt = 0; attempt < 200; attempt++)
        {
            var mon = Random.Shared.Next(20000, 31000);
            if (!Enumerable.Range(mon, 100).All(IsFree)) continue;
            var rgw = mon + 200 + Random.Shared.Next(0, 500);
            if (IsFree(rgw)) return (mon, rgw);
        }
        throw new InvalidOperationException("no free ports for Ceph between 20000 and 32000");
    }

    private static bool IsFree(int port)
    {
        try
        {
            var l = new TcpListener(IPAddress.Loopback, port);
            l.Start();
            l.Stop();
            return true;
        }
        catch (SocketException) { return false; }
    }

    private static async Task<(int ExitCode, string Output)> RunAsync(string file, string[] args, Dictionary<string, string>? env, CancellationToken ct)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        if (env is not null) foreach (var (k, v) in env) psi.Environment[k] = v;
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {file}");
        var stdout = p.StandardOutput.ReadToEndAsync(CancellationToken.None);
        var stderr = p.StandardError.ReadToEndAsync(CancellationToken.None);
        try { await p.WaitForExitAsync(ct); }
        catch (OperationCanceledException)
        {
            // The start script stops what it started when it fails; a cancelled one is left to finish so its PIDs are recorded.
            await p.WaitForExitAsync(CancellationToken.None);
            throw;
        }
        return (p.ExitCode, (await stdout) + (await stderr));
    }
}
