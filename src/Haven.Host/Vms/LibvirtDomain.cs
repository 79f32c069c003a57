using System.Globalization;
using System.Text;
using System.Xml;
using System.Xml.Linq;
using Haven.Api;

namespace Haven.Host.Vms;

/// <summary>
/// A libvirt domain (the XML of <c>virsh dumpxml</c>) read into the request that creates the same VM in Haven, plus
/// every device Haven cannot give it. Pure: nothing on the host is looked at (VmService checks the files and bridges
/// it names). The XML is untrusted: no DTD, no external entities, at most <see cref="MaxXmlChars"/> characters.
/// docs/architecture.md "Importing from libvirt" lists what maps, what is ignored and what is refused.
/// </summary>
public static class LibvirtDomain
{
    public const int MaxXmlChars = 1024 * 1024;
    private const string QemuNamespace = "http://libvirt.org/schemas/domain/qemu/1.0";

    /// <param name="Request">The VM to create (named after the domain).</param>
    /// <param name="Unsupported">Devices and settings Haven cannot give the VM, each described in a few words; the import is refused when there is any.</param>
    /// <param name="Notes">What was changed on the way (a disk moved to virtio, a NIC model replaced ...), for the log.</param>
    /// <param name="Ignored">Devices Haven provides itself or leaves out knowingly (serial, graphics, controllers ...), for the log.</param>
    public sealed record Result(VmCreateRequest Request, List<string> Unsupported, List<string> Notes, List<string> Ignored);

    // Devices Haven provides its own way (a serial console, a VNC display, its controllers) or that the guest does well
    // without (balloon, RNG, input tablets, panic notifier, audio back-ends).
    private static readonly HashSet<string> IgnoredDevices =
        ["emulator", "controller", "serial", "console", "graphics", "video", "input", "memballoon", "rng", "audio", "hub", "panic"];

    // Settings outside <devices> that are mapped or that only tune the host side (pinning, clock, power-button actions).
    private static readonly HashSet<string> KnownSettings =
    [
        "name", "uuid", "genid", "title", "description", "metadata", "memory", "currentMemory", "maxMemory", "vcpu", "vcpus",
        "cpu", "os", "features", "clock", "on_poweroff", "on_reboot", "on_crash", "on_lockfailure", "pm", "seclabel", "resource",
        "cputune", "numatune", "memoryBacking", "iothreads", "iothreadids", "blkiotune", "memtune", "sysinfo", "idmap", "perf",
        "keywrap", "throttlegroups", "devices",
    ];

    public static Result Parse(string xml, IReadOnlyDictionary<string, string>? networkMap = null)
    {
        var root = Load(xml).Root!;
        if (root.Name.LocalName != "domain" || root.Name.Namespace != XNamespace.None)
            throw HavenException.Invalid($"not a libvirt domain: the root element is <{Clean(root.Name.LocalName)}>, not <domain>");
        var name = Text(root.Element("name"));
        if (string.IsNullOrWhiteSpace(name)) throw HavenException.Invalid("the libvirt domain has no <name>");
        var d = new Reader(name, networkMap ?? new Dictionary<string, string>());
        if (Attr(root, "type") is { } type && type is not ("kvm" or "qemu"))
            d.Unsupported.Add($"domain type {Clean(type)} (only kvm and qemu domains)");
        foreach (var e in root.Elements())
            if (e.Name.Namespace != XNamespace.None || !KnownSettings.Contains(e.Name.LocalName))
                d.Unsupported.Add(e.Name.NamespaceName == QemuNamespace ? $"qemu:{Clean(e.Name.LocalName)} (QEMU pass-through)" : Describe(e));
        return d.Read(root);
    }

    private static XDocument Load(string xml)
    {
        if (xml.Length > MaxXmlChars) throw HavenException.Invalid($"the libvirt domain XML is larger than {MaxXmlChars / 1024 / 1024} MiB");
        var settings = new XmlReaderSettings
        {
            DtdProcessing = DtdProcessing.Prohibit,
            XmlResolver = null,
            MaxCharactersInDocument = MaxXmlChars,
            MaxCharactersFromEntities = 0,
            IgnoreComments = true,
            IgnoreProcessingInstructions = true,
        };
        try
        {
            using var reader = XmlReader.Create(new StringReader(xml), settings);
            return XDocument.Load(reader);
        }
        catch (XmlException e) when (e.Message.Contains("DTD", StringComparison.Ordinal))
        {
            throw HavenException.Invalid($"the libvirt domain XML has a document type declaration (<!DOCTYPE>), which is not allowed");
        }
        catch (XmlException e)
        {
            throw HavenException.Invalid($"the libvirt domain XML is not well-formed: {Clean(e.Message, 200)}");
        }
    }

