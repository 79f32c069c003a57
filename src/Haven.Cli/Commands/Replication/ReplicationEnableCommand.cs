using System.CommandLine;
using Haven.Api;

namespace Haven.Cli.Commands.Replication;

/// <summary>haven replication enable: POST /v1/vms/{vm}/replication.</summary>
public sealed class ReplicationEnableCommand : Command
{
    static readonly ReplicationEnableRequest Defaults = new() { Replica = "" };

    public Argument<string> Vm { get; } = ReplicationCommand.VmArgument();

    public Option<string> Replica { get; } = new("--replica")
    {
        Description = "Replica server address, https://HOST:PORT",
        Required = true,
        HelpName = "URL",
    };

    public Option<string?> ReplicaName { get; } = new("--replica-name")
    {
        Description = "The replica server's certificate must be for this name (CN or SAN) [default: any name, if trusted]",
        HelpName = "NAME",
    };

    public Option<string?> ReplicaThumbprint { get; } = new("--replica-thumbprint")
    {
        Description = "Pin this certificate (SHA-256 thumbprint) for the replica server [default: the trusted certificate it presents now]",
        HelpName = "SHA256",
    };

    // No DefaultValueFactory: help would show the default in seconds; "[default: 5m]" is in the description.
    public Option<int?> Frequency { get; } = new("--frequency")
    {
        Description = "Time between cycles: 30s, 5m, 15m, or any <N>s or <N>m from 5s to 24 h [default: 5m]",
        HelpName = "FREQ",
        CustomParser = r => Parsers.Frequency(r),
    };

    public Option<int> AdditionalPoints { get; } = new("--additional-points")
    {
        Description = "Hourly recovery points the replica keeps besides the latest, 0..24",
        HelpName = "N",
        DefaultValueFactory = _ => Defaults.AdditionalPoints,
        CustomParser = r => Parsers.Int(r, min: 0, max: 24),
    };

    public Option<bool> Compression { get; } = new("--compression")
    {
        Description = "Compress changed blocks on the wire (zstd)",
    };

    public Option<DateTimeOffset?> StartAt { get; } = new("--start-at")
    {
        Description = "Start the initial replication at this ISO 8601 time with offset, up to 7 days ahead, e.g. 2025-01-02T03:00:00Z [default: now]",
        HelpName = "TIME",
        CustomParser = Parsers.Time,
    };

    public Option<string> Initial { get; } = new("--initial")
    {
        Description = "How the initial copy travels: network (now or at --start-at), export (to --export-to now; import it on the replica with 'haven replication import'), existing (a VM of that name on the replica server is the copy: only differing blocks are sent)",
        HelpName = "network|export|existing",
        DefaultValueFactory = _ => "network",
    };

    public Option<string?> ExportTo { get; } = new("--export-to")
    {
        Description = "Folder for an exported initial copy (with --initial export)",
        HelpName = "DIR",
    };

    public Option<int?> AppConsistentEvery { get; } = new("--app-consistent-every")
    {
        Description = "Hours between app-consistent points (guest frozen through its agent), 1-12; cycles in between are crash-consistent [default: every cycle]",
        HelpName = "HOURS",
    };

    public Option<string?> ResyncWindow { get; } = new("--resync-window")
    {
        Description = "Run automatic resynchronizations only between these UTC hours, e.g. 22-6 [default: any time]",
        HelpName = "START-END",
    };

    public Option<Dictionary<string, string>?> FailoverNetwork { get; } = ReplicationSetCommand.FailoverNetworkOption(allowNone: false);

    public ReplicationEnableCommand(CliContext ctx, bool extend = false)
        : base(extend ? "extend" : "enable", extend
            ? "Extended replication: send this replica VM on to a third host (--frequency 5m or 15m)"
            : "Replicate a VM to a replica server (the initial replication starts now or at --start-at)")
    {
        Add(Vm);
        Add(Replica);
        Add(ReplicaName);
        Add(ReplicaThumbprint);
        Add(Frequency);
        Add(AdditionalPoints);
        Add(Compression);
        Add(StartAt);
        Add(ResyncWindow);
        Add(AppConsistentEvery);
        Add(Initial);
        Add(ExportTo);
        Add(FailoverNetwork);
        Initial.AcceptOnlyFromAmong("network", "export", "existing");
        Validators.Add(result =>
        {
            if ((result.GetValue(Initial) == "export") != (result.GetValue(ExportTo) is not null))
                result.AddError("--initial export and --export-to DIR go together");
            if (result.GetValue(ResyncWindow) is { } w && ParseWindow(w) is null)
                result.AddError($"--resync-window: '{w}' is not START-END in whole UTC hours 0..23, e.g. 22-6");
        });
        ctx.SetAction(this, async (parseResult, client, output, ct) =>
        {
            var vm = parseResult.GetRequiredValue(Vm);
            var request = BuildRequest(parseResult);
            var status = await client.EnableReplicationAsync(vm, request, ct, extend);
            output.Result(status, console =>
            {
                console.Line($"Replication of VM '{status.Vm}' to {request.Replica} enabled"
                    + (request.StartAt is { } at ? $"; the initial replication starts at {Human.Time(at)}." : "."));
                ReplicationView.RenderStatus(console, status);
            });
        });
    }

    public ReplicationEnableRequest BuildRequest(ParseResult parseResult) => new()
    {
        Replica = parseResult.GetRequiredValue(Replica),
        ReplicaName = parseResult.GetValue(ReplicaName),
        ReplicaThumbprint = parseResult.GetValue(ReplicaThumbprint),
        FrequencySeconds = parseResult.GetValue(Frequency) ?? Defaults.FrequencySeconds,
        AdditionalPoints = parseResult.GetValue(AdditionalPoints),
        Compression = parseResult.GetValue(Compression),
        StartAt = parseResult.GetValue(StartAt),
        Initial = parseResult.GetValue(Initial) ?? "network",
        AppConsistentHours = parseResult.GetValue(AppConsistentEvery),
        ExportFolder = parseResult.GetValue(ExportTo) is { } dir ? Path.GetFullPath(dir) : null,
        ResyncWindowStartHour = parseResult.GetValue(ResyncWindow) is { } w ? ParseWindow(w)?.Start : null,
        ResyncWindowEndHour = parseResult.GetValue(ResyncWindow) is { } w2 ? ParseWindow(w2)?.End : null,
        FailoverNetwork = parseResult.GetValue(FailoverNetwork),
    };

    static (int Start, int End)? ParseWindow(string text)
    {
        var parts = text.Split('-');
        return parts.Length == 2 && int.TryParse(parts[0], out var s) && int.TryParse(parts[1], out var e) && s is >= 0 and <= 23 && e is >= 0 and <= 23
            ? (s, e) : null;
    }
}
