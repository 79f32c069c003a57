using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using Haven.Api;

namespace Haven.Host.Vms;

/// <summary>
/// The rules of a VM's hardware document (<see cref="VmHardware"/>): what is valid, how MACs are made and checked,
/// how bridge NICs' tap devices are named. Pure except for <see cref="HostNetwork"/>, which reads /sys/class/net.
/// </summary>
public static partial class Hardware
{
    public const int MaxNics = 8;
    public const string CdromId = "cdrom";
    public static readonly string[] NicModels = ["virtio", "e1000"];
    public static readonly string[] DiskBuses = ["virtio-blk", "virtio-scsi"];

    /// <summary>The document for the older settings (vcpus, memory, network "user"/"none").</summary>
    public static VmHardware FromLegacy(int vcpus, int memoryMiB, string network, string? userMac) => new()
    {
        Vcpus = vcpus,
        MemoryMiB = memoryMiB,
        Nics = network == "user" ? [new NicSpec { Name = "nic0", Mode = "user", Mac = userMac }] : [],
    };

    /// <summary>VmInfo.Network: "none", or the NICs' modes in order without repeats ("user", "bridge", "user,bridge").</summary>
    public static string NetworkSummary(VmHardware hw) =>
        hw.Nics.Count == 0 ? "none" : string.Join(',', hw.Nics.Select(n => n.Mode).Distinct());

    public static string Write(VmHardware hw) => JsonSerializer.Serialize(hw, ApiJson.Options);

    public static VmHardware Read(string json) =>
        JsonSerializer.Deserialize<VmHardware>(json, ApiJson.Options) ?? throw new InvalidDataException("empty hardware document");

    /// <summary>
    /// Checks everything that needs no look at the host (numbers, names, models, MAC syntax, boot order). Disk ids
    /// are the VM's disks (disk0 ...), for the boot order. Throws an invalid-argument error naming the first problem.
    /// </summary>
    public static void Validate(VmHardware hw, int diskCount)
    {
        if (hw.Vcpus is < 1 or > 64) throw HavenException.Invalid("vcpus must be between 1 and 64");
        if (hw.MemoryMiB is < 16 or > 1024 * 1024) throw HavenException.Invalid("memory must be between 16 MiB and 1 TiB");
        if (hw.CpuModel != "auto" && !CpuModelPattern().IsMatch(hw.CpuModel))
            throw HavenException.Invalid($"cpu model must be 'auto' or a QEMU CPU model name (letters, digits, '-', '_', '.'), not '{hw.CpuModel}'");
        if (!DiskBuses.Contains(hw.DiskBus)) throw HavenException.Invalid($"disk bus must be virtio-blk or virtio-scsi, not '{hw.DiskBus}'");
        switch (hw.Firmware)
        {
            case Vms.Firmware.Bios when hw.UefiCode is not null: throw HavenException.Invalid("a BIOS VM has no UEFI code image");
            case Vms.Firmware.Bios: break;
            case Vms.Firmware.Uefi when hw.UefiCode is not { Length: > 0 } code || !Path.IsPathFullyQualified(code):
                throw HavenException.Invalid($"a UEFI VM needs the absolute path of its UEFI code image, not '{hw.UefiCode}'");
            case Vms.Firmware.Uefi: break;
            default: throw HavenException.Invalid($"firmware must be bios or uefi, not '{hw.Firmware}'");
        }
        if (hw.Nics.Count > MaxNics) throw HavenException.Invalid($"a VM has at most {MaxNics} NICs");
        if (hw.CdromIso is not null && !hw.CdromDrive) throw HavenException.Invalid("an ISO needs a CD-ROM drive");
        if (hw.CdromIso is { } iso && (iso.Length == 0 || !Path.IsPathFullyQualified(iso)))
            throw HavenException.Invalid($"the ISO path must be absolute: '{iso}'");
        var names = new HashSet<string>();
        var macs = new HashSet<string>();
        foreach (var n in hw.Nics)
        {
            if (!NicNamePattern().IsMatch(n.Name) || !names.Add(n.Name)) throw HavenException.Invalid($"NIC name must be nic0..nic{MaxNics - 1} and unique, not '{n.Name}'");
            if (!NicModels.Contains(n.Model)) throw HavenException.Invalid($"NIC model must be virtio or e1000, not '{n.Model}'");
            switch (n.Mode)
            {
                case "user" when n.Bridge is not null: throw HavenException.Invalid($"{n.Name}: a user-mode NIC has no bridge");
                case "user": break;
                case "bridge" when n.Bridge is null || !BridgeNamePattern().IsMatch(n.Bridge):
                    throw HavenException.Invalid($"{n.Name}: a bridge NIC needs a bridge name (1-15 letters, digits, '-', '_', '.'), not '{n.Bridge}'");
                case "bridge": break;
                default: throw HavenException.Invalid($"NIC mode must be user or bridge, not '{n.Mode}'");
            }
            if (n.Mac is null) throw HavenException.Invalid($"{n.Name} has no MAC address");
            CheckMacSyntax(n.Mac);
            if (!macs.Add(n.Mac)) throw HavenException.Invalid($"MAC address {n.Mac} is given to two NICs");
        }
        var devices = new HashSet<string>(Enumerable.Range(0, diskCount).Select(i => "disk" + i).Concat(hw.Nics.Select(n => n.Name)));
        if (hw.CdromDrive) devices.Add(CdromId);
        var seen = new HashSet<string>();
        foreach (var d in hw.BootOrder)
            if (!devices.Contains(d) || !seen.Add(d))
                throw HavenException.Invalid($"boot order names '{d}', which is not one of this VM's devices ({string.Join(", ", devices.Order())}) or is named twice");
    }