    /// <summary>One domain being read: the request's parts as they are found, and what cannot be imported.</summary>
    private sealed class Reader(string domainName, IReadOnlyDictionary<string, string> networkMap)
    {
        public List<string> Unsupported { get; } = [];
        public List<string> Notes { get; } = [];
        public List<string> Ignored { get; } = [];
        private readonly List<DiskSpec> _disks = [];
        private readonly List<NicSpec> _nics = [];
        private readonly List<(int Order, string Device)> _bootOrders = [];
        private string? _cdrom;
        private bool _agent;
        private readonly List<string> _buses = [];

        public Result Read(XElement root)
        {
            var memoryMiB = MemoryMiB(root);
            var vcpus = Vcpus(root.Element("vcpu"));
            var cpu = CpuModel(root.Element("cpu"));
            var os = root.Element("os");
            foreach (var device in root.Element("devices")?.Elements() ?? [])
            {
                switch (device.Name.LocalName)
                {
                    case "disk": ReadDisk(device); break;
                    case "interface": ReadInterface(device); break;
                    case "channel": ReadChannel(device); break;
                    case var n when IgnoredDevices.Contains(n) && device.Name.Namespace == XNamespace.None: Ignored.Add(Describe(device)); break;
                    default: Unsupported.Add(Describe(device)); break;
                }
            }
            var (firmware, code, vars) = ReadFirmware(os);
            // One controller for all disks: virtio-scsi when every disk was on SCSI.
            var diskBus = _buses.Count > 0 && _buses.All(b => b == "scsi") ? "virtio-scsi" : "virtio-blk";
            if (diskBus == "virtio-blk" && _buses.Contains("scsi")) Notes.Add("the SCSI disks go on virtio-blk with the others");
            var request = new VmCreateRequest
            {
                Name = domainName,
                MemoryMiB = memoryMiB,
                Vcpus = vcpus,
                CpuModel = cpu,
                Disks = _disks,
                DiskBus = diskBus,
                Nics = _nics,
                Cdrom = _cdrom,
                GuestAgent = _agent,
                Firmware = firmware,
                UefiCode = code,
                UefiVars = vars,
                Kernel = PathOf(os?.Element("kernel"), "kernel"),
                Initrd = PathOf(os?.Element("initrd"), "initrd"),
                Append = Text(os?.Element("cmdline")),
                BootOrder = BootOrder(os),
            };
            // The kernel is what boots (QEMU's linuxboot ROM holds boot index 0, libvirt ignores <boot> then too).
            if (request.Kernel is not null && request.BootOrder is not null) request = request with { BootOrder = null };
            if (os?.Element("dtb") is { } dtb) Unsupported.Add(Describe(dtb));
            return new Result(request, Unsupported, Notes, Ignored);
        }

        private int MemoryMiB(XElement root)
        {
            var e = root.Element("memory") ?? root.Element("currentMemory") ?? throw Bad("it has no <memory>");
            var bytes = Bytes(e);
            if (root.Element("currentMemory") is { } current && Bytes(current) < bytes)
                Notes.Add("the balloon target (<currentMemory>) is left out: the VM gets all of <memory>");
            if (root.Element("maxMemory") is not null) Notes.Add("<maxMemory> (memory hot-plug) is left out");
            const ulong MiB = 1024 * 1024;
            var mib = bytes / MiB + (bytes % MiB == 0 ? 0UL : 1UL);
            return mib > int.MaxValue ? throw Bad($"its memory ({bytes} bytes) is too large") : (int)mib;
        }

        /// <summary>A libvirt size: a number and a unit (KiB when none is given; KB, MB ... are powers of 1000).</summary>
        private ulong Bytes(XElement e)
        {
            var unit = Attr(e, "unit") ?? "KiB";
            ulong factor = unit switch
            {
                "b" or "bytes" => 1,
                "KB" => 1000,
                "k" or "KiB" => 1UL << 10,
                "MB" => 1000_000,
                "M" or "MiB" => 1UL << 20,
                "GB" => 1000_000_000,
                "G" or "GiB" => 1UL << 30,
                "TB" => 1000_000_000_000,
                "T" or "TiB" => 1UL << 40,
                _ => throw Bad($"<{e.Name.LocalName}> has an unknown unit '{Clean(unit)}'"),
            };
            if (!ulong.TryParse(Text(e), NumberStyles.None, CultureInfo.InvariantCulture, out var n))
                throw Bad($"<{e.Name.LocalName}> is not a whole number: '{Clean(Text(e) ?? "")}'");
            try { return checked(n * factor); }
            catch (OverflowException) { throw Bad($"<{e.Name.LocalName}> is too large"); }
        }

