namespace Haven.Host;

/// <summary>
/// Layout of a host's data folder. Files are named by ids, never by user-chosen names.
/// <code>
/// haven.db                       SQLite: VMs, layers, checkpoints, operation journal
/// token                          API bearer token (0600; root-equivalent, see docs/architecture.md)
/// havend.sock                    API unix socket
/// vms/&lt;vm&gt;/disks/&lt;layer&gt;.qcow2   one file per qcow2 layer
/// vms/&lt;vm&gt;/states/&lt;cp&gt;.state      memory/device state of Standard checkpoints
/// vms/&lt;vm&gt;/uefi-vars.fd             a UEFI VM's own variable store (0600)
/// vms/&lt;vm&gt;/states/&lt;cp&gt;.vars       the variable store as a checkpoint took it
/// run/&lt;vm&gt;.{qmp,qga,pid,log}       runtime files of a running VM's QEMU
/// run/&lt;vm&gt;.{console,vnc}           its serial console and VNC display sockets
/// run/mount-&lt;id&gt;.nbd               a mounted backup disk's NBD socket
/// </code>
/// </summary>
public sealed class HostPaths(string root)
{
    public string Root { get; } = Path.GetFullPath(root);
    public string Database => Path.Combine(Root, "haven.db");
    public string TokenFile => Path.Combine(Root, "token");
    public string ApiSocket => Path.Combine(Root, "havend.sock");
    public string VmsDir => Path.Combine(Root, "vms");
    public string RunDir => Path.Combine(Root, "run");

    public string VmDir(string vmId) => Path.Combine(VmsDir, vmId);
    public string DisksDir(string vmId) => Path.Combine(VmDir(vmId), "disks");
    public string StatesDir(string vmId) => Path.Combine(VmDir(vmId), "states");
    public string LayerFile(string vmId, string layerId) => Path.Combine(DisksDir(vmId), layerId + ".qcow2");
    public string StateFile(string vmId, string checkpointId) => Path.Combine(StatesDir(vmId), checkpointId + ".state");
    public string UefiVarsFile(string vmId) => Path.Combine(VmDir(vmId), "uefi-vars.fd");
    public string CheckpointVarsFile(string vmId, string checkpointId) => Path.Combine(StatesDir(vmId), checkpointId + ".vars");
    public string QmpSocket(string vmId) => Path.Combine(RunDir, vmId + ".qmp");
    public string GuestAgentSocket(string vmId) => Path.Combine(RunDir, vmId + ".qga");
    public string PidFile(string vmId) => Path.Combine(RunDir, vmId + ".pid");
    public string SerialLog(string vmId) => Path.Combine(RunDir, vmId + ".log");
    public string ConsoleSocket(string vmId) => Path.Combine(RunDir, vmId + ".console");
    public string VncSocket(string vmId) => Path.Combine(RunDir, vmId + ".vnc");
    /// <summary>The NBD socket of a mounted backup disk (BackupMounts); swept at start-up like every dead .nbd socket.</summary>
    public string MountSocket(string mountId) => Path.Combine(RunDir, "mount-" + mountId + ".nbd");
    /// <summary>Where QEMU writes a screenshot before havend reads it (QEMU creates it 0640: inside the 0700 run folder).</summary>
    public string Screendump(string vmId) => Path.Combine(RunDir, vmId + ".screen.png");

    /// <summary>Creates the folders owner-only (0700): nothing in the data folder is for other users.</summary>
    public void EnsureCreated()
    {
        Qemu.OwnerOnly.CreateFolder(Root);
        Qemu.OwnerOnly.CreateFolder(VmsDir);
        Qemu.OwnerOnly.CreateFolder(RunDir);
    }

    public static string NewId() => Guid.NewGuid().ToString("N")[..12];

    /// <summary>
    /// Deletes a VM's folder. A replica VM's folder is a link into its replica server storage location
    /// (docs/replication.md): the folder it points to goes too, then the link.
    /// </summary>
    public static void DeleteVmFolder(string path)
    {
        var info = new DirectoryInfo(path);
        if (info.LinkTarget is { } target)
        {
            var resolved = Path.GetFullPath(target, Path.GetDirectoryName(path)!);
            if (Directory.Exists(resolved)) Directory.Delete(resolved, recursive: true);
            File.Delete(path);
            return;
        }
        if (info.Exists) Directory.Delete(path, recursive: true);
    }
}
