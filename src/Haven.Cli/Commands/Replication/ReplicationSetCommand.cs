using System.CommandLine;
using System.CommandLine.Parsing;
using Haven.Api;

namespace Haven.Cli.Commands.Replication;

/// <summary>haven replication set: PATCH /v1/vms/{vm}/replication.</summary>
public sealed class ReplicationSetCommand : Command
{
    public Argument<string> Vm { get; } = ReplicationCommand.VmArgument();

    public Option<Dictionary<string, string>?> FailoverNetwork { get; } = FailoverNetworkOption(allowNone: true);

    public ReplicationSetCommand(CliContext ctx) : base("set", "Change a VM's replication settings (primary side; sent to the replica with the next cycle)")
    {
        Add(Vm);
        Add(FailoverNetwork);
        Validators.Add(r =>
        {
            if (r.GetResult(FailoverNetwork) is null) r.AddError("give at least one setting to change (--failover-network)");
        });
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var status = await client.SetReplicationAsync(parseResult.GetRequiredValue(Vm), new ReplicationSetRequest
            {
                FailoverNetwork = parseResult.GetValue(FailoverNetwork),
            }, ct);
            output.Result(status, console =>
            {
                console.Line($"Replication of VM '{status.Vm}': failover network {ReplicationView.FailoverNetwork(status.FailoverNetwork)}.");
                ReplicationView.RenderStatus(console, status);
            });
        });
    }

    /// <summary>--failover-network NIC=BRIDGE, repeatable; with <paramref name="allowNone"/>, "none" clears the mapping.</summary>
    public static Option<Dictionary<string, string>?> FailoverNetworkOption(bool allowNone) => new("--failover-network")
    {
        Description = "The replica host's bridge a bridge NIC uses at failover (test, planned, unplanned): NIC=BRIDGE, e.g. nic0=br-dr; "
            + "repeatable; NICs not named keep their bridge, MACs are kept" + (allowNone ? "; 'none' removes the mapping" : ""),
        HelpName = "NIC=BRIDGE",
        Arity = ArgumentArity.OneOrMore,
        AllowMultipleArgumentsPerToken = false,
        CustomParser = r => Parse(r, allowNone),
    };

    static Dictionary<string, string>? Parse(ArgumentResult result, bool allowNone)
    {
        var map = new Dictionary<string, string>();
        foreach (var token in result.Tokens)
        {
            if (allowNone && token.Value == "none" && result.Tokens.Count == 1) return map;
            var eq = token.Value.IndexOf('=');
            if (eq <= 0 || eq == token.Value.Length - 1) result.AddError($"{Parsers.OptionName(result)}: '{token.Value}' is not NIC=BRIDGE (e.g. nic0=br-dr)");
            else if (!map.TryAdd(token.Value[..eq], token.Value[(eq + 1)..])) result.AddError($"{Parsers.OptionName(result)}: {token.Value[..eq]} is mapped twice");
        }
        return map;
    }
}
