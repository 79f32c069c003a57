using System.Net.Sockets;
using System.Text.Json;
using Haven.Api;

namespace Haven.Cli.Tests;

/// <summary>haven against a canned fake daemon on a unix socket: requests sent, errors mapped, output printed.</summary>
public class DaemonTests
{
    const string VmJson = """
        {"id":"a1b2c3","name":"web","state":"Running","vcpus":2,"memoryMiB":512,"checkpointType":"Production",
         "accelerator":"kvm","network":"user","guestAgent":true,
         "disks":[{"deviceId":"disk0","sizeBytes":1073741824,"chain":[{"path":"/d/vms/a1/disks/l2.qcow2"},{"path":"/d/vms/a1/disks/l1.qcow2","checkpointName":"base"}]}],
         "qmpSocket":"/d/run/a1.qmp","pid":4242,"currentCheckpoint":"base"}
        """;

    static string Checkpoint(string name, string? parent, bool current, int minute, string kind = "Production") => $$"""
        {"id":"{{name}}-id","name":"{{name}}","parent":{{(parent is null ? "null" : $"\"{parent}\"")}},"kind":"{{kind}}",
         "consistency":"ApplicationConsistent","createdAt":"2025-01-02T03:{{minute:00}}:00+00:00","hasSavedState":false,"isCurrent":{{(current ? "true" : "false")}}}
        """;

    [Fact]
    public async Task NotFoundBecomesOneStderrLineAndExit3()
    {
        using var daemon = new FakeHavend(404, """{"error":"VM 'nope' not found","code":"not_found"}""", "Not Found");
        var run = await CliRun.RunAsync(daemon.Env, "vm", "show", "nope");

        Assert.Equal(3, run.ExitCode);
        Assert.Equal("haven: VM 'nope' not found\n", run.Error.ReplaceLineEndings("\n"));
        Assert.Equal("", run.Out);
        var request = Assert.Single(daemon.Requests);
        Assert.Equal("GET", request.Method);
        Assert.Equal("/v1/vms/nope", request.Target);
        Assert.Equal("Bearer " + FakeHavend.TokenValue, request.Headers["Authorization"]);
    }

    [Theory]
    [InlineData(400, "invalid_argument", 2)]
    [InlineData(404, "not_found", 3)]
    [InlineData(409, "conflict", 4)]
    [InlineData(500, "internal", 1)]
    [InlineData(401, "unauthorized", 1)]
    public async Task ErrorCodesMapToExitCodes(int status, string code, int exitCode)
    {
        using var daemon = new FakeHavend(status, $$"""{"error":"it went wrong\nbadly","code":"{{code}}"}""");
        var run = await CliRun.RunAsync(daemon.Env, "--json", "vm", "start", "web");

        Assert.Equal(exitCode, run.ExitCode);
        Assert.Equal(["haven: it went wrong badly"], run.ErrorLines);
        Assert.Equal("", run.Out);
    }

    [Fact]
    public async Task ErrorWithoutErrorResponseBodyIsExit1WithTheStatus()
    {
        using var daemon = new FakeHavend(404, "", "Not Found");
        var run = await CliRun.RunAsync(daemon.Env, "host", "info");

        Assert.Equal(1, run.ExitCode);
        Assert.Equal(["haven: havend answered HTTP 404 (Not Found) to GET /v1/host"], run.ErrorLines);
    }

    [Fact]
    public async Task JsonVmListPrintsOnlyIndentedJson()
    {
        using var daemon = new FakeHavend(200, "[" + VmJson + "]");
        var run = await CliRun.RunAsync(daemon.Env, "--json", "vm", "list");

        Assert.Equal(0, run.ExitCode);
        Assert.Equal("", run.Error);
        using var doc = JsonDocument.Parse(run.Out); // throws if anything but JSON is on stdout
        var vm = Assert.Single(doc.RootElement.EnumerateArray());
        Assert.Equal("web", vm.GetProperty("name").GetString());
        Assert.Equal("Running", vm.GetProperty("state").GetString());
        Assert.Equal(512, vm.GetProperty("memoryMiB").GetInt32());
        Assert.Equal("base", vm.GetProperty("disks")[0].GetProperty("chain")[1].GetProperty("checkpointName").GetString());
        Assert.False(vm.TryGetProperty("kernel", out _)); // nulls are left out, as ApiJson.Options says
        Assert.StartsWith("[\n  {", run.Out.ReplaceLineEndings("\n"));
        Assert.Equal("GET /v1/vms", $"{daemon.Requests[0].Method} {daemon.Requests[0].Target}");
    }

