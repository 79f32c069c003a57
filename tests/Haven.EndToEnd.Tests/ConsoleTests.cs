using System.Buffers.Binary;
using System.Diagnostics;
using System.IO.Compression;
using System.Text;
using Haven.Api;
using Haven.TestSupport;

namespace Haven.EndToEnd.Tests;

/// <summary>
/// The serial console (`haven vm console`, through havend's WebSocket) and the display (`haven vm screenshot`),
/// with real havend, CLI, QEMU and the busybox test guest (its /init keeps a shell on ttyS0).
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class ConsoleTests
{
    private const UnixFileMode OwnerOnly = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;

    [Fact(Timeout = 300_000)]
    public async Task A_command_typed_through_vm_console_runs_in_the_guest_and_a_second_client_or_an_off_VM_is_refused()
    {
        await using var w = new HavenWorld(TestContext.Current.CancellationToken);
        await w.StartDaemonAsync();
        var log = await w.StartTestGuestAsync("g");
        var id = w.VmId("g");

        await using var console = AttachedConsole.Start(w.Data, "g");
        await WaitForAsync(() => console.Stderr.Contains("Connected to the console of VM 'g'"), TimeSpan.FromSeconds(30), "the CLI to attach: " + console);
        // $((6*7)) is expanded by the guest's shell: the echo of the typed line says MARK$((6*7)), only the output MARK42.
        await console.TypeAsync("echo MARK$((6*7)); uname -n\n");
        await WaitForAsync(() => console.Stdout.Contains("MARK42") && console.Stdout.Contains("haven-test-guest"), TimeSpan.FromSeconds(60), "the command's output: " + console);

        // One client at a time: a second one gets one clear line and exit 4 (conflict), the first stays attached.
        var second = await w.Cli("vm", "console", "g");
        Assert.Equal(4, second.ExitCode);
        Assert.Equal("haven: the console of VM 'g' is already attached by another client", Assert.Single(second.StderrLines));
        await console.TypeAsync("echo STILL$((1+1))\n");
        await WaitForAsync(() => console.Stdout.Contains("STILL2"), TimeSpan.FromSeconds(60), "the first client to still work: " + console);

        // Ctrl+] detaches; the guest's serial output went to the log meanwhile too, and the log stays owner-only.
        await console.TypeAsync("\x1d");
        Assert.Equal(0, await console.WaitForExitAsync(TimeSpan.FromSeconds(30)));
        Assert.Contains("Detached from the console of VM 'g'", console.Stderr);
        var logged = File.ReadAllText(log);
        Assert.Contains("MARK42", logged);
        Assert.Contains("STILL2", logged);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(log));
        Assert.Equal((UnixFileMode)0, File.GetUnixFileMode(w.Paths.ConsoleSocket(id)) & ~OwnerOnly);

        // Detached, another client may attach.
        await using (var again = AttachedConsole.Start(w.Data, "g"))
        {
            await WaitForAsync(() => again.Stderr.Contains("Connected"), TimeSpan.FromSeconds(30), "a new client to attach: " + again);
            await again.TypeAsync("\x1d");
            Assert.Equal(0, await again.WaitForExitAsync(TimeSpan.FromSeconds(30)));
        }

        await w.OkAsync("vm", "stop", "g", "--force");
        var off = await w.Cli("vm", "console", "g");
        Assert.Equal(4, off.ExitCode);
        Assert.Equal("haven: VM 'g' is not running", Assert.Single(off.StderrLines));
        Assert.False(File.Exists(w.Paths.ConsoleSocket(id)));
    }

    [Fact(Timeout = 300_000)]
    public async Task Vm_screenshot_writes_an_owner_only_PNG_of_the_BIOS_text_and_refuses_a_bad_path_or_an_off_VM()
    {
        await using var w = new HavenWorld(TestContext.Current.CancellationToken);
        await w.StartDaemonAsync();
        await w.CreateVmAsync("vm", start: true);
        var shown = await w.ShowAsync("vm");
        Assert.Equal(w.Paths.VncSocket(shown.Id), shown.VncSocket);
        Assert.Equal((UnixFileMode)0, File.GetUnixFileMode(shown.VncSocket!) & ~OwnerOnly);
        Assert.Contains("VNC display         unix:" + shown.VncSocket, await w.OkAsync("vm", "show", "vm"));

        // SeaBIOS prints its banner at once; wait until the screen holds more than one colour.
        var file = w.Dir.File("shot.png");
        var (width, height, distinct) = (0, 0, 0);
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (distinct < 2 && DateTime.UtcNow < deadline)
        {
            var r = await w.Cli("vm", "screenshot", "vm", file);
            Assert.True(r.ExitCode == 0, r.ToString());
            Assert.Contains($"Saved the display of VM 'vm'", r.Stdout);
            (width, height, distinct) = ReadPng(File.ReadAllBytes(file));
            if (distinct < 2) await Task.Delay(1000, w.Ct);
        }
        Assert.True(width > 0 && height > 0, $"{width}x{height}");
        Assert.True(distinct >= 2, "the screenshot is all one colour");
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(file));
        Assert.Empty(Directory.GetFiles(w.Paths.RunDir, "*.png"));

        // A path in a folder that does not exist, or a folder: one line, exit 2, nothing written.
        var before = Directory.GetFileSystemEntries(w.Dir.Path, "*", SearchOption.AllDirectories).Length;
        foreach (var bad in new[] { w.Dir.File("no/such/folder.png"), w.Dir.Path })
        {
            var r = await w.Cli("vm", "screenshot", "vm", bad);
            Assert.Equal(2, r.ExitCode);
            Assert.StartsWith("haven: ", Assert.Single(r.StderrLines));
        }
        Assert.Equal(before, Directory.GetFileSystemEntries(w.Dir.Path, "*", SearchOption.AllDirectories).Length);

        await w.OkAsync("vm", "stop", "vm", "--force");
        Assert.Null((await w.ShowAsync("vm")).VncSocket);
        var off = await w.Cli("vm", "screenshot", "vm", w.Dir.File("off.png"));
        Assert.Equal(4, off.ExitCode);
        Assert.Equal("haven: VM 'vm' is not running", Assert.Single(off.StderrLines));
        Assert.False(File.Exists(w.Dir.File("off.png")));
    }

    /// <summary>Checks the PNG signature and IHDR, inflates the IDAT data and counts distinct RGB pixels (8-bit RGB, as QEMU writes).</summary>
    private static (int Width, int Height, int DistinctColours) ReadPng(byte[] png)
    {
        Assert.Equal(new byte[] { 0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a }, png[..8]);
        var idat = new MemoryStream();
        int width = 0, height = 0;
        for (var at = 8; at < png.Length;)
        {
            var length = BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(at));
            var type = Encoding.ASCII.GetString(png, at + 4, 4);
            var data = png.AsSpan(at + 8, length);
            if (type == "IHDR")
            {
                width = BinaryPrimitives.ReadInt32BigEndian(data);
                height = BinaryPrimitives.ReadInt32BigEndian(data[4..]);
                Assert.Equal(8, data[8]); // bit depth
                Assert.Equal(2, data[9]); // colour type RGB
            }
            if (type == "IDAT") idat.Write(data);
            at += 12 + length;
        }
        idat.Position = 0;
        var pixels = new MemoryStream();
        using (var z = new ZLibStream(idat, CompressionMode.Decompress)) z.CopyTo(pixels);
        var raw = pixels.ToArray();
        var stride = 1 + width * 3; // a filter byte per row
        Assert.Equal(stride * height, raw.Length);
        var image = Unfilter(raw, width * 3, height, bytesPerPixel: 3);
        var colours = new HashSet<int>();
        for (var i = 0; i < image.Length; i += 3) colours.Add(image[i] << 16 | image[i + 1] << 8 | image[i + 2]);
        return (width, height, colours.Count);
    }

    /// <summary>Undoes PNG's per-row filters (None, Sub, Up, Average, Paeth).</summary>
    private static byte[] Unfilter(byte[] raw, int rowBytes, int height, int bytesPerPixel)
    {
        var image = new byte[rowBytes * height];
        for (var y = 0; y < height; y++)
        {
            var filter = raw[y * (rowBytes + 1)];
            for (var x = 0; x < rowBytes; x++)
            {
                int a = x >= bytesPerPixel ? image[y * rowBytes + x - bytesPerPixel] : 0;
                int b = y > 0 ? image[(y - 1) * rowBytes + x] : 0;
                int c = x >= bytesPerPixel && y > 0 ? image[(y - 1) * rowBytes + x - bytesPerPixel] : 0;
                int p = a + b - c, pa = Math.Abs(p - a), pb = Math.Abs(p - b), pc = Math.Abs(p - c);
                var predictor = filter switch
                {
                    0 => 0,
                    1 => a,
                    2 => b,
                    3 => (a + b) / 2,
                    4 => pa <= pb && pa <= pc ? a : pb <= pc ? b : c,
                    _ => throw new InvalidDataException($"PNG filter type {filter}"),
                };
                image[y * rowBytes + x] = (byte)(raw[y * (rowBytes + 1) + 1 + x] + predictor);
            }
        }
        return image;
    }

    private static async Task WaitForAsync(Func<bool> condition, TimeSpan timeout, string what)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!condition())
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException("timed out waiting for " + what);
            await Task.Delay(200);
        }
    }

    /// <summary>`haven vm console` as a process whose input the test types into and whose output it reads as it comes.</summary>
    private sealed class AttachedConsole : IAsyncDisposable
    {
        private readonly Process _p;
        private readonly StringBuilder _out = new(), _err = new();
        private readonly Task _reading;

        private AttachedConsole(Process p)
        {
            _p = p;
            _reading = Task.WhenAll(Pump(p.StandardOutput.BaseStream, _out), Pump(p.StandardError.BaseStream, _err));
        }

        public static AttachedConsole Start(string data, string vm)
        {
            var psi = new ProcessStartInfo("dotnet") { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (var a in new[] { DaemonProcess.CliDll, "--host", data, "vm", "console", vm }) psi.ArgumentList.Add(a);
            foreach (var v in new[] { "HAVEN_HOST", "HAVEN_TOKEN", "HAVEN_HOME" }) psi.Environment.Remove(v);
            return new AttachedConsole(Process.Start(psi)!);
        }

        private static async Task Pump(Stream s, StringBuilder into)
        {
            var buffer = new byte[4096];
            int n;
            while ((n = await s.ReadAsync(buffer)) > 0)
                lock (into) into.Append(Encoding.UTF8.GetString(buffer, 0, n));
        }

        public string Stdout { get { lock (_out) return _out.ToString(); } }
        public string Stderr { get { lock (_err) return _err.ToString(); } }

        public async Task TypeAsync(string text)
        {
            await _p.StandardInput.BaseStream.WriteAsync(Encoding.UTF8.GetBytes(text));
            await _p.StandardInput.BaseStream.FlushAsync();
        }

        public async Task<int> WaitForExitAsync(TimeSpan timeout)
        {
            using var cts = new CancellationTokenSource(timeout);
            await _p.WaitForExitAsync(cts.Token);
            await _reading;
            return _p.ExitCode;
        }

        public override string ToString() => $"--- stdout ---\n{Stdout}\n--- stderr ---\n{Stderr}";

        public async ValueTask DisposeAsync()
        {
            if (!_p.HasExited) { _p.Kill(entireProcessTree: true); await _p.WaitForExitAsync(); }
            _p.Dispose();
        }
    }
}
