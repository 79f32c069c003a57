using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Haven.Qemu.Images;
using Haven.TestSupport;

namespace Haven.Nbd.Tests;

/// <summary>A real qemu-nbd serving one image, as a child process killed on dispose.</summary>
public sealed class TestNbdServer : IAsyncDisposable
{
    private readonly Process _process;
    private readonly string _uriQuery;

    private TestNbdServer(Process process, NbdEndpoint endpoint, string exportName, string uri)
    {
        _process = process;
        Endpoint = endpoint;
        ExportName = exportName;
        _uriQuery = uri;
    }

    public NbdEndpoint Endpoint { get; }
    public string ExportName { get; }
    /// <summary>The NBD URI libnbd tools (nbdinfo) take.</summary>
    public string Uri => _uriQuery;
    public int Pid => _process.Id;

    public static async Task<TestNbdServer> StartAsync(TempDir dir, string image, string exportName = "exp", bool readOnly = false,
        string? bitmap = null, bool tcp = false, string format = "qcow2", CancellationToken ct = default)
    {
        var psi = new ProcessStartInfo("qemu-nbd") { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var a in new[] { "--persistent", "--shared=8", "-f", format, "-x", exportName }) psi.ArgumentList.Add(a);
        NbdEndpoint endpoint;
        string uri;
        if (tcp)
        {
            var port = FreeTcpPort();
            foreach (var a in new[] { "-b", "127.0.0.1", "-p", port.ToString() }) psi.ArgumentList.Add(a);
            endpoint = new NbdEndpoint.Tcp("127.0.0.1", port);
            uri = $"nbd://127.0.0.1:{port}/{exportName}";
        }
        else
        {
            var socket = dir.File($"{exportName}.sock");
            psi.ArgumentList.Add("-k");
            psi.ArgumentList.Add(socket);
            endpoint = new NbdEndpoint.Unix(socket);
            uri = $"nbd+unix:///{exportName}?socket={socket}";
        }
        if (readOnly) psi.ArgumentList.Add("--read-only");
        if (bitmap is not null) { psi.ArgumentList.Add("-B"); psi.ArgumentList.Add(bitmap); }
        psi.ArgumentList.Add(image);

        var process = Process.Start(psi)!;
        var server = new TestNbdServer(process, endpoint, exportName, uri);
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            if (process.HasExited)
                throw new InvalidOperationException($"qemu-nbd exited with {process.ExitCode}: {(await process.StandardError.ReadToEndAsync(ct)).Trim()}");
            if (await CanConnectAsync(endpoint, ct)) return server;
            if (deadline.Elapsed > TimeSpan.FromSeconds(10))
            {
                await server.DisposeAsync();
                throw new TimeoutException("qemu-nbd did not start listening within 10 s");
            }
            await Task.Delay(20, ct);
        }
    }

    private static async Task<bool> CanConnectAsync(NbdEndpoint endpoint, CancellationToken ct)
    {
        try
        {
            switch (endpoint)
            {
                case NbdEndpoint.Unix u:
                    if (!File.Exists(u.Path)) return false;
                    using (var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
                        await s.ConnectAsync(new UnixDomainSocketEndPoint(u.Path), ct);
                    return true;
                case NbdEndpoint.Tcp t:
                    using (var s = new Socket(SocketType.Stream, ProtocolType.Tcp))
                        await s.ConnectAsync(t.Host, t.Port, ct);
                    return true;
            }
        }
        catch (SocketException) { }
        return false;
    }

    private static int FreeTcpPort()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }

    public Task PauseAsync() => ProcessRunner.RunAsync("kill", ["-STOP", Pid.ToString()]);
    public Task ResumeAsync() => ProcessRunner.RunAsync("kill", ["-CONT", Pid.ToString()]);

    /// <summary>SIGKILL, as a crashed server.</summary>
    public async Task KillAsync()
    {
        if (_process.HasExited) return;
        _process.Kill();
        await _process.WaitForExitAsync();
    }

    /// <summary>`nbdinfo --json` of the export: its one "exports" entry.</summary>
    public async Task<JsonElement> NbdInfoAsync(CancellationToken ct = default)
    {
        var r = await ProcessRunner.RunAsync("nbdinfo", ["--json", Uri], ct);
        using var doc = JsonDocument.Parse(r.StandardOutput);
        return doc.RootElement.GetProperty("exports")[0].Clone();
    }

    /// <summary>`nbdinfo --map[=context] --json`: (offset, length, flags) per extent.</summary>
    public async Task<List<NbdExtent>> NbdInfoMapAsync(string? context, CancellationToken ct = default)
    {
        var r = await ProcessRunner.RunAsync("nbdinfo", [context is null ? "--map" : "--map=" + context, "--json", Uri], ct);
        using var doc = JsonDocument.Parse(r.StandardOutput);
        return [.. doc.RootElement.EnumerateArray().Select(e => new NbdExtent(e.GetProperty("offset").GetInt64(), e.GetProperty("length").GetInt64(), e.GetProperty("type").GetUInt32()))];
    }

    public async ValueTask DisposeAsync()
    {
        await KillAsync(); // SIGKILL also ends a SIGSTOPped server
        _process.Dispose();
    }
}