    [Fact]
    public async Task HumanVmListIsATableWithoutATerminal()
    {
        using var daemon = new FakeHavend(200, "[" + VmJson + "]");
        var run = await CliRun.RunAsync(daemon.Env, "vm", "list");

        Assert.Equal(0, run.ExitCode);
        Assert.Equal("", run.Error);
        Assert.DoesNotContain("\u001b[", run.Out); // no ANSI escapes when not a terminal
        var row = Assert.Single(run.Out.Split('\n'), l => l.Contains("web"));
        Assert.Matches(@"^web\s+Running\s+2\s+512 MiB\s+1 \(1 GiB\)\s+Production\s+base\s*$", row);
        Assert.Matches(@"^NAME\s+STATE\s+VCPUS\s+MEMORY\s+DISKS\s+CP TYPE\s+CURRENT CP\s*$", run.Out.Split('\n')[0]);
    }

    [Fact]
    public async Task VmCreateSendsTheRequestBody()
    {
        using var daemon = new FakeHavend(200, VmJson);
        var run = await CliRun.RunAsync(daemon.Env, "vm", "create", "web", "--vcpus", "2", "--disk", "img/a.qcow2", "--disk-size", "10G");

        Assert.Equal(0, run.ExitCode);
        Assert.Contains("Created VM 'web' (id a1b2c3).", run.Out);
        Assert.Matches(@"(?m)^State\s+Running \(pid 4242\)$", run.Out);
        Assert.Matches(@"(?m)^\s+/d/vms/a1/disks/l1\.qcow2 \(base\)\s*$", run.Out);
        var request = Assert.Single(daemon.Requests);
        Assert.Equal("POST /v1/vms", $"{request.Method} {request.Target}");
        var sent = JsonSerializer.Deserialize<VmCreateRequest>(request.Body, ApiJson.Options)!;
        Assert.Equal("web", sent.Name);
        Assert.Equal(2, sent.Vcpus);
        Assert.Equal([Path.GetFullPath("img/a.qcow2"), null], sent.Disks.Select(d => d.ImportPath));
        Assert.Equal([null, 10L << 30], sent.Disks.Select(d => d.SizeBytes));
        Assert.Contains("\"checkpointType\":\"Production\"", request.Body); // camelCase, enums as strings
    }

    [Fact]
    public async Task NamesAreEscapedAndSubtreeIsAQuery()
    {
        using var daemon = new FakeHavend(200, """{"removed":["a b","c"],"live":true,"elapsedMilliseconds":1250}""");
        var run = await CliRun.RunAsync(daemon.Env, "checkpoint", "remove", "my vm", "a b", "--subtree");

        Assert.Equal(0, run.ExitCode);
        Assert.Equal("DELETE /v1/vms/my%20vm/checkpoints/a%20b?subtree=true", $"{daemon.Requests[0].Method} {daemon.Requests[0].Target}");
        Assert.Equal("Removed 2 checkpoint(s) of VM 'my vm': 'a b', 'c' (merged live, 1.25 s).", run.Out.Trim());
    }

    [Fact]
    public async Task VmRemoveWithJsonPrintsNothing()
    {
        using var daemon = new FakeHavend(204, "", "No Content");
        var run = await CliRun.RunAsync(daemon.Env, "vm", "remove", "web", "--json");

        Assert.Equal(0, run.ExitCode);
        Assert.Equal("", run.Out);
        Assert.Equal("", run.Error);
        Assert.Equal("DELETE /v1/vms/web", $"{daemon.Requests[0].Method} {daemon.Requests[0].Target}");
    }

