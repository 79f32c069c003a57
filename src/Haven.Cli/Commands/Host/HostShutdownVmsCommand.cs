using System.CommandLine;
using Haven.Api;

namespace Haven.Cli.Commands.Host;

/// <summary>
/// haven host shutdown-vms: POST /v1/host/shutdown-vms. What haven-guests.service runs when the host goes down:
/// ACPI shutdown of every running VM at once, then force off those still running after the timeout.
/// Exit 0 when every VM is off, 1 when one could not be stopped.
/// </summary>
public sealed class HostShutdownVmsCommand : Command
{
    public Option<int> Timeout { get; } = new("--timeout")
    {
        Description = "Seconds the guests have to shut down before they are forced off",
        HelpName = "SECONDS",
        DefaultValueFactory = _ => new HostShutdownRequest().TimeoutSeconds,
        CustomParser = r => Parsers.Int(r, min: 0, max: 3600),
    };

    public HostShutdownVmsCommand(CliContext ctx) : base("shutdown-vms", "Shut every running VM down (ACPI, then forced off after --timeout)")
    {
        Add(Timeout);
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var result = await client.ShutdownVmsAsync(new HostShutdownRequest { TimeoutSeconds = parseResult.GetValue(Timeout) }, ct);
            output.Result(result, console =>
            {
                if (result.Vms.Count == 0) console.Line("No VM was running.");
                foreach (var vm in result.Vms)
                    console.Line(vm.Outcome switch
                    {
                        "shut-down" => $"VM '{vm.Name}' shut down.",
                        "forced-off" => $"VM '{vm.Name}' did not shut down in time: forced off.",
                        _ => $"VM '{vm.Name}' could not be stopped: {vm.Error}",
                    });
            });
            if (result.Vms.FirstOrDefault(v => v.Outcome == "failed") is { } failed)
                throw new HavenApiException($"VM '{failed.Name}' could not be stopped: {failed.Error}", "failed", System.Net.HttpStatusCode.InternalServerError);
        });
    }
}
