using Haven.Cli.Commands.Vm;

namespace Haven.Cli.Tests;

/// <summary>vm create's firmware options bind into the request (paths made absolute); anything but bios/uefi is a parse error.</summary>
public class FirmwareOptionTests
{
    [Fact]
    public void Firmware_options_bind_and_default_to_bios()
    {
        var ctx = new CliContext(new CliEnvironment { Out = TextWriter.Null, Error = TextWriter.Null, GetEnv = _ => null });
        var root = HavenCli.Build(ctx);
        var result = root.Parse(["vm", "create", "efi", "--disk-size", "1G", "--firmware", "uefi", "--uefi-code", "ovmf/code.fd", "--uefi-vars", "/v/vars.fd"]);
        Assert.Empty(result.Errors);
        var request = Assert.IsType<VmCreateCommand>(result.CommandResult.Command).BuildRequest(result);
        Assert.Equal(("uefi", Path.GetFullPath("ovmf/code.fd"), "/v/vars.fd"), (request.Firmware, request.UefiCode, request.UefiVars));

        var plain = root.Parse(["vm", "create", "b", "--disk-size", "1G"]);
        var bios = Assert.IsType<VmCreateCommand>(plain.CommandResult.Command).BuildRequest(plain);
        Assert.Equal(("bios", null, null), (bios.Firmware, bios.UefiCode, bios.UefiVars));

        Assert.NotEmpty(root.Parse(["vm", "create", "x", "--disk-size", "1G", "--firmware", "efi"]).Errors);
    }
}
