using System.Diagnostics;
using System.Net.Sockets;

namespace Haven.Qemu.Images;

/// <summary>
/// qemu-nbd serving one image file on a unix socket, for images no QEMU has open: backups of VMs that
/// are off (read-only, optionally with a dirty bitmap) and restores into new images (writable).
/// The process is a child of this one and is killed on dispose.
/// </summary>
public sealed class QemuNbdServer : IAsyncDisposable
{
    private readonly Process _process;

    private QemuNbdServer(Process process, string socketPath, string exportName)
    {
        _process = process;
        SocketPath = socketPath;
        ExportName = exportName;
    }

    public int Pid => _process.Id;
    public string SocketPath { get; }
    public string ExportName { get; }

    public static async Task<QemuNbdServer> StartAsync(string image, DiskFormat format, string socketPath, string exportName,
        bool writable, string? bitmap = null, int connections = 4, CancellationToken ct = default)
    {
        File.Delete(socketPath);
        var psi = new ProcessStartInfo("qemu-nbd") { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var a in new[] { "--persistent", "--shared=" + connections, "-f", QemuImg.FormatName(format), "-k", socketPath, "-x", exportName, "--cache=writeback", "--discard=unmap" })
            psi.ArgumentList.Add(a);
        if (!writable) psi.ArgumentList.Add("--read-only");
        if (bitmap is not null) { psi.ArgumentList.Add("-B"); psi.ArgumentList.Add(bitmap); }
        psi.ArgumentList.Add(image);
        var p = Process.Start(psi) ?? throw new ToolFailedException("qemu-nbd", -1, "qemu-nbd did not start");
        var stderr = p.StandardError.ReadToEndAsync(CancellationToken.None);
        var deadline = DateTime.UtcNow.AddSeconds(15);
        while (true)
        {
            if (p.HasExited)
            {
                var err = (await stderr).Trim();
                throw new ToolFailedException("qemu-nbd", p.ExitCode, err.Length > 0 ? err.Split('\n')[0] : $"qemu-nbd exited with {p.ExitCode}");
            }
            if (File.Exists(socketPath) && await CanConnectAsync(socketPath, ct)) return new QemuNbdServer(p, socketPath, exportName);
            if (DateTime.UtcNow > deadline)
            {
                p.Kill();
                throw new ToolFailedException("qemu-nbd", -1, "qemu-nbd did not open its socket within 15 s");
            }
            await Task.Delay(20, ct);
        }
    }

    private static async Task<bool> CanConnectAsync(string path, CancellationToken ct)
    {
        using var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try { await s.ConnectAsync(new UnixDomainSocketEndPoint(path), ct); return true; }
        catch (SocketException) { return false; }
    }

    /// <summary>
    /// Ends a qemu-nbd a crashed daemon left behind (recorded by pid in a journal), and waits for it to
    /// release its image. Does nothing if the pid is gone or is now another program.
    /// </summary>
    public static void KillIfQemuNbd(int pid)
    {
        try
        {
            if (!File.ReadAllText($"/proc/{pid}/cmdline").StartsWith("qemu-nbd", StringComparison.Ordinal)) return;
            using var p = Process.GetProcessById(pid);
            p.Kill();
            p.WaitForExit(TimeSpan.FromSeconds(10));
        }
        catch (IOException) { }
        catch (ArgumentException) { }
        catch (InvalidOperationException) { }
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            // SIGTERM lets qemu-nbd flush and close the image (and store bitmaps) cleanly.
            _ = Process.Start("kill", ["-TERM", _process.Id.ToString()]);
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            try { await _process.WaitForExitAsync(cts.Token); }
            catch (OperationCanceledException) { _process.Kill(); await _process.WaitForExitAsync(); }
        }
        _process.Dispose();
        File.Delete(SocketPath);
    }
}
