using Haven.Api;
using Haven.TestSupport;

namespace Haven.EndToEnd.Tests;

/// <summary>
/// One havend with VM "v" (off; checkpoints c1 → c2, c2 current, some data) and VM "r" (running), plus
/// files to point bad arguments at.
/// </summary>
public sealed class BadInputFixture : IAsyncLifetime
{
    public HavenWorld World { get; } = new();
    public DiskModel Now { get; private set; } = null!;
    public DiskModel M1 { get; private set; } = null!;

    public string TextFile => World.Dir.File("notes.txt");
    public string Folder => World.Dir.File("a-folder");
    public string Missing => World.Dir.File("missing.qcow2");
    public string ExistingExport => World.Dir.File("existing.qcow2");
    public const string ExistingExportContent = "already here\n";

    public async ValueTask InitializeAsync()
    {
        await World.StartDaemonAsync();
        await World.CreateVmAsync("v");
        Now = World.NewModel("now");
        await World.WriteAsync("v", Now, new W(0x11, 0, HavenWorld.M));
        await World.CheckpointAsync("v", "c1");
        M1 = await World.Remember(Now, "m1");
        await World.WriteAsync("v", Now, new W(0x22, HavenWorld.M, HavenWorld.M));
        await World.CheckpointAsync("v", "c2");
        await World.CreateVmAsync("r", start: true);

        File.WriteAllText(TextFile, "These are notes, not a disk image.\n"); // 35 bytes: not even a whole sector
        Directory.CreateDirectory(Folder);
        File.WriteAllText(ExistingExport, ExistingExportContent);
    }

    public async ValueTask DisposeAsync() => await World.DisposeAsync();

    public string Expand(string arg) => arg
        .Replace("{text}", TextFile).Replace("{folder}", Folder).Replace("{missing}", Missing)
        .Replace("{existing}", ExistingExport).Replace("{dir}", World.Dir.Path);
}

/// <summary>
/// Refused commands: each prints one line "haven: ..." on stderr and nothing on stdout, exits with the
/// documented code (2 invalid, 3 not found, 4 conflict), and changes nothing: the VM list, every
/// checkpoint list and the files under the data folder's vms/ are the same before and after.
/// </summary>
public sealed class BadInputTests(BadInputFixture f) : IClassFixture<BadInputFixture>
{
    private HavenWorld W => f.World;