        private int Vcpus(XElement? e)
        {
            if (e is null) return 1;
            // 'current' is how many the guest runs with; the rest are hot-plug slots Haven does not have.
            var text = Attr(e, "current") ?? Text(e);
            if (!int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var n) || n < 1)
                throw Bad($"<vcpu> is not a positive whole number: '{Clean(text ?? "")}'");
            if (Attr(e, "current") is not null && Text(e) != text) Notes.Add($"vCPU hot-plug slots are left out: the VM gets {n} vCPUs");
            return n;
        }

        private string CpuModel(XElement? cpu)
        {
            if (cpu is null) return "auto";
            if (cpu.Elements("feature").Any() || cpu.Element("topology") is not null || cpu.Element("numa") is not null)
                Notes.Add("CPU features, topology and NUMA cells are left out");
            var model = Text(cpu.Element("model"));
            return (Attr(cpu, "mode") ?? "custom") switch
            {
                "host-passthrough" or "host-model" => "auto",
                "maximum" => "max",
                _ when string.IsNullOrWhiteSpace(model) => "auto",
                _ => model.Trim(),
            };
        }

        private void ReadDisk(XElement disk)
        {
            var type = Attr(disk, "type") ?? "file";
            var device = Attr(disk, "device") ?? "disk";
            var target = Attr(disk.Element("target"), "dev") ?? "?";
            var bus = Attr(disk.Element("target"), "bus");
            var source = disk.Element("source");
            var file = Attr(source, "file");
            var format = Attr(disk.Element("driver"), "type");
            if (type != "file")
            {
                var what = Attr(source, "dev") ?? Attr(source, "name") ?? (Attr(source, "pool") is { } pool ? $"{pool}/{Attr(source, "volume")}" : null);
                Unsupported.Add($"disk ({Clean(type)}{(what is null ? "" : " " + Clean(what))} as {Clean(target)})");
                return;
            }
            if (device == "cdrom")
            {
                if (file is null) { Notes.Add($"the empty CD-ROM drive {target} is left out ('vm set --cdrom ISO' adds one)"); return; }
                if (_cdrom is not null) { Unsupported.Add($"disk (a second CD-ROM, {Clean(target)})"); return; }
                _cdrom = CheckPath(file, $"CD-ROM {target}");
                BootOrderOf(disk, Hardware.CdromId);
                return;
            }
            if (device != "disk") { Unsupported.Add($"disk ({Clean(device)} {Clean(target)})"); return; }
            if (file is null) { Unsupported.Add($"disk ({Clean(target)} without a source file)"); return; }
            if (format is not (null or "qcow2" or "raw")) { Unsupported.Add($"disk ({Clean(target)}, format {Clean(format)})"); return; }
            if (disk.Element("shareable") is not null) { Unsupported.Add($"disk ({Clean(target)}, shared with other VMs)"); return; }
            if (disk.Element("readonly") is not null) Notes.Add($"disk {target} was read-only; it is writable in Haven");
            if (bus is not (null or "virtio" or "scsi")) Notes.Add($"disk {target} ({bus}) goes on virtio (the guest needs virtio drivers)");
            _buses.Add(bus ?? "virtio");
            BootOrderOf(disk, "disk" + _disks.Count);
            _disks.Add(new DiskSpec { ImportPath = file, ImportFormat = format });
        }

