using System.Text.Json;

namespace Haven.EndToEnd.Tests;

/// <summary>What a person and a script see from the CLI against a real havend.</summary>
public sealed class CliOutputTests
{
    [Fact(Timeout = 90_000)]
    public async Task Checkpoint_tree_and_vm_show_output()
    {
        await using var w = new HavenWorld(TestContext.Current.CancellationToken);
        await w.StartDaemonAsync();
        var vm = await w.CreateVmAsync("web");
        await w.CheckpointAsync("web", "base");
        await w.CheckpointAsync("web", "upgrade");
        await w.OkAsync("checkpoint", "apply", "web", "base");

        // Human tree: web → base (current) → { upgrade, Now }.
        var text = await w.OkAsync("checkpoint", "list", "web");
        Assert.DoesNotContain('\x1b', text); // no escape codes into a pipe
        var lines = text.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(4, lines.Length);
        Assert.Equal("web", lines[0].Trim());
        Assert.Matches(@"^└── base \(Production, application-consistent, .+\) <- current$", lines[1]);
        Assert.Matches(@"^    ├── upgrade \(Production, application-consistent, .+\)$", lines[2]);
        Assert.Equal("    └── Now", lines[3].TrimEnd());

        // The same command with --json anywhere gives the flat list.
        var json1 = await w.OkAsync("checkpoint", "list", "web", "--json");
        var json2 = await w.OkAsync("--json", "checkpoint", "list", "web");
        Assert.Equal(json1, json2);
        using (var doc = JsonDocument.Parse(json1))
        {
            var names = doc.RootElement.EnumerateArray().Select(c => c.GetProperty("name").GetString()).ToList();
            Assert.Equal(["base", "upgrade"], names);
        }

        // vm show --json: the fields scripts and these tests rely on.
        var show = await w.OkAsync("vm", "show", "web", "--json");
        using (var doc = JsonDocument.Parse(show))
        {
            var r = doc.RootElement;
            Assert.Equal(vm.Id, r.GetProperty("id").GetString());
            Assert.Equal("Off", r.GetProperty("state").GetString());
            Assert.Equal("Production", r.GetProperty("checkpointType").GetString());
            Assert.Equal(w.Paths.QmpSocket(vm.Id), r.GetProperty("qmpSocket").GetString());
            Assert.Equal("base", r.GetProperty("currentCheckpoint").GetString());
            var chain = r.GetProperty("disks")[0].GetProperty("chain").EnumerateArray().ToList();
            Assert.Equal(2, chain.Count); // writable layer on base's layer
            foreach (var l in chain) Assert.True(File.Exists(l.GetProperty("path").GetString()), l.ToString());
            Assert.False(chain[0].TryGetProperty("checkpointName", out _));
            Assert.Equal("base", chain[1].GetProperty("checkpointName").GetString());
        }

        // Human vm show and list name the VM and its state.
        var human = await w.OkAsync("vm", "show", "web");
        Assert.Matches(@"(?m)^Name\s+web\s*$", human);
        Assert.Matches(@"(?m)^State\s+Off\s*$", human);
        Assert.Matches(@"(?m)^Current checkpoint\s+base\s*$", human);
        Assert.Matches(@"(?m)^web\s", await w.OkAsync("vm", "list"));
    }

    /// <summary>
    /// docs/cli.md: a connection that breaks mid-request is exit 1; exit 5 ("cannot reach havend") is for a
    /// havend that never got the request. Here havend got it (and journaled the operation) before dying.
    /// </summary>
    [Theory(Timeout = 90_000)]
    [InlineData("create.after-overlays", "checkpoint", "create", "vm", "--name", "c2")]
    [InlineData("remove.after-merge", "checkpoint", "remove", "vm", "c1")]
    public async Task A_request_cut_off_by_a_havend_crash_is_reported_as_a_broken_connection(string crashPoint, params string[] command)
    {
        await using var w = new HavenWorld(TestContext.Current.CancellationToken);
        await w.StartDaemonAsync();
        await w.CreateVmAsync("vm");
        await w.CheckpointAsync("vm", "c1");
        var r = await w.CrashAsync(crashPoint, command); // asserts havend died by SIGKILL and repaired the operation
        Assert.True(r.ExitCode == 1, $"expected exit 1 (connection broke mid-request)\n{r}");
        Assert.Contains("lost connection", r.Stderr);
    }
}
