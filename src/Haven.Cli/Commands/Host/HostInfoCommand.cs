using System.CommandLine;
using Haven.Api;
using Spectre.Console;

namespace Haven.Cli.Commands.Host;

/// <summary>haven host info: GET /v1/host.</summary>
public sealed class HostInfoCommand : Command
{
    public HostInfoCommand(CliContext ctx) : base("info", "Show havend's version, data folder and accelerator")
    {
        ctx.SetAction(this, async (_, client, output, ct) =>
        {
            var info = await client.GetHostAsync(ct);
            output.Result(info, console => Render(console, info));
        });
    }

    public static void Render(IAnsiConsole console, HostInfo info) =>
        console.WriteProperties(
            ("Version", info.Version),
            ("Data folder", info.DataDirectory),
            ("Accelerator", info.Accelerator),
            ("VMs", info.VmCount.ToString(System.Globalization.CultureInfo.InvariantCulture)));
}
