using System.CommandLine;
using Haven.Api;

namespace Haven.Cli.Commands.Replication;

/// <summary>haven replication ...: replicating VMs from this host (the primary) to replica servers, and failover (docs/replication.md).</summary>
public static class ReplicationCommand
{
    public static Command Create(CliContext ctx)
    {
        var replication = new Command("replication", "Replication of VMs to replica servers, and failover")
        {
            new ReplicationEnableCommand(ctx),
            new ReplicationEnableCommand(ctx, extend: true),
            new ReplicationStatusCommand(ctx),
            new ReplicationRunCommand(ctx),
            new ReplicationRunCommand(ctx, resync: true),
            new ReplicationSetCommand(ctx),
            new ReplicationRepinCommand(ctx),
            new ReplicationImportCommand(ctx),
            new ReplicationDisableCommand(ctx),
            new ReplicationPlannedFailoverCommand(ctx),
            ReplicaFailoverCommand.Test(ctx),
            new ReplicationStopTestFailoverCommand(ctx),
            ReplicaFailoverCommand.Failover(ctx),
            new ReplicationCancelFailoverCommand(ctx),
            new ReplicationCompleteFailoverCommand(ctx),
            TestConnectionCommand(ctx),
        };
        HavenCli.ShowHelpWhenBare(replication);
        return replication;
    }

    /// <summary>The VM argument of every per-VM replication command.</summary>
    public static Argument<string> VmArgument() => new("VM") { Description = "Name of the VM" };

    static Command TestConnectionCommand(CliContext ctx)
    {
        var replica = new Option<string>("--replica") { Description = "Replica server address, https://HOST:PORT", Required = true, HelpName = "URL" };
        var expect = new Option<string?>("--expect-name") { Description = "The replica's certificate must be for this name (CN or SAN)", HelpName = "NAME" };
        var cmd = new Command("test-connection", "Connect to a replica server with mutual TLS and ask whether it accepts this host") { replica, expect };
        ctx.SetAction(cmd, async (parseResult, client, output, ct) =>
        {
            var r = await client.TestReplicaConnectionAsync(new ReplicationTestConnectionRequest
            {
                Replica = parseResult.GetRequiredValue(replica),
                ExpectedName = parseResult.GetValue(expect),
            }, ct);
            output.Result(r, console =>
            {
                console.Line($"The replica server {r.ReplicaHost} at {r.Replica} accepts this host ({r.PrimaryName}).");
                console.WriteProperties(
                    ("Replica", r.ReplicaHost),
                    ("Thumbprint", r.ReplicaThumbprint),
                    ("Protocol", r.ProtocolVersion.ToString(System.Globalization.CultureInfo.InvariantCulture)),
                    ("Storage", r.StorageLocation),
                    ("Trust group", r.TrustGroup ?? "-"),
                    ("Round trip", Human.Duration(r.ElapsedMs)));
            });
        });
        return cmd;
    }
}
