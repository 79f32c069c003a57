using System.CommandLine;
using System.Text.Json;
using Haven.Api;
using Haven.Cli.Commands.Replication;

namespace Haven.Cli.Tests;

/// <summary>haven replication ...: option parsing, request bodies and routes, name checks before any request.</summary>
public sealed class ReplicationParserTests
{
    const string StatusJson = """
        {"vm":"web","role":"primary","partner":"https://replica.example:9443","health":"Warning","healthReason":"1 of the last 10 cycles missed",
         "state":"Replicating","frequencySeconds":300,"lastCycle":4,"successfulCycles":3,"failedCycles":1,"missedCycles":1,
         "averageBytes":3145728,"maxBytes":10485760,"averageSeconds":0.4,"maxSeconds":1.25,"pendingBytes":1048576,
         "lastSuccess":"2025-01-02T03:00:00+00:00","lastError":"replica unreachable",
         "recoveryPoints":[{"cycle":3,"pointInTime":"2025-01-02T02:55:00+00:00","consistency":"CrashConsistent"},
                           {"cycle":4,"pointInTime":"2025-01-02T03:00:00+00:00","consistency":"ApplicationConsistent"}]}
        """;

    const string CycleJson = """
        {"cycle":4,"full":false,"consistency":"CrashConsistent","dataBytes":3145728,"zeroBytes":0,"extents":12,"wallMilliseconds":400}
        """;

    const string VmJson = """
        {"id":"t1","name":"web - Test","state":"Running","vcpus":1,"memoryMiB":256,"checkpointType":"Production",
         "accelerator":"kvm","network":"none","guestAgent":false,"disks":[],"qmpSocket":"/d/run/t1.qmp","pid":77}
        """;

    static (ParseResult Result, T Command) Parse<T>(params string[] args) where T : Command
    {
        var ctx = new CliContext(new CliEnvironment { Out = TextWriter.Null, Error = TextWriter.Null, GetEnv = _ => null });
        var result = HavenCli.Build(ctx).Parse(args);
        Assert.Empty(result.Errors);
        return (result, Assert.IsType<T>(result.CommandResult.Command));
    }

    [Theory]
    [InlineData("30s", 30)]
    [InlineData("5m", 300)]
    [InlineData("15m", 900)]
    [InlineData("7s", 7)]
    [InlineData("5s", 5)]
    [InlineData("2M", 120)]
    [InlineData("1440m", 86400)]
    public void FrequencyIsParsedToSeconds(string text, int seconds)
    {
        Assert.True(Parsers.TryParseFrequency(text, out var parsed, out var error), error);
        Assert.Equal(seconds, parsed);

        var (result, command) = Parse<ReplicationEnableCommand>("replication", "enable", "web", "--replica", "https://r:9443", "--frequency", text);
        Assert.Equal(seconds, command.BuildRequest(result).FrequencySeconds);
    }

    [Theory]
    [InlineData("4s")]
    [InlineData("0m")]
    [InlineData("x")]
    [InlineData("5")]
    [InlineData("m")]
    [InlineData("-5m")]
    [InlineData("1.5m")]
    [InlineData("1441m")]
    [InlineData("99999999999m")]
    public void BadFrequenciesAreRefused(string text)
    {
        Assert.False(Parsers.TryParseFrequency(text, out _, out var error));
        Assert.Contains(text, error);
    }

    [Fact]
    public void EnableDefaultsAreTheRequestsDefaults()
    {
        var (result, command) = Parse<ReplicationEnableCommand>("replication", "enable", "web", "--replica", "https://r:9443");
        Assert.Equal(new ReplicationEnableRequest { Replica = "https://r:9443" }, command.BuildRequest(result));
        Assert.Equal(300, command.BuildRequest(result).FrequencySeconds);
    }

    [Fact]
    public void EnableBuildsTheWholeRequest()
    {
        var (result, command) = Parse<ReplicationEnableCommand>("replication", "enable", "web", "--replica", "https://r:9443",
            "--replica-name", "replica.example", "--frequency", "30s", "--additional-points", "24", "--compression",
            "--start-at", "2025-01-02T04:00:00+01:00");
        Assert.Equal(new ReplicationEnableRequest
        {
            Replica = "https://r:9443",
            ReplicaName = "replica.example",
            FrequencySeconds = 30,
            AdditionalPoints = 24,
            Compression = true,
            StartAt = new DateTimeOffset(2025, 1, 2, 4, 0, 0, TimeSpan.FromHours(1)),
        }, command.BuildRequest(result));
    }

