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

    // Hostile images (UntrustedImageTests): each names something QEMU would follow, or lies about its format.
    public string ShadowBacked => World.Dir.File("shadow-backed.qcow2");
    public string JsonBacked => World.Dir.File("json-backed.qcow2");
    public string NbdBacked => World.Dir.File("nbd-backed.qcow2");
    public string DataFileImage => World.Dir.File("data-file.qcow2");
    public string ProtocolNamed => World.Dir.File("nbd:foo");
    public string CommaNamed => World.Dir.File("a,file.driver=nbd,b.raw");
    public string PlainRaw => World.Dir.File("plain.raw");
    public string PlainQcow2 => World.Dir.File("plain.qcow2");
    /// <summary>The unix socket <see cref="NbdBacked"/> names as its backing file; a listener counts connections.</summary>
    public string Bait => World.Dir.File("bait.sock");

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

        await Img("create", "-q", "-f", "qcow2", "-u", "-b", "/etc/shadow", "-F", "raw", ShadowBacked, "1M");
        await Img("create", "-q", "-f", "qcow2", "-u", "-b", "json:{\"driver\":\"raw\",\"file\":{\"driver\":\"file\",\"filename\":\"/etc/shadow\"}}", "-F", "raw", JsonBacked, "1M");
        await Img("create", "-q", "-f", "qcow2", "-u", "-b", "nbd:unix:" + Bait, "-F", "raw", NbdBacked, "1M");
        await Img("create", "-q", "-f", "qcow2", "-o", "data_file=" + World.Dir.File("data-file.raw"), DataFileImage, "1M");
        await Img("create", "-q", "-f", "qcow2", PlainQcow2, "1M");
        foreach (var raw in new[] { ProtocolNamed, CommaNamed, PlainRaw })
            File.WriteAllBytes(raw, new byte[1 << 20]);
    }

    private static Task Img(params string[] args) => Haven.Qemu.Images.ProcessRunner.RunAsync("qemu-img", args);

    public async ValueTask DisposeAsync() => await World.DisposeAsync();

    public string Expand(string arg) => arg
        .Replace("{text}", TextFile).Replace("{folder}", Folder).Replace("{missing}", Missing)
        .Replace("{existing}", ExistingExport).Replace("{dir}", World.Dir.Path)
        .Replace("{shadow}", ShadowBacked).Replace("{json}", JsonBacked).Replace("{nbd-backed}", NbdBacked).Replace("{data-file}", DataFileImage)
        .Replace("{nbd-name}", ProtocolNamed).Replace("{comma}", CommaNamed).Replace("{raw}", PlainRaw).Replace("{qcow2}", PlainQcow2);
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

    public static TheoryData<string, string[]> UntrustedImages => new()
    {
        { "a qcow2 whose backing file is /etc/shadow", ["--disk", "{shadow}"] },
        { "a qcow2 whose backing file is a json: name", ["--disk", "{json}"] },
        { "a qcow2 whose backing file is an nbd: name", ["--disk", "{nbd-backed}"] },
        { "a qcow2 with an external data file", ["--disk", "{data-file}"] },
        { "a qcow2 with an external data file, given as qcow2", ["--disk", "{data-file}", "--disk-format", "qcow2"] },
        { "a raw file named nbd:foo", ["--disk", "{nbd-name}"] },
        { "a raw file with commas in its path", ["--disk", "{comma}", "--disk-format", "raw"] },
        { "a raw file given as qcow2", ["--disk", "{raw}", "--disk-format", "qcow2"] },
        { "a qcow2 given as raw", ["--disk", "{qcow2}", "--disk-format", "raw"] },
        { "a qcow2 given as vhdx", ["--disk", "{qcow2}", "--disk-format", "vhdx"] },
        { "a good disk after a hostile one", ["--disk", "{raw}", "--disk", "{shadow}"] },
    };

    /// <summary>
    /// Hostile images at 'vm create --disk': exit 2, one line, no VM, and not one new file anywhere in the data
    /// folder. The nbd:-backed image's bait socket is never connected to: nothing the image names is opened.
    /// </summary>
    [Theory]
    [MemberData(nameof(UntrustedImages))]
    public async Task Untrusted_images_are_refused_and_nothing_is_created(string what, string[] disks)
    {
        _ = what;
        using var bait = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Unspecified);
        File.Delete(f.Bait);
        bait.Bind(new System.Net.Sockets.UnixDomainSocketEndPoint(f.Bait));
        bait.Listen(4);
        var accepted = bait.AcceptAsync(TestContext.Current.CancellationToken);
        var before = await SnapshotAsync() + DataFolderFiles();
        var r = await W.Cli(["vm", "create", "hostile", .. disks.Select(f.Expand), "--accel", "tcg", "--memory", "64"]);
        AssertRefused(r, 2);
        Assert.Equal(before, await SnapshotAsync() + DataFolderFiles());
        await Task.Delay(200, TestContext.Current.CancellationToken);
        Assert.False(accepted.IsCompleted, "something connected to the socket a hostile image names");
        await W.ShowAsync("v"); // havend still answers
    }

    /// <summary>The same images are fine when they are what they claim and name nothing: the refusals are not blanket.</summary>
    [Fact]
    public async Task Plain_images_of_the_given_format_are_imported()
    {
        var vm = "plain-" + Guid.NewGuid().ToString("N")[..6];
        // --disk-format applies to every --disk of the command: one VM per format, and one with the format probed.
        await W.OkAsync("vm", "create", vm, "--disk", f.PlainQcow2, "--disk-format", "qcow2", "--accel", "tcg", "--memory", "64");
        await W.OkAsync("vm", "create", vm + "-raw", "--disk", f.PlainRaw, "--disk-format", "raw", "--accel", "tcg", "--memory", "64");
        await W.OkAsync("vm", "create", vm + "-probed", "--disk", f.PlainQcow2, "--disk", f.PlainRaw, "--accel", "tcg", "--memory", "64");
        Assert.Equal([1L << 20], (await W.ShowAsync(vm)).Disks.Select(d => d.SizeBytes));
        Assert.Equal([1L << 20], (await W.ShowAsync(vm + "-raw")).Disks.Select(d => d.SizeBytes));
        Assert.Equal([1L << 20, 1L << 20], (await W.ShowAsync(vm + "-probed")).Disks.Select(d => d.SizeBytes));
        foreach (var name in new[] { vm, vm + "-raw", vm + "-probed" }) await W.OkAsync("vm", "remove", name);
    }

    /// <summary>Every path under the data folder except the state database's (SQLite may touch its -wal/-shm).</summary>
    private string DataFolderFiles() => string.Join('\n', Directory.GetFileSystemEntries(W.Data, "*", SearchOption.AllDirectories)
        .Where(p => !Path.GetFileName(p).StartsWith("haven.db", StringComparison.Ordinal)).Order(StringComparer.Ordinal));

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
