using System.CommandLine;
using Haven.Api;
using Haven.Cli.Commands.Vm;

namespace Haven.Cli.Commands.Replication;

/// <summary>
/// haven replication test-failover | failover (on the replica): POST /v1/vms/{vm}/replication/test-failover or
/// .../failover with a ReplicaFailoverRequest.
/// </summary>
public sealed class ReplicaFailoverCommand : Command
{
    public Argument<string> Vm { get; } = ReplicationCommand.VmArgument();

    public Option<long?> Point { get; } = new("--point")
    {
        Description = "The recovery point: its cycle number, as 'haven replication status' lists it [default: the latest]",
        HelpName = "CYCLE",
        CustomParser = r => Parsers.Long(r, min: 0),
    };

    public Option<bool> NoStart { get; } = new("--no-start")
    {
        Description = "Do not start the VM",
    };

    public bool IsTest { get; }

    ReplicaFailoverCommand(CliContext ctx, string name, string description, bool test) : base(name, description)
    {
        IsTest = test;
        Add(Vm);
        Add(Point);
        Add(NoStart);
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var vm = parseResult.GetRequiredValue(Vm);
            var request = BuildRequest(parseResult);
            var info = test
                ? await client.TestFailoverAsync(vm, request, ct)
                : await client.FailoverAsync(vm, request, ct);
            var point = request.Cycle is { } c ? $"cycle {c}" : "the latest recovery point";
            output.Result(info, console => console.Line(test
                ? $"Test VM '{info.Name}' created from {point} of '{vm}' (no network); it is {VmView.State(info)}."
                : $"VM '{info.Name}' failed over to {point}; it is {VmView.State(info)}. Cancel or complete the failover to go on."));
        });
    }

    public static ReplicaFailoverCommand Test(CliContext ctx) => new(ctx, "test-failover",
        "On the replica: create and start a copy \"<VM> - Test\" from a recovery point, without network (replication carries on)", test: true);

    public static ReplicaFailoverCommand Failover(CliContext ctx) => new(ctx, "failover",
        "On the replica: run the replica VM from a recovery point (no cycles until the failover is cancelled or completed)", test: false);

    public ReplicaFailoverRequest BuildRequest(ParseResult parseResult) => new()
    {
        Cycle = parseResult.GetValue(Point),
        Start = !parseResult.GetValue(NoStart),
    };
}