    [Theory]
    [InlineData("2025-01-02T03:00:00Z")]
    [InlineData("2025-01-02T03:00Z")]
    [InlineData("2025-01-02T04:00:00.5+01:00")]
    [InlineData("2025-01-02T04:00:00+0100")]
    public void StartAtTakesIsoTimesWithAnOffset(string text)
    {
        var (result, command) = Parse<ReplicationEnableCommand>("replication", "enable", "web", "--replica", "https://r:9443", "--start-at", text);
        var at = command.BuildRequest(result).StartAt!.Value;
        Assert.Equal(new DateTimeOffset(2025, 1, 2, 3, 0, 0, TimeSpan.Zero), at.AddTicks(-(at.Ticks % TimeSpan.TicksPerSecond))); // same instant, fractions aside
    }

    [Theory]
    [InlineData("--frequency", "4s")]
    [InlineData("--frequency", "x")]
    [InlineData("--additional-points", "25")]
    [InlineData("--additional-points", "-1")]
    [InlineData("--additional-points", "two")]
    [InlineData("--start-at", "2025-01-02T03:00:00")]  // no offset
    [InlineData("--start-at", "2025-01-02")]
    [InlineData("--start-at", "tomorrow")]
    public async Task BadEnableOptionsAreExit2BeforeAnyRequest(string option, string value)
    {
        using var daemon = new FakeHavend(200, StatusJson);
        var run = await CliRun.RunAsync(daemon.Env, "replication", "enable", "web", "--replica", "https://r:9443", option, value);

        Assert.Equal(2, run.ExitCode);
        Assert.Equal("", run.Out);
        Assert.StartsWith($"haven: {option}: ", run.ErrorLines[0]);
        Assert.Equal("see 'haven replication enable --help'", run.ErrorLines[^1]);
        Assert.Empty(daemon.Requests);
    }

    [Fact]
    public void AdditionalPointsTakeTheWholeRange()
    {
        for (var n = 0; n <= 24; n++)
        {
            var (result, command) = Parse<ReplicationEnableCommand>("replication", "enable", "web", "--replica", "https://r:9443",
                "--additional-points", n.ToString(System.Globalization.CultureInfo.InvariantCulture));
            Assert.Equal(n, command.BuildRequest(result).AdditionalPoints);
        }
    }

    [Fact]
    public void PlannedFailoverRequest()
    {
        var (result, command) = Parse<ReplicationPlannedFailoverCommand>("replication", "planned-failover", "web");
        Assert.Equal(new PlannedFailoverRequest { Reverse = false, ShutdownTimeoutSeconds = 60 }, command.BuildRequest(result));

        (result, command) = Parse<ReplicationPlannedFailoverCommand>("replication", "planned-failover", "web", "--reverse", "--shutdown-timeout", "120");
        Assert.Equal(new PlannedFailoverRequest { Reverse = true, ShutdownTimeoutSeconds = 120 }, command.BuildRequest(result));
    }

    [Theory]
    [InlineData("test-failover")]
    [InlineData("failover")]
    public void ReplicaFailoverRequest(string verb)
    {
        var (result, command) = Parse<ReplicaFailoverCommand>("replication", verb, "web");
        Assert.Equal(new ReplicaFailoverRequest { Cycle = null, Start = true }, command.BuildRequest(result));
        Assert.Equal(verb == "test-failover", command.IsTest);

        (result, command) = Parse<ReplicaFailoverCommand>("replication", verb, "web", "--point", "3", "--no-start");
        Assert.Equal(new ReplicaFailoverRequest { Cycle = 3, Start = false }, command.BuildRequest(result));
    }

    [Theory]
    [InlineData("POST /v1/vms/my%20vm/replication", 200, StatusJson, "enable", "--replica", "https://r:9443")]
    [InlineData("GET /v1/vms/my%20vm/replication", 200, StatusJson, "status")]
    [InlineData("POST /v1/vms/my%20vm/replication/cycle", 200, CycleJson, "run")]
    [InlineData("DELETE /v1/vms/my%20vm/replication", 204, "", "disable")]
    [InlineData("POST /v1/vms/my%20vm/replication/planned-failover", 200, CycleJson, "planned-failover")]
    [InlineData("POST /v1/vms/my%20vm/replication/test-failover", 200, VmJson, "test-failover")]
    [InlineData("DELETE /v1/vms/my%20vm/replication/test-failover", 204, "", "stop-test-failover")]
    [InlineData("POST /v1/vms/my%20vm/replication/failover", 200, VmJson, "failover")]
    [InlineData("POST /v1/vms/my%20vm/replication/failover/cancel", 200, StatusJson, "cancel-failover")]
    [InlineData("POST /v1/vms/my%20vm/replication/failover/complete", 204, "", "complete-failover")]
    public async Task EveryCommandCallsItsRoute(string route, int status, string body, string verb, params string[] options)
    {
        using var daemon = new FakeHavend(status, body, status == 204 ? "No Content" : "OK");
        var run = await CliRun.RunAsync(daemon.Env, ["replication", verb, "my vm", .. options]);

        Assert.Equal("", run.Error);
        Assert.Equal(0, run.ExitCode);
        Assert.NotEqual("", run.Out);
        var request = Assert.Single(daemon.Requests);
        Assert.Equal(route, $"{request.Method} {request.Target}");
    }

