using System.Diagnostics;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text.Json;
using Haven.Api;

namespace Haven.Bench;

/// <summary>
/// One havend process on a data folder, and an HTTP client on its unix socket (bearer token from
/// &lt;data&gt;/token). Stopping it (SIGTERM) leaves the VMs running, as havend does by design.
/// </summary>
public sealed class Havend : IAsyncDisposable
{
    private readonly Process _process;
    private readonly HttpClient _http;

    private Havend(Process process, HttpClient http, string dataDir)
    {
        _process = process;
        _http = http;
        DataDir = dataDir;
    }

    public string DataDir { get; }
    public int Pid => _process.Id;

    /// <param name="hostName">havend's --host-name (its certificate's name, for replication); null: the default.</param>
    public static async Task<Havend> StartAsync(string havendDll, string dataDir, string logFile, string? hostName = null)
    {
        Directory.CreateDirectory(dataDir);
        var socket = Path.Combine(dataDir, "havend.sock");
        // exec keeps the pid: the process we measure is havend itself, its output goes to the log.
        var psi = new ProcessStartInfo("/bin/sh") { UseShellExecute = false };
        var script = hostName is null ? "exec dotnet \"$0\" --data \"$1\" >>\"$2\" 2>&1" : "exec dotnet \"$0\" --data \"$1\" --host-name \"$3\" >>\"$2\" 2>&1";
        foreach (var a in new[] { "-c", script, havendDll, dataDir, logFile, hostName ?? "" }) psi.ArgumentList.Add(a);
        var process = Process.Start(psi) ?? throw new InvalidOperationException("cannot start havend");
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            if (process.HasExited)
                throw new InvalidOperationException($"havend exited with {process.ExitCode}; log:\n{Exec.Tail(File.ReadAllText(logFile))}");
            if (File.Exists(socket) && File.Exists(Path.Combine(dataDir, "token")))
            {
                var http = Client(socket, (await File.ReadAllTextAsync(Path.Combine(dataDir, "token"))).Trim());
                try
                {
                    using var r = await http.GetAsync("/v1/vms");
                    if (r.IsSuccessStatusCode) return new Havend(process, http, dataDir);
                }
                catch (HttpRequestException) { }
                http.Dispose();
            }
            if (deadline.Elapsed > TimeSpan.FromSeconds(90))
            {
                process.Kill();
                throw new TimeoutException($"havend did not answer within 90 s; log:\n{Exec.Tail(File.ReadAllText(logFile))}");
            }
            await Task.Delay(100);
        }
    }

    private static HttpClient Client(string socketPath, string token)
    {
        var handler = new SocketsHttpHandler
        {
            ConnectCallback = async (_, ct) =>
            {
                var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                try
                {
                    await s.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), ct);
                    return new NetworkStream(s, ownsSocket: true);
                }
                catch
                {
                    s.Dispose();
                    throw;
                }
            },
        };
        var http = new HttpClient(handler) { BaseAddress = new Uri("http://localhost"), Timeout = Timeout.InfiniteTimeSpan };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        return http;
    }

    public async Task<T> GetAsync<T>(string path)
    {
        using var r = await _http.GetAsync(path);
        return await ReadAsync<T>(r, "GET " + path);
    }

    public async Task<T> PostAsync<T>(string path, object? body)
    {
        using var r = await _http.PostAsync(path, JsonContent.Create(body, body?.GetType() ?? typeof(object), options: ApiJson.Options));
        return await ReadAsync<T>(r, "POST " + path);
    }

    public async Task DeleteAsync(string path)
    {
        using var r = await _http.DeleteAsync(path);
        if (!r.IsSuccessStatusCode) throw new InvalidOperationException($"DELETE {path}: {(int)r.StatusCode} {await r.Content.ReadAsStringAsync()}");
    }

    private static async Task<T> ReadAsync<T>(HttpResponseMessage r, string what)
    {
        var text = await r.Content.ReadAsStringAsync();
        if (!r.IsSuccessStatusCode) throw new InvalidOperationException($"{what}: {(int)r.StatusCode} {text}");
        return JsonSerializer.Deserialize<T>(text, ApiJson.Options) ?? throw new InvalidOperationException($"{what}: empty answer");
    }

    /// <summary>Event times of a streamed backup (seconds since the request was sent).</summary>
    public sealed record BackupTimeline(double FirstProgress, double LastProgress, double Result, int ProgressEvents);

    /// <summary>Runs a backup with the NDJSON progress stream, so the phases inside it can be timed.</summary>
    public async Task<(BackupResult Result, BackupTimeline Timeline)> BackupAsync(string vm, BackupRequest req)
    {
        var clock = Stopwatch.StartNew();
        using var msg = new HttpRequestMessage(HttpMethod.Post, $"/v1/vms/{vm}/backup") { Content = JsonContent.Create(req, options: ApiJson.Options) };
        msg.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("application/x-ndjson"));
        using var r = await _http.SendAsync(msg, HttpCompletionOption.ResponseHeadersRead);
        if (!r.IsSuccessStatusCode) throw new InvalidOperationException($"backup of {vm}: {(int)r.StatusCode} {await r.Content.ReadAsStringAsync()}");
        using var reader = new StreamReader(await r.Content.ReadAsStreamAsync());
        double first = -1, last = -1;
        var events = 0;
        while (await reader.ReadLineAsync() is { } line)
        {
            if (line.Length == 0) continue;
            var t = clock.Elapsed.TotalSeconds;
            var e = JsonSerializer.Deserialize<OperationEvent>(line, ApiJson.Options)!;
            switch (e.Type)
            {
                case "progress":
                    if (first < 0) first = t;
                    last = t;
                    events++;
                    break;
                case "result":
                    return (e.Result!.Value.Deserialize<BackupResult>(ApiJson.Options)!, new BackupTimeline(first, last, t, events));
                case "error":
                    throw new InvalidOperationException($"backup of {vm} failed: {e.Error?.Error} ({e.Error?.Code})");
            }
        }
        throw new InvalidOperationException($"backup of {vm}: the stream ended without a result");
    }

    /// <summary>SIGTERM, then wait; VMs keep running.</summary>
    public async Task StopAsync()
    {
        if (_process.HasExited) return;
        Proc.Terminate(_process.Id);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        try { await _process.WaitForExitAsync(cts.Token); }
        catch (OperationCanceledException)
        {
            _process.Kill();
            await _process.WaitForExitAsync();
        }
    }

    private bool _disposed;

    public async ValueTask DisposeAsync()
    {
        if (_disposed) return;
        _disposed = true;
        await StopAsync();
        _http.Dispose();
        _process.Dispose();
    }
}