    public static TheoryData<string, int, string[]> Refusals => new()
    {
        // unknown VM
        { "vm show of an unknown VM", 3, ["vm", "show", "nope"] },
        { "vm start of an unknown VM", 3, ["vm", "start", "nope"] },
        { "vm remove of an unknown VM", 3, ["vm", "remove", "nope"] },
        { "checkpoint create on an unknown VM", 3, ["checkpoint", "create", "nope", "--name", "x"] },
        { "checkpoint list of an unknown VM", 3, ["checkpoint", "list", "nope"] },
        // unknown checkpoint
        { "apply of an unknown checkpoint", 3, ["checkpoint", "apply", "v", "nope"] },
        { "remove of an unknown checkpoint", 3, ["checkpoint", "remove", "v", "nope"] },
        { "subtree remove of an unknown checkpoint", 3, ["checkpoint", "remove", "v", "nope", "--subtree"] },
        { "rename of an unknown checkpoint", 3, ["checkpoint", "rename", "v", "nope", "x"] },
        { "export of an unknown checkpoint", 3, ["checkpoint", "export", "v", "nope", "{dir}/nope.qcow2"] },
        // names taken
        { "duplicate VM name", 4, ["vm", "create", "v", "--disk-size", "32M", "--accel", "tcg", "--memory", "64"] },
        { "duplicate checkpoint name", 4, ["checkpoint", "create", "v", "--name", "c1"] },
        { "rename onto a taken checkpoint name", 4, ["checkpoint", "rename", "v", "c2", "c1"] },
        // names with path syntax, given in request bodies
        { "VM name a/b", 2, ["vm", "create", "a/b", "--disk-size", "32M", "--accel", "tcg"] },
        { "VM name ..", 2, ["vm", "create", "..", "--disk-size", "32M", "--accel", "tcg"] },
        { "VM name x/../y", 2, ["vm", "create", "x/../y", "--disk-size", "32M", "--accel", "tcg"] },
        { "VM name with a backslash", 2, ["vm", "create", "a\\b", "--disk-size", "32M", "--accel", "tcg"] },
        { "checkpoint name a/b", 2, ["checkpoint", "create", "v", "--name", "a/b"] },
        { "checkpoint name ..", 2, ["checkpoint", "create", "v", "--name", ".."] },
        { "checkpoint name x/../y", 2, ["checkpoint", "create", "v", "--name", "x/../y"] },
        { "rename to a/b", 2, ["checkpoint", "rename", "v", "c1", "a/b"] },
        { "rename to ..", 2, ["checkpoint", "rename", "v", "c1", ".."] },
        { "apply with a new checkpoint named a/b", 2, ["checkpoint", "apply", "v", "c1", "--new-checkpoint-name", "a/b"] },
        // bad import sources
        { "--disk pointing at a text file", 2, ["vm", "create", "imp-text", "--disk", "{text}", "--accel", "tcg"] },
        { "--disk pointing at a folder", 2, ["vm", "create", "imp-folder", "--disk", "{folder}", "--accel", "tcg"] },
        { "--disk pointing at a missing file", 2, ["vm", "create", "imp-missing", "--disk", "{missing}", "--accel", "tcg"] },
        // wrong VM state
        { "vm start of a running VM", 4, ["vm", "start", "r"] },
        { "vm remove of a running VM", 4, ["vm", "remove", "r"] },
        { "vm stop of a VM that is off", 4, ["vm", "stop", "v"] },
        // export target taken
        { "export to an existing file", 4, ["checkpoint", "export", "v", "c1", "{existing}"] },
        { "export to an existing folder", 4, ["checkpoint", "export", "v", "c1", "{folder}"] },
        { "export into a missing folder", 2, ["checkpoint", "export", "v", "c1", "{missing}/x.qcow2"] },
    };

    [Theory]
    [MemberData(nameof(Refusals))]
    public async Task Refused_and_nothing_changes(string what, int exitCode, string[] args)
    {
        _ = what;
        var before = await SnapshotAsync();
        var r = await W.Cli([.. args.Select(f.Expand)]);
        AssertRefused(r, exitCode);
        Assert.Equal(before, await SnapshotAsync());
        Assert.Equal(BadInputFixture.ExistingExportContent, File.ReadAllText(f.ExistingExport));
        Assert.Empty(Directory.GetFiles(W.Dir.Path, "*.partial", SearchOption.AllDirectories));
    }

    /// <summary>
    /// The same names given where they travel in the request path (as the VM or checkpoint to act on).
    /// '..' must not be resolved as a path step, and 'a/b' must not reach an object of another name.
    /// Each case gets a fresh VM, since a resolved '..' acts on the VM itself.
    /// </summary>
    [Theory]
    [InlineData("vm", "show", "a/b")]
    [InlineData("vm", "show", "..")]
    [InlineData("vm", "show", "x/../y")]
    [InlineData("vm", "start", "..")]
    [InlineData("vm", "remove", "..")]
    [InlineData("checkpoint", "list", "..")]
    [InlineData("checkpoint", "remove", "{vm}", "..")]
    [InlineData("checkpoint", "remove", "{vm}", "a/b")]
    [InlineData("checkpoint", "remove", "{vm}", "x/../y")]
    [InlineData("checkpoint", "apply", "{vm}", "..")]
    [InlineData("checkpoint", "rename", "{vm}", "..", "z")]
    [InlineData("checkpoint", "export", "{vm}", "..", "{dir}/dots.qcow2")]
    public async Task Path_syntax_in_names_is_refused_where_names_address_objects(params string[] args)
    {
        var vm = "victim-" + Guid.NewGuid().ToString("N")[..6];
        await W.CreateVmAsync(vm);
        var before = await SnapshotAsync();
        var r = await W.Cli([.. args.Select(a => f.Expand(a).Replace("{vm}", vm))]);
        AssertRefused(r, 2);
        Assert.Equal(before, await SnapshotAsync());
        await W.OkAsync("vm", "remove", vm);
    }