    [Theory]
    [InlineData("a/b")]
    [InlineData("..")]
    [InlineData("../etc")]
    public async Task BadVmNamesAreExit2BeforeAnyRequest(string vm)
    {
        string[][] commands =
        [
            ["enable", vm, "--replica", "https://r:9443"], ["status", vm], ["run", vm], ["disable", vm],
            ["planned-failover", vm], ["test-failover", vm], ["stop-test-failover", vm], ["failover", vm],
            ["cancel-failover", vm], ["complete-failover", vm], ["repin", vm],
        ];
        using var daemon = new FakeHavend(200, StatusJson);
        foreach (var args in commands)
        {
            var run = await CliRun.RunAsync(daemon.Env, ["replication", .. args]);
            Assert.Equal(2, run.ExitCode);
            Assert.Equal("", run.Out);
            Assert.Single(run.ErrorLines);
            Assert.StartsWith("haven: ", run.ErrorLines[0]);
        }
        Assert.Empty(daemon.Requests);
    }

    [Fact]
    public async Task EnableSendsTheRequestBody()
    {
        using var daemon = new FakeHavend(200, StatusJson);
        var run = await CliRun.RunAsync(daemon.Env, "replication", "enable", "web", "--replica", "https://r:9443",
            "--frequency", "15m", "--additional-points", "4", "--compression");

        Assert.Equal(0, run.ExitCode);
        Assert.StartsWith("Replication of VM 'web' to https://r:9443 enabled.", run.Out);
        var sent = JsonSerializer.Deserialize<ReplicationEnableRequest>(daemon.Requests[0].Body, ApiJson.Options)!;
        Assert.Equal(new ReplicationEnableRequest { Replica = "https://r:9443", FrequencySeconds = 900, AdditionalPoints = 4, Compression = true }, sent);
    }

    [Fact]
    public async Task FailoverSendsTheCycleAndStart()
    {
        using var daemon = new FakeHavend(200, VmJson);
        var run = await CliRun.RunAsync(daemon.Env, "replication", "test-failover", "web", "--point", "3", "--no-start");

        Assert.Equal(0, run.ExitCode);
        Assert.Equal("Test VM 'web - Test' created from cycle 3 of 'web' (no network); it is Running (pid 77).", run.Out.Trim());
        Assert.Equal(new ReplicaFailoverRequest { Cycle = 3, Start = false },
            JsonSerializer.Deserialize<ReplicaFailoverRequest>(daemon.Requests[0].Body, ApiJson.Options));
    }

    [Fact]
    public async Task PlannedFailoverSendsReverseAndTimeout()
    {
        using var daemon = new FakeHavend(200, CycleJson);
        var run = await CliRun.RunAsync(daemon.Env, "replication", "planned-failover", "web", "--reverse", "--shutdown-timeout", "10");

        Assert.Equal(0, run.ExitCode);
        Assert.Contains("Last Cycle 4 (incremental): 3 MiB in 12 extents, 400 ms", run.Out);
        Assert.Equal(new PlannedFailoverRequest { Reverse = true, ShutdownTimeoutSeconds = 10 },
            JsonSerializer.Deserialize<PlannedFailoverRequest>(daemon.Requests[0].Body, ApiJson.Options));
    }

    [Fact]
    public async Task RunPrintsTheCycle()
    {
        using var daemon = new FakeHavend(200, CycleJson);
        var run = await CliRun.RunAsync(daemon.Env, "replication", "run", "web");

        Assert.Equal(0, run.ExitCode);
        Assert.Equal("Cycle 4 (incremental): 3 MiB in 12 extents, 400 ms", run.Out.Trim());
    }

