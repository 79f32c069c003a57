using System.CommandLine;
using Spectre.Console;

namespace Haven.Cli.Commands.Replication;

/// <summary>
/// haven replication status [VM]: GET /v1/vms/{vm}/replication for one VM; without a VM, GET /v1/replication:
/// every VM this host replicates or keeps as a replica, one line each (the replica server's overview).
/// </summary>
public sealed class ReplicationStatusCommand : Command
{
    public Argument<string?> Vm { get; } = new("VM") { Description = "Name of the VM [default: all replicated and replica VMs of this host]", Arity = ArgumentArity.ZeroOrOne };

    public ReplicationStatusCommand(CliContext ctx) : base("status", "Show replication health, cycles, sizes, latency and recovery points (one VM, or all)")
    {
        Add(Vm);
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            if (parseResult.GetValue(Vm) is { } vm)
            {
                var status = await client.GetReplicationAsync(vm, ct);
                output.Result(status, console => ReplicationView.RenderStatus(console, status));
                return;
            }
            var all = await client.ListReplicationsAsync(ct);
            output.Result(all, console =>
            {
                if (all.Count == 0) { console.Line("No VM of this host is replicated or a replica."); return; }
                var table = new Table().AddColumns("VM", "Role", "Partner", "Health", "State", "Last cycle", "Last success");
                foreach (var s in all)
                    table.AddRow(new Text(s.Vm), new Text(s.Role), new Text(s.Partner), ReplicationView.Health(s.Health, null), new Text(s.State),
                        new Text(s.LastCycle.ToString(System.Globalization.CultureInfo.InvariantCulture)), new Text(s.LastSuccess is { } t ? Human.Time(t) : "-"));
                console.Write(table);
            });
        });
    }
}
