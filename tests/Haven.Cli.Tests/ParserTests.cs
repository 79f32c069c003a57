using System.CommandLine;
using Haven.Api;
using Haven.Cli.Commands.Checkpoint;
using Haven.Cli.Commands.Vm;

namespace Haven.Cli.Tests;

/// <summary>Command-line binding, without a daemon.</summary>
public class ParserTests
{
    static (ParseResult Result, T Command) Parse<T>(params string[] args) where T : Command
    {
        var ctx = new CliContext(new CliEnvironment { Out = TextWriter.Null, Error = TextWriter.Null, GetEnv = _ => null });
        var result = HavenCli.Build(ctx).Parse(args);
        Assert.Empty(result.Errors);
        return (result, Assert.IsType<T>(result.CommandResult.Command));
    }

    [Fact]
    public void VmCreateBindsDisksInCommandLineOrder()
    {
        var (result, command) = Parse<VmCreateCommand>("vm", "create", "x", "--disk-size", "1G", "--disk", "a.img", "--disk-size=64M");
        var request = command.BuildRequest(result);

        Assert.Equal("x", request.Name);
        Assert.Collection(request.Disks,
            d => { Assert.Equal(1L << 30, d.SizeBytes); Assert.Null(d.ImportPath); },
            d => { Assert.Equal(Path.GetFullPath("a.img"), d.ImportPath); Assert.True(Path.IsPathRooted(d.ImportPath)); Assert.Null(d.SizeBytes); },
            d => { Assert.Equal(64L << 20, d.SizeBytes); Assert.Null(d.ImportPath); });
    }

    [Fact]
    public void VmCreateDiskFormatAppliesToEveryImport()
    {
        var (result, command) = Parse<VmCreateCommand>("vm", "create", "x", "--disk", "a.img", "--disk-format", "raw", "--disk", "b.img", "--disk-size", "1M");
        Assert.Equal(new string?[] { "raw", "raw", null }, command.BuildRequest(result).Disks.Select(d => d.ImportFormat));
        (result, command) = Parse<VmCreateCommand>("vm", "create", "x", "--disk", "a.img");
        Assert.Null(Assert.Single(command.BuildRequest(result).Disks).ImportFormat);
    }

    [Fact]
    public void VmCreateDefaultsMatchTheContract()
    {
        var (result, command) = Parse<VmCreateCommand>("vm", "create", "x");
        var request = command.BuildRequest(result);
        var defaults = new VmCreateRequest { Name = "x" };

        Assert.Equal(defaults.Vcpus, request.Vcpus);
        Assert.Equal(defaults.MemoryMiB, request.MemoryMiB);
        Assert.Empty(request.Disks);
        Assert.True(request.GuestAgent);
        Assert.Equal("none", request.Network);
        Assert.Equal("auto", request.Accelerator);
        Assert.Equal(CheckpointType.Production, request.CheckpointType);
        Assert.Null(request.Kernel);
        Assert.Null(request.Initrd);
        Assert.Null(request.Append);
    }

    [Fact]
    public void VmCreateBindsEverything()
    {
        var (result, command) = Parse<VmCreateCommand>("vm", "create", "web", "--vcpus", "4", "--memory", "2048",
            "--kernel", "k/vmlinuz", "--initrd", "/boot/initrd.img", "--append", "console=ttyS0 root=/dev/vda",
            "--no-guest-agent", "--network", "user", "--accel", "tcg", "--checkpoint-type", "standard");
        var request = command.BuildRequest(result);

        Assert.Equal(4, request.Vcpus);
        Assert.Equal(2048, request.MemoryMiB);
        Assert.Equal(Path.GetFullPath("k/vmlinuz"), request.Kernel);
        Assert.Equal("/boot/initrd.img", request.Initrd);
        Assert.Equal("console=ttyS0 root=/dev/vda", request.Append);
        Assert.False(request.GuestAgent);
        Assert.Equal("user", request.Network);
        Assert.Equal("tcg", request.Accelerator);
        Assert.Equal(CheckpointType.Standard, request.CheckpointType);
    }

    [Fact]
    public void GlobalOptionsWorkBeforeAndAfterTheCommand()
    {
        var ctx = new CliContext(new CliEnvironment { Out = TextWriter.Null, Error = TextWriter.Null, GetEnv = _ => null });
        var root = HavenCli.Build(ctx);
        foreach (var args in new[] { new[] { "--json", "--host", "/h", "vm", "list" }, ["vm", "list", "--json", "--host", "/h"] })
        {
            var result = root.Parse(args);
            Assert.Empty(result.Errors);
            Assert.True(result.GetValue(ctx.Json));
            Assert.Equal("/h", result.GetValue(ctx.Host));
        }
    }