    [Fact]
    public async Task StatusIsATwoColumnTableAndRecoveryPoints()
    {
        using var daemon = new FakeHavend(200, StatusJson);
        var run = await CliRun.RunAsync(daemon.Env, "replication", "status", "web");

        Assert.Equal(0, run.ExitCode);
        Assert.DoesNotContain("\u001b", run.Out); // no colours outside a terminal
        Assert.Matches(@"(?m)^Health\s+Warning \(1 of the last 10 cycles missed\)\s*$", run.Out);
        Assert.Matches(@"(?m)^Partner\s+https://replica\.example:9443\s*$", run.Out);
        Assert.Matches(@"(?m)^Frequency\s+5 min\s*$", run.Out);
        Assert.Matches(@"(?m)^Cycles\s+3 successful, 1 failed, 1 missed\s*$", run.Out);
        Assert.Matches(@"(?m)^Size\s+3 MiB average, 10 MiB max\s*$", run.Out);
        Assert.Matches(@"(?m)^Latency\s+400 ms average, 1.25 s max\s*$", run.Out);
        Assert.Matches(@"(?m)^Pending\s+1 MiB\s*$", run.Out);
        Assert.Matches(@"(?m)^Last error\s+replica unreachable\s*$", run.Out);
        Assert.Matches(@"(?m)^Last test failover\s+never\s*$", run.Out);
        Assert.Matches(@"(?m)^CYCLE\s+POINT IN TIME\s+CONSISTENCY\s*$", run.Out);
        var local = new DateTimeOffset(2025, 1, 2, 3, 0, 0, TimeSpan.Zero).ToLocalTime().ToString("yyyy-MM-dd HH:mm:ss", System.Globalization.CultureInfo.InvariantCulture);
        Assert.Matches($@"(?m)^4\s+{local}\s+application-consistent\s*$", run.Out);
        Assert.True(run.Out.IndexOf("application-consistent", StringComparison.Ordinal) < run.Out.IndexOf("crash-consistent", StringComparison.Ordinal)); // newest first
    }

    [Fact]
    public async Task StatusWithJsonIsTheAnswer()
    {
        using var daemon = new FakeHavend(200, StatusJson);
        var run = await CliRun.RunAsync(daemon.Env, "replication", "status", "web", "--json");

        Assert.Equal(0, run.ExitCode);
        var status = JsonSerializer.Deserialize<ReplicationStatusInfo>(run.Out, ApiJson.Options)!;
        Assert.Equal("Warning", status.Health);
        Assert.Equal(2, status.RecoveryPoints.Count);
    }

    [Fact]
    public void HealthIsColouredOnTerminals()
    {
        var writer = new StringWriter();
        var console = Spectre.Console.AnsiConsole.Create(new Spectre.Console.AnsiConsoleSettings
        {
            Ansi = Spectre.Console.AnsiSupport.Yes,
            ColorSystem = Spectre.Console.ColorSystemSupport.Standard,
            Out = new Spectre.Console.AnsiConsoleOutput(writer),
        });
        console.Write(ReplicationView.Health("Critical", "no cycle for 1 h [x]"));
        Assert.Contains("\u001b[", writer.ToString());
        Assert.Contains("Critical", writer.ToString());
        Assert.Contains("(no cycle for 1 h [x])", writer.ToString());
    }
}

/// <summary>--failover-network NIC=BRIDGE on enable and set: the request's mapping; 'none' on set clears it.</summary>
public sealed class FailoverNetworkParserTests
{
    static ParseResult Parse(params string[] args) =>
        HavenCli.Build(new CliContext(new CliEnvironment { Out = TextWriter.Null, Error = TextWriter.Null, GetEnv = _ => null })).Parse(args);

    [Fact]
    public void EnableAndSetCarryTheMapping()
    {
        var enable = Parse("replication", "enable", "web", "--replica", "https://r:9443", "--failover-network", "nic0=br-dr", "--failover-network", "nic1=br2");
        Assert.Empty(enable.Errors);
        var request = Assert.IsType<ReplicationEnableCommand>(enable.CommandResult.Command).BuildRequest(enable);
        Assert.Equal(new Dictionary<string, string> { ["nic0"] = "br-dr", ["nic1"] = "br2" }, request.FailoverNetwork);

        var set = Parse("replication", "set", "web", "--failover-network", "none");
        Assert.Empty(set.Errors);
        Assert.Equal(new Dictionary<string, string>(), set.GetValue(Assert.IsType<ReplicationSetCommand>(set.CommandResult.Command).FailoverNetwork));
    }

    [Theory]
    [InlineData("nic0")]
    [InlineData("=br0")]
    [InlineData("nic0=")]
    public void AMappingThatIsNotNicEqualsBridgeIsAParseError(string text)
    {
        var result = Parse("replication", "set", "web", "--failover-network", text);
        Assert.Contains(result.Errors, e => e.Message.Contains("is not NIC=BRIDGE"));
    }

    [Fact]
    public void SetWithoutASettingIsAParseError() =>
        Assert.Contains(Parse("replication", "set", "web").Errors, e => e.Message.Contains("give at least one setting"));
}