    [Fact]
    public async Task CheckpointListDrawsATreeWithNowUnderTheCurrentCheckpoint()
    {
        var list = "[" + string.Join(',',
            Checkpoint("base", null, false, 1, "Standard"),
            Checkpoint("upgrade", "base", true, 2),
            Checkpoint("experiment", "base", false, 3),
            Checkpoint("later", "upgrade", false, 4)) + "]";
        using var daemon = new FakeHavend(200, list);
        var run = await CliRun.RunAsync(daemon.Env, "checkpoint", "list", "web");

        Assert.Equal(0, run.ExitCode);
        var lines = run.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.TrimEnd()).ToList();
        int Depth(string name)
        {
            var line = lines.Single(l => l.Contains(name + " (") || l.EndsWith(name, StringComparison.Ordinal));
            return line.IndexOf(name, StringComparison.Ordinal);
        }
        Assert.Equal("web", lines[0]);
        // Order: base, its children oldest first; Now after the current checkpoint's own children.
        Assert.Equal(["base", "upgrade", "later", "Now", "experiment"],
            lines.Skip(1).Select(l => l.TrimStart(' ', '|', '+', '-', '`', '\\', '─', '│', '├', '└').Split(' ')[0]));
        Assert.True(Depth("upgrade") > Depth("base"));
        Assert.Equal(Depth("later"), Depth("Now"));
        Assert.Equal(Depth("upgrade"), Depth("experiment"));
        Assert.Contains("<- current", lines.Single(l => l.Contains("upgrade")));
        Assert.DoesNotContain("current", lines.Single(l => l.Contains("experiment")));
        Assert.Contains("Standard, application-consistent", lines.Single(l => l.Contains("base")));
    }

    [Fact]
    public async Task CheckpointCreateShowsFrozenTimeAndFallback()
    {
        var body = $$"""{"checkpoint":{{Checkpoint("cp1", null, true, 5, "Standard")}},"frozenMilliseconds":42.5,"fallbackReason":"guest agent did not answer","elapsedMilliseconds":830}""";
        using var daemon = new FakeHavend(200, body);
        var run = await CliRun.RunAsync(daemon.Env, "checkpoint", "create", "web", "--name", "cp1");

        Assert.Equal(0, run.ExitCode);
        Assert.Contains("Created Standard checkpoint 'cp1' of VM 'web' in 830 ms", run.Out);
        Assert.Contains("Guest file systems were frozen for 43 ms.", run.Out);
        Assert.Contains("Fell back to a Standard checkpoint: guest agent did not answer", run.Out);
        Assert.Equal("""{"name":"cp1"}""", daemon.Requests[0].Body);
    }

    [Fact]
    public async Task ExplicitTokenOverridesTheTokenFile()
    {
        using var daemon = new FakeHavend(200, """{"version":"0.1","dataDirectory":"/d","accelerator":"kvm","vmCount":3}""");
        var run = await CliRun.RunAsync(daemon.Env, "host", "info", "--host", "unix:" + daemon.SocketPath, "--token", "other");

        Assert.Equal(0, run.ExitCode);
        Assert.Equal("Bearer other", daemon.Requests[0].Headers["Authorization"]);
        Assert.Matches(@"Data folder\s+/d", run.Out);
        Assert.Matches(@"VMs\s+3", run.Out);
    }

    [Fact]
    public async Task UnexpectedAnswerIsExit1()
    {
        using var daemon = new FakeHavend(200, "<html>hello</html>");
        var run = await CliRun.RunAsync(daemon.Env, "vm", "list");

        Assert.Equal(1, run.ExitCode);
        Assert.StartsWith("haven: havend sent an answer to GET /v1/vms that is not a List`1", run.Error);
    }

    [Fact]
    public async Task MissingSocketIsExit5()
    {
        var folder = Directory.CreateTempSubdirectory("haven-cli-").FullName;
        try
        {
            var run = await CliRun.RunAsync(new Dictionary<string, string> { ["HAVEN_HOME"] = folder }, "vm", "list");
            Assert.Equal(5, run.ExitCode);
            Assert.Equal([$"haven: cannot reach havend at {folder}/havend.sock: the socket does not exist (is havend running?)"], run.ErrorLines);
            Assert.Equal("", run.Out);
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [Fact]
    public async Task StaleSocketIsExit5()
    {
        var folder = Directory.CreateTempSubdirectory("haven-cli-").FullName;
        try
        {
            // A socket file nobody listens on (bound, never listening: what a crashed daemon leaves behind looks the same).
            using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            socket.Bind(new UnixDomainSocketEndPoint(Path.Combine(folder, "havend.sock")));
            var run = await CliRun.RunAsync(new Dictionary<string, string> { ["HAVEN_HOME"] = folder }, "vm", "list");
            Assert.Equal(5, run.ExitCode);
            Assert.Equal([$"haven: cannot reach havend at {folder}/havend.sock: connection refused (is havend running?)"], run.ErrorLines);
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }
}
