using System.Diagnostics;
using Haven.Qemu.Images;
using Haven.Qemu.Runtime;
using Haven.TestSupport;
using Xunit;

namespace Haven.Qemu.Tests;

/// <summary>The Debian guest disk boots by UEFI (OVMF with an empty copy of its variable store) to a working qemu-ga.</summary>
public sealed class DebianGuestBootTests
{
    [Fact(Timeout = 900_000)] // the first run builds the image (about 2 minutes)
    public async Task Debian_guest_disk_boots_with_ovmf_to_the_guest_agent()
    {
        var ct = TestContext.Current.CancellationToken;
        await DebianGuest.EnsureBuiltAsync();
        using var dir = new TempDir();
        var disk = dir.File("disk.qcow2");
        await DebianGuest.CreateOverlayAsync(disk);
        var vars = dir.File("vars.fd");
        File.Copy(DebianGuest.OvmfVarsTemplate, vars);
        var qga = dir.File("qga.sock");
        var pidFile = dir.File("qemu.pid");
        var console = dir.File("console.log");

        var boot = Stopwatch.StartNew();
        await ProcessRunner.RunAsync("qemu-system-x86_64", [
            "-accel", "tcg", "-cpu", "max", "-machine", "q35", "-m", "1024", "-smp", "1", "-nodefaults", "-display", "none",
            "-drive", $"if=pflash,format=raw,unit=0,readonly=on,file={DebianGuest.OvmfCode}",
            "-drive", $"if=pflash,format=raw,unit=1,file={vars}",
            "-blockdev", $"driver=file,filename={disk},node-name=f0", "-blockdev", "driver=qcow2,file=f0,node-name=disk0",
            "-device", "virtio-blk-pci,drive=disk0",
            "-device", "virtio-serial-pci", "-chardev", $"socket,path={qga},server=on,wait=off,id=qga0",
            "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
            "-serial", $"file:{console}", "-daemonize", "-pidfile", pidFile], ct);
        try
        {
            TimeSpan agentAt;
            try { agentAt = await DebianGuest.WaitForAgentAsync(qga, TimeSpan.FromSeconds(150), ct); }
            catch (TimeoutException e) { throw new TimeoutException(e.Message + "\n--- console ---\n" + File.ReadAllText(console), e); }
            var pgAt = await DebianGuest.WaitForPostgresAsync(qga, TimeSpan.FromSeconds(90), ct);
            TestContext.Current.TestOutputHelper?.WriteLine(
                $"boot (OVMF + GRUB, TCG): qemu-ga answers after {agentAt.TotalSeconds:0.0} s, PostgreSQL after {pgAt.TotalSeconds:0.0} s (from QEMU launch {boot.Elapsed.TotalSeconds:0.0} s)");

            // Booted from the disk's own ESP: GRUB passed the kernel line (BOOT_IMAGE=...), the root is vda2 by UUID.
            var cmdline = await DebianGuest.ShOkAsync(qga, "cat /proc/cmdline", ct);
            Assert.StartsWith("BOOT_IMAGE=/boot/vmlinuz-", cmdline);
            Assert.Contains(DebianGuest.Append, cmdline);
            Assert.Equal("/dev/vda2 ext4", (await DebianGuest.ShOkAsync(qga, "findmnt -n -o SOURCE,FSTYPE /", ct)).Trim());
            Assert.Equal("debian-guest", (await DebianGuest.ShOkAsync(qga, "hostname", ct)).Trim());
            var r = await DebianGuest.ShAsync(qga, "exit 7", ct);
            Assert.Equal(7, r.ExitCode);
        }
        finally
        {
            if (QemuProcess.ReadPid(pidFile) is { } pid) { try { Process.GetProcessById(pid).Kill(); } catch (ArgumentException) { } }
        }
    }
}