    /// <summary>
    /// A name havend accepts at creation can be used afterwards to show and remove the object (or the
    /// name is refused outright). Runs on its own havend: an unaddressable VM would break the others.
    /// </summary>
    [Fact]
    public async Task Accepted_names_stay_addressable()
    {
        await using var w = new HavenWorld();
        await w.StartDaemonAsync();
        await w.CreateVmAsync("v");
        var problems = new List<string>();
        foreach (var name in new[] { ".", "a%2Fb", "with space", "\u00fcn\u00efcode" })
        {
            var created = await w.Cli("vm", "create", name, "--disk-size", "1M", "--accel", "tcg", "--json");
            if (created.ExitCode == 2) continue; // refusing the name outright is fine too
            Assert.True(created.ExitCode == 0, created.ToString());
            var shown = await w.Cli("vm", "show", name, "--json");
            if (shown.ExitCode != 0 || System.Text.Json.JsonSerializer.Deserialize<VmInfo>(shown.Stdout, ApiJson.Options)!.Name != name)
                problems.Add($"VM '{name}' was created but 'vm show' fails: {shown.Stderr.Trim()}");
            var removed = await w.Cli("vm", "remove", name);
            if (removed.ExitCode != 0) problems.Add($"VM '{name}' was created but 'vm remove' fails: {removed.Stderr.Trim()}");
        }
        foreach (var name in new[] { ".", "a%2Fb", "with space" })
        {
            var created = await w.Cli("checkpoint", "create", "v", "--name", name, "--json");
            if (created.ExitCode == 2) continue;
            Assert.True(created.ExitCode == 0, created.ToString());
            var removed = await w.Cli("checkpoint", "remove", "v", name, "--json");
            if (removed.ExitCode != 0) problems.Add($"checkpoint '{name}' was created but 'checkpoint remove' fails: {removed.Stderr.Trim()}");
        }
        Assert.True(problems.Count == 0, string.Join('\n', problems));
    }

    /// <summary>'a/b' names nothing (havend refuses such names), so it must not reach the VM called 'a%2Fb'.</summary>
    [Fact]
    public async Task Percent_encoded_names_are_refused_so_a_slash_can_never_reach_another_object()
    {
        var before = await SnapshotAsync();
        AssertRefused(await W.Cli("vm", "create", "a%2Fc", "--disk-size", "1M", "--accel", "tcg"), 2);
        AssertRefused(await W.Cli("vm", "remove", "a/c"), 2);
        AssertRefused(await W.Cli("checkpoint", "create", "v", "--name", "x%2E%2E"), 2);
        Assert.Equal(before, await SnapshotAsync());
    }

    /// <summary>The refused commands above really left the fixture's data alone.</summary>
    [Fact]
    public async Task Fixture_data_is_intact()
    {
        await W.AssertTreeAsync("v", CreateCrashTests.Tree(("c1", null), ("c2", "c1")), "c2");
        await W.AssertCheckpointDataAsync("v", "c1", f.M1);
        await W.AssertCheckpointDataAsync("v", "c2", f.Now);
        Assert.Equal(VmState.Running, (await W.ShowAsync("r")).State);
    }

    private static void AssertRefused(CliResult r, int exitCode)
    {
        Assert.True(r.ExitCode == exitCode, $"expected exit {exitCode}\n{r}");
        Assert.True(r.Stdout == "", $"stdout must be empty\n{r}");
        var line = Assert.Single(r.StderrLines);
        Assert.StartsWith("haven: ", line);
    }

    /// <summary>What a refused command must not change: 'vm list --json' (names, states, chains), the state database, the files under vms/.</summary>
    private async Task<string> SnapshotAsync() => await W.OkAsync("vm", "list", "--json") + "\n" + W.DumpState();
}
