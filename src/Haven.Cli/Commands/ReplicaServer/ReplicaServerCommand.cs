using System.CommandLine;
using Haven.Api;
using Spectre.Console;

namespace Haven.Cli.Commands.ReplicaServer;

/// <summary>haven replica-server enable|disable|show|allow|deny: this host as a replica server (docs/replication.md).</summary>
public static class ReplicaServerCommand
{
    public static Command Create(CliContext ctx)
    {
        var server = new Command("replica-server", "This host as a replica server: where it listens and which primary servers it accepts")
        {
            EnableCommand(ctx),
            DisableCommand(ctx),
            ShowCommand(ctx),
            AllowCommand(ctx),
            DenyCommand(ctx),
        };
        HavenCli.ShowHelpWhenBare(server);
        return server;
    }

    static Command EnableCommand(CliContext ctx)
    {
        var listen = new Option<string?>("--listen") { Description = "Address to listen on for primaries: https:// with an IP address (0.0.0.0 for all) and a port, e.g. https://10.0.0.2:9443 [default: the one set before]", HelpName = "URL" };
        var allowAny = new Option<bool?>("--allow-any") { Description = "Accept any primary server whose certificate this host trusts (into --storage); --allow-any false turns it off [default: unchanged]", Arity = ArgumentArity.ZeroOrOne };
        var storage = new Option<string?>("--storage") { Description = "Default storage folder (must exist) for primaries accepted by --allow-any [default: unchanged]", HelpName = "PATH" };
        var trustGroup = new Option<string?>("--trust-group") { Description = "Default trust group for primaries accepted by --allow-any [default: unchanged]", HelpName = "GROUP" };
        var cmd = new Command("enable", "Enable the replica server (it listens at once)") { listen, allowAny, storage, trustGroup };
        ctx.SetAction(cmd, async (parseResult, client, output, ct) =>
        {
            var info = await client.EnableReplicaServerAsync(new ReplicaServerEnableRequest
            {
                Listen = parseResult.GetValue(listen),
                AllowAny = parseResult.GetResult(allowAny) is null ? null : parseResult.GetValue(allowAny) ?? true,
                DefaultStorage = parseResult.GetValue(storage) is { } s ? Path.GetFullPath(s) : null,
                DefaultTrustGroup = parseResult.GetValue(trustGroup),
            }, ct);
            output.Result(info, console =>
            {
                console.Line(info.Listening ? $"Replica server enabled, listening on {info.Listen}." : "Replica server enabled.");
                Render(console, info);
            });
        });
        return cmd;
    }

    static Command DisableCommand(CliContext ctx)
    {
        var cmd = new Command("disable", "Stop accepting primaries (the authorization entries are kept)");
        ctx.SetAction(cmd, async (_, client, output, ct) =>
        {
            var info = await client.DisableReplicaServerAsync(ct);
            output.Result(info, console => console.Line("Replica server disabled."));
        });
        return cmd;
    }

    static Command ShowCommand(CliContext ctx)
    {
        var cmd = new Command("show", "Show the replica server's settings and authorization entries");
        ctx.SetAction(cmd, async (_, client, output, ct) =>
        {
            var info = await client.GetReplicaServerAsync(ct);
            output.Result(info, console => Render(console, info));
        });
        return cmd;
    }

    static Option<string> PrimaryOption() => new("--primary")
    {
        Description = "Primary server name or pattern: letters, digits, '-', '.', and '*' for any run of characters (*.example.com); case-insensitive",
        Required = true,
        HelpName = "PATTERN",
    };

    static Command AllowCommand(CliContext ctx)
    {
        var primary = PrimaryOption();
        var storage = new Option<string>("--storage") { Description = "Storage folder (must exist) for these primaries' replicas", Required = true, HelpName = "PATH" };
        var trustGroup = new Option<string>("--trust-group") { Description = "Trust group of these primaries (a label; it grants no rights over other primaries' replicas)", Required = true, HelpName = "GROUP" };
        var thumbprint = new Option<string?>("--thumbprint") { Description = "Pin this certificate (SHA-256 thumbprint) [default: the one trusted certificate named --primary]", HelpName = "THUMBPRINT" };
        var ca = new Option<string?>("--ca") { Description = "Pin an issuing CA of the trust store (its thumbprint): primaries with a certificate from it whose name matches --primary", HelpName = "THUMBPRINT" };
        var cmd = new Command("allow", "Accept primary servers by pinned certificate or CA (replaces the entry with the same pattern)") { primary, storage, trustGroup, thumbprint, ca };
        ctx.SetAction(cmd, async (parseResult, client, output, ct) =>
        {
            var info = await client.AllowPrimaryAsync(new ReplicaAuthorizationRequest
            {
                Primary = parseResult.GetRequiredValue(primary),
                Storage = Path.GetFullPath(parseResult.GetRequiredValue(storage)),
                TrustGroup = parseResult.GetRequiredValue(trustGroup),
                Thumbprint = parseResult.GetValue(thumbprint),
                Ca = parseResult.GetValue(ca),
            }, ct);
            output.Result(info, console =>
            {
                console.Line($"Primary servers matching '{parseResult.GetRequiredValue(primary)}' are allowed.");
                Render(console, info);
            });
        });
        return cmd;
    }

    static Command DenyCommand(CliContext ctx)
    {
        var primary = PrimaryOption();
        var cmd = new Command("deny", "Remove the authorization entry with this pattern") { primary };
        ctx.SetAction(cmd, async (parseResult, client, output, ct) =>
        {
            var info = await client.DenyPrimaryAsync(parseResult.GetRequiredValue(primary), ct);
            output.Result(info, console => console.Line($"Removed the authorization entry '{parseResult.GetRequiredValue(primary)}'."));
        });
        return cmd;
    }

    public static void Render(IAnsiConsole console, ReplicaServerInfo info)
    {
        console.WriteProperties(
            ("Enabled", info.Enabled ? "yes" : "no"),
            ("Listen", info.Listen is null ? "-" : info.Listen + (info.Listening ? " (listening)" : info.Enabled ? " (not listening)" : "")),
            ("Listen error", info.ListenError),
            ("Host name", info.HostName),
            ("Thumbprint", info.Thumbprint),
            ("Allow any", info.AllowAnyAuthenticated ? $"yes, into {info.DefaultStorage}" + (info.DefaultTrustGroup is { } g ? $" (trust group {g})" : "") : "no"),
            ("Default storage", info.AllowAnyAuthenticated ? null : info.DefaultStorage));
        if (info.Authorizations.Count == 0)
        {
            console.Line("No authorization entries.");
            return;
        }
        var table = Human.Table("PRIMARY", "PINS", "STORAGE", "TRUST GROUP");
        foreach (var a in info.Authorizations)
            table.AddTextRow(a.Primary, a.Thumbprint is { } t ? "certificate " + t : a.Ca is { } c ? "CA " + c : "nothing (inactive: re-add it)", a.Storage, a.TrustGroup ?? "-");
        console.Write(table);
    }
}