        private void ReadInterface(XElement nic)
        {
            var type = Attr(nic, "type") ?? "?";
            var mac = Attr(nic.Element("mac"), "address");
            var source = nic.Element("source");
            var label = mac is null ? "" : ", " + Clean(mac);
            string mode;
            string? bridge = null;
            switch (type)
            {
                case "bridge":
                    mode = "bridge";
                    bridge = Attr(source, "bridge");
                    if (bridge is null) { Unsupported.Add($"interface (bridge without a name{label})"); return; }
                    if (Attr(nic.Element("virtualport"), "type") is { } vport)
                    {
                        Unsupported.Add($"interface ({Clean(vport)} bridge {Clean(bridge)}{label})");
                        return;
                    }
                    break;
                case "user": mode = "user"; break;
                case "network":
                    var network = Attr(source, "network") ?? "?";
                    if (!networkMap.TryGetValue(network, out bridge))
                    {
                        Unsupported.Add($"interface (libvirt network '{Clean(network)}'{label}; map it to a bridge with --network-map {Clean(network)}=BRIDGE)");
                        return;
                    }
                    mode = "bridge";
                    break;
                default:
                    Unsupported.Add($"interface ({Clean(type)}{(Attr(source, "dev") is { } dev ? " " + Clean(dev) : "")}{label})");
                    return;
            }
            if (nic.Element("filterref") is { } filter)
            {
                // A packet filter guards the network from the guest: dropping it quietly would open what it closed.
                Unsupported.Add($"interface (packet filter {Clean(Attr(filter, "filter") ?? "?")}{label})");
                return;
            }
            var declared = Attr(nic.Element("model"), "type");
            string model;
            switch (declared)
            {
                case "virtio" or "e1000": model = declared; break;
                case null: model = "virtio"; Notes.Add($"the interface{label} has no model: it gets virtio"); break;
                case "e1000e": model = "e1000"; Notes.Add($"the e1000e interface{label} becomes an e1000"); break;
                default: Unsupported.Add($"interface (model {Clean(declared)}{label})"); return;
            }
            if (nic.Element("bandwidth") is not null || nic.Element("vlan") is not null) Notes.Add($"bandwidth limits and VLAN tags of the interface{label} are left out");
            BootOrderOf(nic, "nic" + _nics.Count);
            _nics.Add(new NicSpec { Mode = mode, Bridge = bridge, Mac = mac, Model = model, LinkUp = Attr(nic.Element("link"), "state") != "down" });
        }

        private void ReadChannel(XElement channel)
        {
            var target = channel.Element("target");
            var name = Attr(target, "name");
            if (Attr(target, "type") == "virtio" && name == "org.qemu.guest_agent.0") _agent = true;
            else if (Attr(channel, "type") == "spicevmc" || name is "com.redhat.spice.0" or "org.spice-space.webdav.0")
                Ignored.Add("channel (SPICE)");
            else Unsupported.Add($"channel ({Clean(name ?? Attr(target, "type") ?? Attr(channel, "type") ?? "?")})");
        }

        private (string Firmware, string? Code, string? Vars) ReadFirmware(XElement? os)
        {
            if (os is null) return ("bios", null, null);
            if (Attr(os.Element("type"), "arch") is { } arch && arch != "x86_64") Unsupported.Add($"architecture {Clean(arch)}");
            if (Text(os.Element("type")) is { } kind && kind.Trim() != "hvm") Unsupported.Add($"os type {Clean(kind)}");
            var firmware = Attr(os, "firmware") == "efi" ? "uefi" : "bios";
            string? code = null;
            if (os.Element("loader") is { } loader)
            {
                var path = Text(loader)?.Trim();
                var loaderType = Attr(loader, "type") ?? "rom";
                if (Attr(loader, "secure") == "yes") Unsupported.Add("secure boot (loader secure='yes')");
                if (loaderType != "pflash" || Attr(loader, "format") is { } f && f != "raw")
                    Unsupported.Add($"loader ({Clean(loaderType)}{(Attr(loader, "format") is { } lf ? " " + Clean(lf) : "")}{(string.IsNullOrEmpty(path) ? "" : " " + Clean(path))})");
                else if (!string.IsNullOrEmpty(path))
                {
                    firmware = "uefi";
                    code = CheckPath(path, "the UEFI loader");
                }
            }
            if (os.Element("firmware")?.Elements("feature").Any(f => Attr(f, "name") == "secure-boot" && Attr(f, "enabled") == "yes") == true
                && !Unsupported.Any(u => u.StartsWith("secure boot", StringComparison.Ordinal)))
                Unsupported.Add("secure boot (firmware feature secure-boot)");
            string? vars = null;
            if (os.Element("nvram") is { } nvram && firmware == "uefi")
            {
                var path = Attr(nvram.Element("source"), "file") ?? Text(nvram)?.Trim();
                if (Attr(nvram, "type") is { } t && t != "file" || Attr(nvram, "format") is { } nf && nf != "raw")
                    Unsupported.Add($"nvram ({Clean(Attr(nvram, "type") ?? Attr(nvram, "format")!)})");
                else if (!string.IsNullOrEmpty(path)) vars = CheckPath(path, "the UEFI variable store (<nvram>)");
            }
            return (firmware, code, vars);
        }

        /// <summary>Per-device &lt;boot order='N'/&gt; when there is any, else &lt;os&gt;&lt;boot dev=.../&gt; for the devices the VM has.</summary>
        private List<string>? BootOrder(XElement? os)
        {
            if (_bootOrders.Count > 0) return [.. _bootOrders.OrderBy(b => b.Order).Select(b => b.Device)];
            var order = new List<string>();
            foreach (var boot in os?.Elements("boot") ?? [])
            {
                var device = Attr(boot, "dev") switch
                {
                    "hd" when _disks.Count > 0 => "disk0",
                    "cdrom" when _cdrom is not null => Hardware.CdromId,
                    "network" when _nics.Count > 0 => "nic0",
                    _ => null,
                };
                if (device is not null && !order.Contains(device)) order.Add(device);
            }
            return order.Count == 0 ? null : order;
        }

