using System.Text.Json;
using Haven.Api;
using Haven.Host.Vms;
using Xunit;

namespace Haven.Host.Tests;

/// <summary>Firmware rules: the hardware document's firmware fields, the code image a replica picks, the packed variable store of a backup.</summary>
public sealed class FirmwareTests
{
    [Fact]
    public void Firmware_is_bios_or_uefi_with_an_absolute_code_image()
    {
        Hardware.Validate(new VmHardware(), 1);
        Hardware.Validate(new VmHardware { Firmware = "uefi", UefiCode = "/usr/share/OVMF/OVMF_CODE_4M.fd" }, 1);
        void Bad(VmHardware hw, string message) => Assert.Equal(message, Assert.Throws<HavenException>(() => Hardware.Validate(hw, 1)).Message);
        Bad(new VmHardware { Firmware = "efi" }, "firmware must be bios or uefi, not 'efi'");
        Bad(new VmHardware { Firmware = "uefi" }, "a UEFI VM needs the absolute path of its UEFI code image, not ''");
        Bad(new VmHardware { Firmware = "uefi", UefiCode = "OVMF_CODE.fd" }, "a UEFI VM needs the absolute path of its UEFI code image, not 'OVMF_CODE.fd'");
        Bad(new VmHardware { UefiCode = "/usr/share/OVMF/OVMF_CODE.fd" }, "a BIOS VM has no UEFI code image");
    }

    [Fact]
    public void A_replica_takes_only_an_ovmf_code_file_name_from_its_primary()
    {
        Assert.Equal("/usr/share/OVMF/OVMF_CODE.fd", Firmware.LocalCode("/opt/elsewhere/OVMF_CODE.fd"));
        Assert.Equal(Firmware.DefaultCode, Firmware.LocalCode("/etc/shadow"));
        Assert.Equal(Firmware.DefaultCode, Firmware.LocalCode("/usr/share/OVMF/../../../etc/OVMF_CODE.fd/.."));
        Assert.Equal(Firmware.DefaultCode, Firmware.LocalCode(null));
        Assert.Equal(Firmware.DefaultCode, Firmware.LocalCode("OVMF_CODE_missing.fd"));
    }

    [Fact]
    public void A_packed_store_round_trips_and_a_changed_one_is_refused()
    {
        var vars = new byte[256 << 10];
        Random.Shared.NextBytes(vars.AsSpan(0, 4096));
        var doc = new System.Text.Json.Nodes.JsonObject { ["name"] = "vm", [PackedVars.Property] = PackedVars.Pack(vars) };
        Assert.Equal(vars, PackedVars.Unpack(JsonSerializer.SerializeToElement(doc)));
        Assert.Null(PackedVars.Unpack(JsonSerializer.SerializeToElement(new { name = "bios" })));

        var other = (byte[])vars.Clone();
        other[0] ^= 1;
        var tampered = PackedVars.Pack(vars);
        tampered["gzip"] = PackedVars.Pack(other)["gzip"]!.GetValue<string>();
        doc[PackedVars.Property] = tampered;
        Assert.Contains("SHA-256", Assert.Throws<HavenException>(() => PackedVars.Unpack(JsonSerializer.SerializeToElement(doc))).Message);

        // A small gzip that unpacks past the limit stops at the limit.
        var bomb = VarsWire.Pack(new byte[Firmware.MaxVarsBytes + 1]);
        Assert.True(bomb.Length < 1 << 20);
        Assert.Throws<InvalidDataException>(() => VarsWire.Unpack(bomb));
    }
}
