using System.Diagnostics;
using System.Text;
using Haven.Api;
using Haven.TestSupport;

namespace Haven.EndToEnd.Tests;

/// <summary>
/// UEFI VMs (OVMF) under havend with the Debian guest booting through its ESP (no -kernel): a boot entry the guest
/// adds with efibootmgr lives in the VM's variable store, and that store travels with checkpoints and backups.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class UefiTests
{
    private const string Mark = "HavenMark";
    private static readonly TimeSpan BootTimeout = TimeSpan.FromSeconds(300);

    private static void Log(string line) => TestContext.Current.TestOutputHelper?.WriteLine(line);

    /// <summary>"HavenMark" as OVMF stores a variable's description: UTF-16LE.</summary>
    private static bool HoldsMark(byte[] vars) => vars.AsSpan().IndexOf(Encoding.Unicode.GetBytes(Mark)) >= 0;

    private static async Task<VmInfo> CreateUefiVmAsync(HavenWorld w, string name)
    {
        var disk = w.Dir.File(name + ".qcow2");
        await DebianGuest.CopyDiskAsync(disk);
        return await w.JsonAsync<VmInfo>("vm", "create", name, "--disk", disk, "--accel", "tcg", "--memory", "768", "--network", "none", "--firmware", "uefi");
    }

    /// <summary>Starts the VM and waits for qemu-ga; returns the agent socket.</summary>
    private static async Task<string> BootAsync(HavenWorld w, string name)
    {
        var vm = await w.JsonAsync<VmInfo>("vm", "start", name);
        Assert.Equal(VmState.Running, vm.State);
        var socket = w.Paths.GuestAgentSocket(vm.Id);
        var took = await DebianGuest.WaitForAgentAsync(socket, BootTimeout, w.Ct);
        Log($"{name}: UEFI boot (OVMF, GRUB from the ESP, TCG) to qemu-ga in {took.TotalSeconds:0.0} s");
        return socket;
    }

    private static Task<string> BootEntriesAsync(HavenWorld w, string socket) => DebianGuest.ShOkAsync(socket, "efibootmgr", w.Ct);

    [Fact(Timeout = 1_500_000)]
    public async Task A_boot_entry_added_in_the_guest_survives_checkpoint_apply_and_backup_restore()
    {
        var ct = TestContext.Current.CancellationToken;
        await DebianGuest.EnsureBuiltAsync();
        await using var w = new HavenWorld(ct);
        await w.StartDaemonAsync();
        var vm = await CreateUefiVmAsync(w, "efi");
        Assert.Equal("uefi", vm.Hardware!.Firmware);
        Assert.Equal(DebianGuest.OvmfCode, vm.Hardware.UefiCode);
        var vars = w.Paths.UefiVarsFile(vm.Id);
        // A fresh copy of the template, the VM's own, owner-only.
        Assert.Equal(File.ReadAllBytes(DebianGuest.OvmfVarsTemplate), File.ReadAllBytes(vars));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(vars));
        Assert.Contains("Firmware", await w.OkAsync("vm", "show", "efi"));

        var socket = await BootAsync(w, "efi");
        Assert.DoesNotContain(Mark, await BootEntriesAsync(w, socket));
        await AddMarkAsync(w, socket);
        var entries = await BootEntriesAsync(w, socket);
        Log("efibootmgr after adding the entry:\n" + entries);
        Assert.Contains(Mark, entries);
        Assert.True(HoldsMark(File.ReadAllBytes(vars)), "the VM's variable store on the host does not hold the new boot entry");

        // (a) A production checkpoint with the entry, and a backup of the running VM.
        var cp = await w.JsonAsync<CheckpointCreateResult>("checkpoint", "create", "efi", "--name", "marked");
        Assert.True(HoldsMark(File.ReadAllBytes(w.Paths.CheckpointVarsFile(vm.Id, cp.Checkpoint.Id))), "the checkpoint's copy of the store lacks the entry");
        var repo = w.Dir.File("repo");
        var pass = w.Dir.File("pass");
        await File.WriteAllTextAsync(pass, "a passphrase\n", ct);
        string[] r = ["--repo", repo, "--passphrase-file", pass];
        await w.OkAsync(["repo", "init", .. r]);
        var backup = await w.JsonAsync<BackupResult>(["backup", "efi", .. r]);
        var varsAtBackup = File.ReadAllBytes(vars);

        // The guest deletes the entry; applying the checkpoint brings it back.
        await RemoveMarkAsync(w, socket);
        Assert.DoesNotContain(Mark, await BootEntriesAsync(w, socket));
        var applied = await w.JsonAsync<CheckpointApplyResult>("checkpoint", "apply", "efi", "marked");
        Assert.Equal(VmState.Off, applied.State);
        socket = await BootAsync(w, "efi");
        entries = await BootEntriesAsync(w, socket);
        Log("efibootmgr after applying the checkpoint:\n" + entries);
        Assert.Contains(Mark, entries);
        await w.OkAsync("vm", "stop", "efi", "--force");

        // (b) Restored as a new VM: the backup's store (byte for byte), and the guest lists the entry.
        var restored = await w.JsonAsync<RestoreResult>(["restore", backup.BackupId, .. r, "--name", "efi-copy"]);
        var copy = await w.ShowAsync(restored.Vm!);
        Assert.Equal("uefi", copy.Hardware!.Firmware);
        Assert.Equal(varsAtBackup, File.ReadAllBytes(w.Paths.UefiVarsFile(copy.Id)));
        socket = await BootAsync(w, "efi-copy");
        entries = await BootEntriesAsync(w, socket);
        Log("efibootmgr in the VM restored from the backup:\n" + entries);
        Assert.Contains(Mark, entries);
        await w.OkAsync("vm", "stop", "efi-copy", "--force");

        // Restored in place: the original gets the backup's store back.
        File.WriteAllBytes(vars, File.ReadAllBytes(DebianGuest.OvmfVarsTemplate));
        await w.JsonAsync<RestoreResult>(["restore", backup.BackupId, .. r, "--in-place"]);
        Assert.Equal(varsAtBackup, File.ReadAllBytes(vars));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(vars));
    }

    /// <summary>A boot entry named HavenMark for the ESP's fallback loader, made in the guest (OVMF stores it in the variable store).</summary>
    private static Task AddMarkAsync(HavenWorld w, string socket)
        => DebianGuest.ShOkAsync(socket, $"efibootmgr -c -d /dev/vda -p 1 -L {Mark} -l '\\EFI\\BOOT\\BOOTX64.EFI'", w.Ct);

    private static Task RemoveMarkAsync(HavenWorld w, string socket)
        => DebianGuest.ShOkAsync(socket, $"efibootmgr -b $(efibootmgr | sed -n 's/^Boot\\([0-9A-F]\\{{4\\}}\\).*{Mark}.*/\\1/p') -B", w.Ct);

    [Fact(Timeout = 1_500_000)]
    public async Task A_boot_entry_added_in_the_guest_travels_with_replication_to_test_failover_and_failover()
    {
        var ct = TestContext.Current.CancellationToken;
        await DebianGuest.EnsureBuiltAsync();
        await using var primary = new HavenWorld(ct);
        await using var replica = new HavenWorld(ct);
        var url = await ReplicationSetup.PairAsync(primary, replica);
        await CreateUefiVmAsync(primary, "web");
        var socket = await BootAsync(primary, "web");
        await AddMarkAsync(primary, socket);
        Assert.Contains(Mark, await BootEntriesAsync(primary, socket));

        await primary.OkAsync("replication", "enable", "web", "--replica", url, "--replica-name", "replica.test", "--frequency", "15m",
            "--start-at", DateTimeOffset.UtcNow.AddDays(1).ToString("O"));
        Assert.Equal(1L, (await primary.JsonAsync<ReplicationCycleResult>("replication", "run", "web")).Cycle);
        await primary.OkAsync("vm", "stop", "web", "--force");

        var onReplica = await replica.ShowAsync("web");
        Assert.Equal("uefi", onReplica.Hardware!.Firmware);
        Assert.Equal(DebianGuest.OvmfCode, onReplica.Hardware.UefiCode);
        var point = Assert.Single(await replica.CheckpointsAsync("web"));
        Assert.True(HoldsMark(File.ReadAllBytes(replica.Paths.CheckpointVarsFile(onReplica.Id, point.Id))), "the recovery point lacks the boot entry in its variable store");

        // Test failover: a copy of the point, booted with a copy of its store.
        var test = await replica.JsonAsync<VmInfo>("replication", "test-failover", "web");
        var testSocket = replica.Paths.GuestAgentSocket(test.Id);
        Log($"test failover: qemu-ga after {(await DebianGuest.WaitForAgentAsync(testSocket, BootTimeout, ct)).TotalSeconds:0.0} s");
        var entries = await BootEntriesAsync(replica, testSocket);
        Log("efibootmgr in the test failover VM:\n" + entries);
        Assert.Contains(Mark, entries);
        // What the test VM does to its store stays in its own copy.
        await RemoveMarkAsync(replica, testSocket);
        await replica.OkAsync("replication", "stop-test-failover", "web");

        // Failover: the replica VM goes to the point (checkpoint apply brings its store back) and boots with it.
        var failed = await replica.JsonAsync<VmInfo>("replication", "failover", "web");
        Assert.Equal(VmState.Running, failed.State);
        var failedSocket = replica.Paths.GuestAgentSocket(failed.Id);
        Log($"failover: qemu-ga after {(await DebianGuest.WaitForAgentAsync(failedSocket, BootTimeout, ct)).TotalSeconds:0.0} s");
        entries = await BootEntriesAsync(replica, failedSocket);
        Log("efibootmgr in the failed-over VM:\n" + entries);
        Assert.Contains(Mark, entries);
    }

    /// <summary>The data folder's files (names and sizes) and the VM list: what a refused create must leave as it was.</summary>
    private static async Task<string> StateAsync(HavenWorld w)
    {
        var files = Directory.EnumerateFileSystemEntries(w.Data, "*", SearchOption.AllDirectories)
            .Where(p => !p.EndsWith(".sock", StringComparison.Ordinal) && !p.Contains("/run/", StringComparison.Ordinal) && !p.Contains("haven.db", StringComparison.Ordinal))
            .Order().Select(p => p + (File.Exists(p) ? " " + new FileInfo(p).Length : ""));
        return string.Join('\n', files) + "\n" + await w.OkAsync("vm", "list", "--json");
    }

    [Fact]
    public async Task Missing_or_unfit_firmware_files_are_refused_and_nothing_is_created()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var w = new HavenWorld(ct);
        await w.StartDaemonAsync();
        await w.CreateVmAsync("v");
        var small = w.Dir.File("small.fd");
        File.WriteAllBytes(small, new byte[4096]);
        Directory.CreateDirectory(w.Dir.File("folder.fd"));
        var cases = new (string[] Args, string Says)[]
        {
            (["--uefi-code", w.Dir.File("nonexistent.fd")], "UEFI code image not found"),
            (["--uefi-vars", w.Dir.File("nonexistent.fd")], "UEFI variable store not found"),
            (["--uefi-code", small], "bytes"),
            (["--uefi-vars", small], "bytes"),
            (["--uefi-vars", w.Dir.File("folder.fd")], "folder"),
            // A code image with no template beside it that goes with it, and none given.
            (["--uefi-code", "/usr/share/qemu/OVMF.fd"], "no variable store template"),
        };
        foreach (var (extra, says) in cases)
        {
            var before = await StateAsync(w);
            var res = await w.Cli(["vm", "create", "bad", "--disk-size", "32M", "--accel", "tcg", "--memory", "64", "--firmware", "uefi", .. extra]);
            Assert.Equal(2, res.ExitCode);
            var line = Assert.Single(res.StderrLines);
            Assert.StartsWith("haven: ", line);
            Assert.Contains(says, line);
            Assert.Equal("", res.Stdout);
            Assert.Equal(before, await StateAsync(w));
        }
        // UEFI files without --firmware uefi.
        var bios = await w.Cli("vm", "create", "bad", "--disk-size", "32M", "--accel", "tcg", "--uefi-code", DebianGuest.OvmfCode);
        Assert.Equal(2, bios.ExitCode);
        Assert.Contains("--firmware uefi", Assert.Single(bios.StderrLines));
        Assert.Equal(3, (await w.Cli("vm", "show", "bad")).ExitCode);
    }
}