        private void BootOrderOf(XElement device, string id)
        {
            if (device.Element("boot") is { } boot && int.TryParse(Attr(boot, "order"), NumberStyles.None, CultureInfo.InvariantCulture, out var n))
                _bootOrders.Add((n, id));
        }

        private string? PathOf(XElement? e, string what) => Text(e)?.Trim() is { Length: > 0 } path ? CheckPath(path, what) : null;

        /// <summary>Paths in the XML must be absolute: havend's current folder means nothing to the domain.</summary>
        private string CheckPath(string path, string what) =>
            Path.IsPathFullyQualified(path) && !path.Any(char.IsControl) ? path : throw Bad($"the path of {what} is not absolute: '{Clean(path)}'");

        private HavenException Bad(string why) => HavenException.Invalid($"cannot import '{Clean(domainName)}': {why}");
    }

    /// <summary>A device in a few words: its element, and what identifies it (an address, a model, a path).</summary>
    private static string Describe(XElement e)
    {
        var name = e.Name.LocalName;
        var source = e.Element("source");
        string? detail = name switch
        {
            "hostdev" => HostdevDetail(e),
            "filesystem" => $"{Attr(source, "dir") ?? Attr(source, "file") ?? Attr(source, "name") ?? Attr(source, "socket") ?? "?"} -> {Attr(e.Element("target"), "dir") ?? "?"}",
            "redirdev" => $"{Attr(e, "bus")} {Attr(e, "type")}",
            "smartcard" => Attr(e, "mode"),
            "tpm" => $"{Attr(e, "model") ?? "tpm-tis"}, {Attr(e.Element("backend"), "type") ?? "?"}",
            "graphics" => Attr(e, "type"),
            "video" => Attr(e.Element("model"), "type"),
            "controller" or "serial" or "console" or "input" or "memballoon" or "rng" or "sound" or "watchdog" or "panic" or "memory" or "audio" =>
                Attr(e, "type") ?? Attr(e, "model") ?? Attr(e.Element("model"), "type") ?? Attr(e.Element("model"), "name"),
            "emulator" or "dtb" => Text(e)?.Trim(),
            "launchSecurity" => Attr(e, "type"),
            _ => Attr(e, "type") ?? Attr(e, "model"),
        };
        return string.IsNullOrWhiteSpace(detail) ? Clean(name) : $"{Clean(name)} ({Clean(detail.Trim())})";
    }

    private static string? HostdevDetail(XElement e)
    {
        var type = Attr(e, "type") ?? "?";
        var source = e.Element("source");
        var address = source?.Element("address");
        return type switch
        {
            "pci" when address is not null =>
                $"pci {Hex(Attr(address, "domain"), 4)}:{Hex(Attr(address, "bus"), 2)}:{Hex(Attr(address, "slot"), 2)}.{Hex(Attr(address, "function"), 1)}",
            "usb" when source?.Element("vendor") is { } v && source.Element("product") is { } p =>
                $"usb {Hex(Attr(v, "id"), 4)}:{Hex(Attr(p, "id"), 4)}",
            "usb" when address is not null => $"usb bus {Attr(address, "bus")} device {Attr(address, "device")}",
            "mdev" => $"mdev {Attr(address, "uuid")}",
            _ => type,
        };
    }

    /// <summary>"0x03" → "03": libvirt writes PCI and USB ids as hex with 0x; lspci shows them without.</summary>
    private static string Hex(string? value, int width)
    {
        if (value is null) return "?";
        var v = value.StartsWith("0x", StringComparison.OrdinalIgnoreCase) ? value[2..] : value;
        return ulong.TryParse(v, NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var n) ? n.ToString("x" + width, CultureInfo.InvariantCulture) : v;
    }

    private static string? Attr(XElement? e, string name) => e?.Attribute(name)?.Value;
    private static string? Text(XElement? e) => e?.Value;

    /// <summary>Text from the XML as it may appear in the one-line error: control characters replaced, length bounded.</summary>
    private static string Clean(string s, int max = 80)
    {
        var b = new StringBuilder(Math.Min(s.Length, max + 1));
        foreach (var c in s)
        {
            if (b.Length == max) { b.Append('…'); break; }
            b.Append(char.IsControl(c) ? '?' : c);
        }
        return b.ToString();
    }
}