    /// <summary>A name a bridge can have (a Linux interface name, at most 15 characters, never "." or "..").</summary>
    public static bool IsBridgeName(string name) => BridgeNamePattern().IsMatch(name);

    /// <summary>A unicast MAC in lower-case aa:bb:cc:dd:ee:ff form, or an invalid-argument error.</summary>
    public static string NormalizeMac(string mac)
    {
        var m = mac.Trim().ToLowerInvariant().Replace('-', ':');
        CheckMacSyntax(m);
        return m;
    }

    private static void CheckMacSyntax(string mac)
    {
        if (!MacPattern().IsMatch(mac)) throw HavenException.Invalid($"MAC address must look like 52:54:00:12:34:56, not '{mac}'");
        // The lowest bit of the first octet marks a group address: a NIC must have a unicast one.
        if ((byte.Parse(mac[..2], NumberStyles.HexNumber) & 1) != 0) throw HavenException.Invalid($"MAC address {mac} is a multicast address; a NIC needs a unicast one");
        if (mac == "00:00:00:00:00:00") throw HavenException.Invalid("MAC address 00:00:00:00:00:00 is not usable");
    }

    /// <summary>A random MAC in QEMU's locally administered range 52:54:00 that is in none of <paramref name="taken"/>.</summary>
    public static string NewMac(ISet<string> taken, Random? random = null)
    {
        random ??= Random.Shared;
        for (var i = 0; i < 1000; i++)
        {
            var b = new byte[3];
            random.NextBytes(b);
            var mac = $"52:54:00:{b[0]:x2}:{b[1]:x2}:{b[2]:x2}";
            if (!taken.Contains(mac)) return mac;
        }
        throw new InvalidOperationException("no free MAC address found");
    }

    /// <summary>
    /// Gives each NIC its name (nic0.. in order, keeping given ones) and a MAC (given ones normalized and checked
    /// against <paramref name="taken"/>, missing ones generated); returns the NICs as they are to be stored.
    /// </summary>
    public static List<NicSpec> AssignNics(IReadOnlyList<NicSpec> nics, ISet<string> taken, IReadOnlyCollection<string>? keep = null)
    {
        var result = new List<NicSpec>();
        var names = new HashSet<string>(nics.Where(n => n.Name.Length > 0).Select(n => n.Name));
        var used = new HashSet<string>(taken);
        foreach (var n in nics)
        {
            var name = n.Name;
            if (name.Length == 0)
            {
                var i = 0;
                while (names.Contains("nic" + i)) i++;
                name = "nic" + i;
                names.Add(name);
            }
            string mac;
            if (string.IsNullOrEmpty(n.Mac)) mac = NewMac(used);
            else
            {
                mac = NormalizeMac(n.Mac);
                if (used.Contains(mac) && keep?.Contains(mac) != true) throw HavenException.Invalid($"MAC address {mac} is already in use on this host");
            }
            used.Add(mac);
            result.Add(n with { Name = name, Mac = mac, Mode = n.Mode, Model = n.Model });
        }
        return result;
    }

    /// <summary>Gives every NIC a new MAC (a VM restored as a new VM must not share the original's MACs on one network).</summary>
    public static VmHardware WithNewMacs(VmHardware hw, ISet<string> taken)
    {
        var used = new HashSet<string>(taken);
        return hw with
        {
            Nics = hw.Nics.ConvertAll(n =>
            {
                var mac = NewMac(used);
                used.Add(mac);
                return n with { Mac = mac };
            }),
        };
    }

    /// <summary>
    /// The tap device of a bridge NIC: "hv" + the VM id's first 10 characters + "n" + the NIC's number (at most 15
    /// characters, the kernel's limit), so the start-up sweep can tell which VM a tap belongs to.
    /// </summary>
    public static string TapName(string vmId, string nicName) => TapPrefix + vmId[..Math.Min(10, vmId.Length)] + "n" + nicName["nic".Length..];

    public const string TapPrefix = "hv";

    /// <summary>The VM id prefix a tap name carries, or null for a name that is not one of Haven's taps.</summary>
    public static string? VmIdPrefixOfTap(string tap)
    {
        var m = TapNamePattern().Match(tap);
        return m.Success ? m.Groups[1].Value : null;
    }

    [GeneratedRegex("^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")]
    private static partial Regex MacPattern();
    [GeneratedRegex("^nic[0-7]$")]
    private static partial Regex NicNamePattern();
    // A Linux interface name (at most 15 characters), never "." or "..": it is also a folder name under /sys/class/net.
    [GeneratedRegex("^(?!\\.{1,2}$)[A-Za-z0-9_.-]{1,15}$")]
    private static partial Regex BridgeNamePattern();
    [GeneratedRegex("^[A-Za-z0-9_.-]{1,64}$")]
    private static partial Regex CpuModelPattern();
    [GeneratedRegex("^hv([0-9a-f]{10})n[0-7]$")]
    private static partial Regex TapNamePattern();
}
