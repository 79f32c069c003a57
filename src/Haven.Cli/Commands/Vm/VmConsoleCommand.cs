using System.CommandLine;
using System.Diagnostics;
using System.Net.WebSockets;

namespace Haven.Cli.Commands.Vm;

/// <summary>
/// haven vm console: attaches standard input and output to the VM's serial console through havend (a WebSocket on
/// GET /v1/vms/{name}/console), like virsh console. Ctrl+] (byte 0x1d) or the end of input detaches; a terminal
/// is put in raw mode meanwhile, so Ctrl+C and the like go to the guest.
/// </summary>
public sealed class VmConsoleCommand : Command
{
    /// <summary>Ctrl+]: the escape byte of virsh console and telnet.</summary>
    public const byte Escape = 0x1d;

    public Argument<string> VmName { get; } = VmCommand.NameArgument();

    public VmConsoleCommand(CliContext ctx) : base("console", "Attach to a running VM's serial console (Ctrl+] detaches)")
    {
        Add(VmName);
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var name = parseResult.GetRequiredValue(VmName);
            if (ctx.Env.RawIn is not { } input || ctx.Env.RawOut is not { } screen)
                throw new HavenProtocolException("the console needs standard input and output");
            using var ws = await client.AttachConsoleAsync(name, ct);
            ctx.Env.Error.WriteLine($"Connected to the console of VM '{name}'. Escape character is ^] (Ctrl+]).");
            ctx.Env.Error.Flush();
            var saved = ctx.Env.InIsTerminal ? await Stty("-g") : null;
            if (saved is not null) await Stty("raw", "-echo");
            string? closed;
            try { closed = await RunAsync(ws, input, screen, ct); }
            finally { if (saved is not null) await Stty(saved); }
            ctx.Env.Error.WriteLine(closed is null ? $"\r\nDetached from the console of VM '{name}'." : $"\r\nConsole of VM '{name}' closed: {closed}.");
        });
    }

    /// <summary>
    /// Copies input to the console and the console to the screen. Null when the user detached (Ctrl+] or end of
    /// input), else why havend closed it. A pending read of input is left behind: it ends with the process.
    /// </summary>
    public static async Task<string?> RunAsync(WebSocket ws, Stream input, Stream screen, CancellationToken ct)
    {
        var fromConsole = Task.Run(async () =>
        {
            var buffer = new byte[4096];
            try
            {
                while (true)
                {
                    var r = await ws.ReceiveAsync(buffer, ct);
                    if (r.MessageType == WebSocketMessageType.Close) return ws.CloseStatusDescription is { Length: > 0 } d ? d : "havend closed it";
                    await screen.WriteAsync(buffer.AsMemory(0, r.Count), ct);
                    await screen.FlushAsync(ct);
                }
            }
            catch (WebSocketException e) { return "lost connection to havend: " + e.Message; }
        }, CancellationToken.None);
        var toConsole = Task.Run(async () =>
        {
            var buffer = new byte[4096];
            while (true)
            {
                var n = await input.ReadAsync(buffer, ct);
                if (n == 0) return;
                var escape = Array.IndexOf(buffer, Escape, 0, n);
                if (escape != 0) await ws.SendAsync(buffer.AsMemory(0, escape < 0 ? n : escape), WebSocketMessageType.Binary, true, ct);
                if (escape >= 0) return;
            }
        }, CancellationToken.None);
        if (await Task.WhenAny(fromConsole, toConsole) == fromConsole) return await fromConsole;
        await toConsole; // surfaces a failed send
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
            timeout.CancelAfter(TimeSpan.FromSeconds(5));
            await ws.CloseAsync(WebSocketCloseStatus.NormalClosure, "detached", timeout.Token);
        }
        catch (Exception e) when (e is WebSocketException or OperationCanceledException) { }
        return null;
    }

    /// <summary>Runs stty on our terminal (its standard input is inherited); returns what it printed.</summary>
    static async Task<string> Stty(params string[] args)
    {
        var psi = new ProcessStartInfo("stty") { RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var text = await p.StandardOutput.ReadToEndAsync();
        await p.WaitForExitAsync();
        return text.Trim();
    }
}
