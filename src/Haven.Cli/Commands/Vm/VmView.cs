using System.Globalization;
using Haven.Api;
using Spectre.Console;

namespace Haven.Cli.Commands.Vm;

/// <summary>Human renderings of VmInfo.</summary>
public static class VmView
{
    public static void RenderList(IAnsiConsole console, List<VmInfo> vms)
    {
        if (vms.Count == 0)
        {
            console.Line("No VMs.");
            return;
        }
        var table = Human.Table("NAME", "STATE", "VCPUS", "MEMORY", "DISKS", "CP TYPE", "CURRENT CP");
        foreach (var vm in vms.OrderBy(v => v.Name, StringComparer.Ordinal))
        {
            table.AddTextRow(
                vm.Name,
                vm.State.ToString(),
                vm.Vcpus.ToString(CultureInfo.InvariantCulture),
                SizeParser.Format(vm.MemoryMiB * 1024L * 1024L),
                vm.Disks.Count == 0 ? "-" : $"{vm.Disks.Count} ({SizeParser.Format(vm.Disks.Sum(d => d.SizeBytes))})",
                vm.CheckpointType.ToString(),
                vm.CurrentCheckpoint ?? "-");
        }
        console.Write(table);
    }

    public static void RenderDetails(IAnsiConsole console, VmInfo vm)
    {
        console.WriteProperties(
            ("Name", vm.Name),
            ("Id", vm.Id),
            ("State", State(vm)),
            ("Unresponsive because", vm.StateReason),
            ("vCPUs", vm.Vcpus.ToString(CultureInfo.InvariantCulture)),
            ("Memory", SizeParser.Format(vm.MemoryMiB * 1024L * 1024L)),
            ("Checkpoint type", vm.CheckpointType.ToString()),
            ("Current checkpoint", vm.CurrentCheckpoint ?? "-"),
            ("Accelerator", vm.Accelerator),
            ("CPU model", vm.Hardware?.CpuModel),
            ("Network", vm.Network),
            ("Autostart", vm.Autostart ? "on" : "off"),
            ("Firmware", vm.Hardware is { } fw ? (fw.UefiCode is { } code ? $"{fw.Firmware} ({code})" : fw.Firmware) : null),
            ("Disk bus", vm.Hardware?.DiskBus),
            ("CD-ROM", vm.Hardware is { CdromDrive: true } h ? h.CdromIso ?? "(empty)" : null),
            ("Boot order", vm.Hardware is { BootOrder.Count: > 0 } b ? string.Join(", ", b.BootOrder) : null),
            ("Guest agent", vm.GuestAgent ? (vm.GuestAgentSocket is { } qga ? "yes, " + qga : "yes") : "no"),
            ("QMP socket", vm.QmpSocket),
            ("VNC display", vm.VncSocket is { } vnc ? "unix:" + vnc : null),
            ("Kernel", vm.Kernel),
            ("Initrd", vm.Initrd),
            ("Append", vm.Append));

        if (vm.Hardware is { Nics.Count: > 0 } hw)
        {
            console.WriteLine();
            var nics = Human.Table("NIC", "MODE", "BRIDGE", "MAC", "MODEL", "LINK");
            foreach (var n in hw.Nics) nics.AddTextRow(n.Name, n.Mode, n.Bridge ?? "-", n.Mac ?? "-", n.Model, n.LinkUp ? "up" : "down");
            console.Write(nics);
        }

        if (vm.Disks.Count == 0)
            return;
        console.WriteLine();
        var table = Human.Table("DISK", "SIZE", "LAYERS (writable top first)");
        foreach (var disk in vm.Disks)
        {
            var chain = string.Join('\n', disk.Chain.Select(l => l.CheckpointName is { } cp ? $"{l.Path} ({cp})" : l.Path));
            table.AddTextRow(disk.DeviceId, SizeParser.Format(disk.SizeBytes), chain.Length == 0 ? "-" : chain);
        }
        console.Write(table);
    }

    public static string State(VmInfo vm) =>
        vm.Pid is { } pid && vm.State != VmState.Off ? $"{vm.State} (pid {pid})" : vm.State.ToString();
}
