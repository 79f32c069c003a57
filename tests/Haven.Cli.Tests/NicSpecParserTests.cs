using Haven.Api;
using Xunit;

namespace Haven.Cli.Tests;

public sealed class NicSpecParserTests
{
    [Fact]
    public void Nic_specs_parse_into_what_havend_gets()
    {
        Assert.True(NicSpecParser.TryParse("bridge=br0,mac=52:54:00:aa:bb:cc,model=e1000,link=down", out var nic, out _));
        Assert.Equal(new NicSpec { Mode = "bridge", Bridge = "br0", Mac = "52:54:00:aa:bb:cc", Model = "e1000", LinkUp = false }, nic);
        Assert.True(NicSpecParser.TryParse("user", out nic, out _));
        Assert.Equal(new NicSpec { Mode = "user" }, nic);
        foreach (var bad in new[] { "", "bridge", "bridge=", "mac=52:54:00:aa:bb:cc", "user,model=rtl8139", "user,link=sideways", "user,bridge=br0", "user,colour=red" })
            Assert.False(NicSpecParser.TryParse(bad, out _, out var error), bad);

        List<NicSpec> set = [];
        List<string> remove = [];
        Assert.True(NicSpecParser.TryParseChange("add:bridge=br1", set, remove, out _));
        Assert.True(NicSpecParser.TryParseChange("nic0:user,model=e1000", set, remove, out _));
        Assert.True(NicSpecParser.TryParseChange("remove:nic2", set, remove, out _));
        Assert.Equal([new NicSpec { Mode = "bridge", Bridge = "br1" }, new NicSpec { Name = "nic0", Mode = "user", Model = "e1000" }], set);
        Assert.Equal(["nic2"], remove);
        Assert.False(NicSpecParser.TryParseChange("bridge=br0", set, remove, out var e));
        Assert.Equal("'bridge=br0' is not a NIC change: use add:SPEC, remove:nicN or nicN:SPEC (replace)", e);
    }
}
