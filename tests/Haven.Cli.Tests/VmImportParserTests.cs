using Haven.Cli.Commands.Vm;

namespace Haven.Cli.Tests;

/// <summary>vm import's options, without a daemon.</summary>
public class VmImportParserTests
{
    static System.CommandLine.ParseResult Parse(params string[] args) =>
        HavenCli.Build(new CliContext(new CliEnvironment { Out = TextWriter.Null, Error = TextWriter.Null, GetEnv = _ => null })).Parse(args);

    [Fact]
    public void Network_maps_bind_by_libvirt_network_name()
    {
        var result = Parse("vm", "import", "--libvirt", "web.xml", "--network-map", "default=virbr0", "--network-map", "lan=br1", "--name", "web2");
        Assert.Empty(result.Errors);
        var command = Assert.IsType<VmImportCommand>(result.CommandResult.Command);
        Assert.Equal(new Dictionary<string, string> { ["default"] = "virbr0", ["lan"] = "br1" }, result.GetValue(command.NetworkMap));
        Assert.Equal("web2", result.GetValue(command.NewName));
    }

    [Theory]
    [InlineData("--network-map: 'default' is not NET=BRIDGE", "--libvirt", "a.xml", "--network-map", "default")]
    [InlineData("--network-map: '=br0' is not NET=BRIDGE", "--libvirt", "a.xml", "--network-map", "=br0")]
    [InlineData("--network-map: network 'default' is mapped twice", "--libvirt", "a.xml", "--network-map", "default=br0", "--network-map", "default=br1")]
    [InlineData("Option '--libvirt' is required.")]
    public void Bad_options_are_parse_errors(string error, params string[] args)
    {
        var result = Parse(["vm", "import", .. args]);
        Assert.Contains(error, result.Errors.Select(e => e.Message));
    }
}