    [Fact]
    public void VmStopBindsForceAndTimeout()
    {
        var (result, command) = Parse<VmStopCommand>("vm", "stop", "x", "--force", "--timeout", "5");
        Assert.Equal(new VmStopRequest { Force = true, TimeoutSeconds = 5 }, command.BuildRequest(result));

        (result, command) = Parse<VmStopCommand>("vm", "stop", "x");
        Assert.Equal(new VmStopRequest(), command.BuildRequest(result));
    }

    [Fact]
    public void VmSetBindsCheckpointType()
    {
        var (result, command) = Parse<VmSetCommand>("vm", "set", "x", "--checkpoint-type", "ProductionOnly");
        Assert.Equal(CheckpointType.ProductionOnly, command.BuildRequest(result).CheckpointType);
    }

    [Fact]
    public void CheckpointApplyNewNameImpliesCreateFirst()
    {
        var (result, command) = Parse<CheckpointApplyCommand>("checkpoint", "apply", "vm1", "cp1", "--new-checkpoint-name", "before");
        Assert.Equal(new CheckpointApplyRequest { CreateCheckpointFirst = true, NewCheckpointName = "before" }, command.BuildRequest(result));

        (result, command) = Parse<CheckpointApplyCommand>("checkpoint", "apply", "vm1", "cp1");
        Assert.Equal(new CheckpointApplyRequest(), command.BuildRequest(result));
    }

    [Fact]
    public void CheckpointExportMakesThePathAbsolute()
    {
        var (result, command) = Parse<CheckpointExportCommand>("checkpoint", "export", "vm1", "cp1", "out/x.vhdx", "--format", "vhdx");
        var request = command.BuildRequest(result);
        Assert.Equal(Path.GetFullPath("out/x.vhdx"), request.Path);
        Assert.Equal("vhdx", request.Format);

        (result, command) = Parse<CheckpointExportCommand>("checkpoint", "export", "vm1", "cp1", "/tmp/x.qcow2");
        Assert.Equal(new CheckpointExportRequest { Path = "/tmp/x.qcow2", Format = "qcow2" }, command.BuildRequest(result));
    }

    [Fact]
    public async Task BadSizeIsOneErrorLineAndExit2()
    {
        var run = await CliRun.RunAsync("vm", "create", "x", "--disk-size", "12Q");
        Assert.Equal(2, run.ExitCode);
        Assert.Equal("", run.Out);
        Assert.Equal(["haven: --disk-size: '12Q' has an unknown unit 'Q' (use K, M, G or T)", "see 'haven vm create --help'"], run.ErrorLines);
    }

    [Fact]
    public async Task UnknownCommandIsExit2WithoutHelp()
    {
        var run = await CliRun.RunAsync("frobnicate");
        Assert.Equal(2, run.ExitCode);
        Assert.Equal("", run.Out);
        Assert.Equal(["haven: Unrecognized command or argument 'frobnicate'.", "see 'haven --help'"], run.ErrorLines);
    }

    [Theory]
    [InlineData("vm", "start")]                                   // missing NAME
    [InlineData("vm", "set", "x")]                                // --checkpoint-type is required
    [InlineData("vm", "create", "x", "--vcpus", "0")]
    [InlineData("vm", "create", "x", "--memory", "lots")]
    [InlineData("vm", "create", "x", "--network", "bridge")]
    [InlineData("vm", "create", "x", "--checkpoint-type", "Sometimes")]
    [InlineData("vm", "stop", "x", "--timeout", "-1")]
    [InlineData("checkpoint", "export", "v", "c", "p", "--format", "vmdk")]
    [InlineData("checkpoint", "rename", "v", "c")]                // missing NEWNAME
    [InlineData("vm", "list", "extra")]
    public async Task InvalidCommandLinesAreExit2(params string[] args)
    {
        var run = await CliRun.RunAsync(args);
        Assert.Equal(2, run.ExitCode);
        Assert.Equal("", run.Out);
        Assert.All(run.ErrorLines[..^1], l => Assert.StartsWith("haven: ", l));
        Assert.Matches("^see 'haven( [a-z]+)* --help'$", run.ErrorLines[^1]);
        Assert.DoesNotContain("Usage:", run.Error);
    }

    [Fact]
    public async Task HelpListsTheExitCodes()
    {
        var run = await CliRun.RunAsync("--help");
        Assert.Equal(0, run.ExitCode);
        Assert.Contains("Exit codes:", run.Out);
        Assert.Contains("5    havend cannot be reached", run.Out);
        Assert.Contains("Usage:", run.Out);
        Assert.Equal("", run.Error);
    }

    [Fact]
    public async Task BareGroupPrintsItsHelp()
    {
        var run = await CliRun.RunAsync("checkpoint");
        Assert.Equal(0, run.ExitCode);
        Assert.Contains("haven checkpoint [command] [options]", run.Out);
        Assert.Contains("export", run.Out);
    }
}
