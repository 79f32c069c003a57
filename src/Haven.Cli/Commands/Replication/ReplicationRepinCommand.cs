using System.CommandLine;
using Haven.Api;

namespace Haven.Cli.Commands.Replication;

/// <summary>haven replication repin: POST /v1/vms/{vm}/replication/repin.</summary>
public sealed class ReplicationRepinCommand : Command
{
    public Argument<string> Vm { get; } = ReplicationCommand.VmArgument();

    public Option<string?> Thumbprint { get; } = new("--thumbprint")
    {
        Description = "Pin this certificate (SHA-256 thumbprint) [default: the trusted certificate the replica server presents now]",
        HelpName = "SHA256",
    };

    public ReplicationRepinCommand(CliContext ctx)
        : base("repin", "Pin the replica server's certificate anew, after it changed on purpose (cycles refuse any other certificate)")
    {
        Add(Vm);
        Add(Thumbprint);
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var status = await client.RepinReplicationAsync(parseResult.GetRequiredValue(Vm), new ReplicationRepinRequest { Thumbprint = parseResult.GetValue(Thumbprint) }, ct);
            output.Result(status, console =>
            {
                console.Line($"VM '{status.Vm}' now replicates only to the certificate {status.ReplicaThumbprint}.");
                ReplicationView.RenderStatus(console, status);
            });
        });
    }
}
