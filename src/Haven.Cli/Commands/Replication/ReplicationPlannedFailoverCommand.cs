using System.CommandLine;
using Haven.Api;

namespace Haven.Cli.Commands.Replication;

/// <summary>haven replication planned-failover: POST /v1/vms/{vm}/replication/planned-failover (on the primary).</summary>
public sealed class ReplicationPlannedFailoverCommand : Command
{
    static readonly PlannedFailoverRequest Defaults = new();

    public Argument<string> Vm { get; } = ReplicationCommand.VmArgument();

    public Option<bool> Reverse { get; } = new("--reverse")
    {
        Description = "Afterwards replicate back from the replica to this host (needs this host's replica server; only changes are sent)",
    };

    public Option<int> ShutdownTimeout { get; } = new("--shutdown-timeout")
    {
        Description = "Seconds to wait for the guest to shut down before it is forced off",
        HelpName = "SECONDS",
        DefaultValueFactory = _ => Defaults.ShutdownTimeoutSeconds,
        CustomParser = r => Parsers.Int(r, min: 0),
    };

    public ReplicationPlannedFailoverCommand(CliContext ctx)
        : base("planned-failover", "On the primary: shut the VM down, run a last cycle and start the replica (nothing is lost)")
    {
        Add(Vm);
        Add(Reverse);
        Add(ShutdownTimeout);
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var vm = parseResult.GetRequiredValue(Vm);
            var request = BuildRequest(parseResult);
            var last = await client.PlannedFailoverAsync(vm, request, ct);
            output.Result(last, console =>
            {
                console.Line($"VM '{vm}' failed over to its replica, which is started. Last {ReplicationView.Cycle(last)}");
                if (request.Reverse)
                    console.Line($"The replica now replicates back to this host; '{vm}' here is its replica.");
            });
        });
    }

    public PlannedFailoverRequest BuildRequest(ParseResult parseResult) => new()
    {
        Reverse = parseResult.GetValue(Reverse),
        ShutdownTimeoutSeconds = parseResult.GetValue(ShutdownTimeout),
    };
}
