using Haven.Qemu.Images;
using Haven.Qemu.Qmp;
using Haven.Qemu.Runtime;
using Haven.TestSupport;
using Xunit;

namespace Haven.Qemu.Tests;

/// <summary>The QEMU driver against real qemu-system and qemu-img.</summary>
public sealed class QemuDriverTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static VmLaunchSpec Spec(TempDir dir, string disk) => new()
    {
        Name = "t",
        Vcpus = 1,
        MemoryMiB = 64,
        Accelerator = Accelerator.Tcg,
        Disks = [new DiskLaunch("disk0", [new LayerRef("lbase", disk)])],
        QmpSocket = dir.File("q.qmp"),
        PidFile = dir.File("q.pid"),
        SerialLog = dir.File("q.log"),
    };

    [Fact]
    public async Task Qmp_correlates_concurrent_commands_reports_typed_errors_and_delivers_events()
    {
        using var dir = new TempDir();
        var disk = dir.File("d.qcow2");
        await QemuImg.CreateAsync(disk, DiskFormat.Qcow2, 16 << 20, Ct);
        await using var qemu = await QemuProcess.LaunchAsync(Spec(dir, disk), Ct);
        try
        {
            Assert.StartsWith("7.", qemu.Qmp.QemuVersion);
            var results = await Task.WhenAll(Enumerable.Range(0, 20).Select(_ => qemu.Qmp.ExecuteAsync("query-status", null, Ct)));
            Assert.All(results, r => Assert.Equal("running", r.GetProperty("status").GetString()));

            var e = await Assert.ThrowsAsync<QmpException>(() => qemu.Qmp.ExecuteAsync("no-such-command", null, Ct));
            Assert.Equal("CommandNotFound", e.ErrorClass);

            var stopped = qemu.Qmp.WaitForEventAsync("STOP", null, TimeSpan.FromSeconds(10), Ct);
            await qemu.Qmp.ExecuteAsync("stop", null, Ct);
            await stopped;
            Assert.Equal("paused", await qemu.QueryStatusAsync(Ct));
        }
        finally { await qemu.QuitAsync(Ct); }
        Assert.False(qemu.IsAlive);
    }

    /// <summary>
    /// A VM name and socket paths with commas (a data folder may have one) reach QEMU as literal values, not as
    /// extra options; and what QEMU creates (it daemonizes with umask 027) ends up owner-only.
    /// </summary>
    [Fact]
    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    public async Task Commas_in_names_and_paths_stay_literal_and_qemus_files_are_owner_only()
    {
        using var dir = new TempDir();
        var sub = dir.File("a,server=off,b");
        Directory.CreateDirectory(sub);
        var disk = Path.Combine(sub, "d.qcow2");
        await QemuImg.CreateAsync(disk, DiskFormat.Qcow2, 16 << 20, Ct);
        var spec = Spec(dir, disk) with
        {
            Name = "vm,debug-threads=on",
            QmpSocket = Path.Combine(sub, "q.qmp"),
            GuestAgentSocket = Path.Combine(sub, "q.qga"),
            PidFile = Path.Combine(sub, "q.pid"),
            SerialLog = Path.Combine(sub, "q.log"),
            ConsoleSocket = Path.Combine(sub, "q.console"),
            VncSocket = Path.Combine(sub, "q.vnc"),
        };
        await using var qemu = await QemuProcess.LaunchAsync(spec, Ct);
        try
        {
            Assert.Equal("vm,debug-threads=on", (await qemu.Qmp.ExecuteAsync("query-name", null, Ct)).GetProperty("name").GetString());
            foreach (var f in new[] { spec.QmpSocket, spec.GuestAgentSocket!, spec.PidFile, spec.SerialLog, spec.ConsoleSocket!, spec.VncSocket! })
            {
                var mode = File.GetUnixFileMode(f);
                Assert.True((mode & ~(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute)) == 0, $"{f} is {Convert.ToString((int)mode, 8)}");
            }
        }
        finally { await qemu.QuitAsync(Ct); }
        Assert.Throws<ArgumentException>(() => QemuCommandLine.Build(spec with { Kernel = dir.File("vmlinuz,initrd=x") }));
    }

    [Fact]
    public async Task A_vm_outlives_its_client_and_is_found_again_by_pid_file()
    {
        using var dir = new TempDir();
        var disk = dir.File("d.qcow2");
        await QemuImg.CreateAsync(disk, DiskFormat.Qcow2, 16 << 20, Ct);
        var spec = Spec(dir, disk);
        var first = await QemuProcess.LaunchAsync(spec, Ct);
        await first.DisposeAsync();
        var again = await QemuProcess.TryAttachAsync(spec.PidFile, spec.QmpSocket, Ct);
        Assert.NotNull(again);
        Assert.Equal(first.Pid, again.Pid);
        await again.QuitAsync(Ct);
        await again.DisposeAsync();
        Assert.Null(await QemuProcess.TryAttachAsync(spec.PidFile, spec.QmpSocket, Ct));
    }

    [Fact]
    public async Task A_stopped_QEMU_times_out_commands_and_attaches_cleanly_and_another_client_blocks_attaching_until_it_leaves()
    {
        using var dir = new TempDir();
        var disk = dir.File("d.qcow2");
        await QemuImg.CreateAsync(disk, DiskFormat.Qcow2, 16 << 20, Ct);
        var spec = Spec(dir, disk);
        var qemu = await QemuProcess.LaunchAsync(spec, Ct);
        try
        {
            await ProcessRunner.RunAsync("kill", ["-STOP", qemu.Pid.ToString()], ct: Ct);
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var stopWait = qemu.Qmp.WaitForEventAsync("STOP", null, TimeSpan.FromMinutes(5), Ct);
            var e = await Assert.ThrowsAsync<QmpTimeoutException>(() => qemu.Qmp.ExecuteAsync("query-status", null, TimeSpan.FromSeconds(1), Ct));
            Assert.Equal("QEMU did not answer query-status within 1 s", e.Message);
            Assert.InRange(clock.Elapsed.TotalSeconds, 0.9, 10);
            // The connection is broken for everyone: later commands and event waiters fail at once.
            await Assert.ThrowsAsync<QmpConnectionException>(() => qemu.Qmp.ExecuteAsync("query-status", null, Ct));
            await Assert.ThrowsAsync<QmpConnectionException>(() => stopWait);
            await qemu.Qmp.Closed.WaitAsync(TimeSpan.FromSeconds(5), Ct);
            Assert.Same(e, qemu.Qmp.Failure);
            var attach = await Assert.ThrowsAsync<QmpConnectionException>(() => QemuProcess.TryAttachAsync(spec.PidFile, spec.QmpSocket, TimeSpan.FromSeconds(1), Ct));
            Assert.Contains("no QMP greeting", attach.Message);
            await qemu.DisposeAsync();

            await ProcessRunner.RunAsync("kill", ["-CONT", qemu.Pid.ToString()], ct: Ct);
            await using (var again = await AttachEventuallyAsync(spec))
                Assert.Equal("running", await again.QueryStatusAsync(Ct));

            // QEMU serves one QMP client at a time: one that connects and never reads holds the others off.
            using (var holder = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Unspecified))
            {
                await holder.ConnectAsync(new System.Net.Sockets.UnixDomainSocketEndPoint(spec.QmpSocket), Ct);
                await Assert.ThrowsAsync<QmpConnectionException>(() => QemuProcess.TryAttachAsync(spec.PidFile, spec.QmpSocket, TimeSpan.FromSeconds(1), Ct));
            }
            await using (var after = await AttachEventuallyAsync(spec))
                Assert.Equal("running", await after.QueryStatusAsync(Ct));
        }
        finally
        {
            await ProcessRunner.RunAsync("kill", ["-CONT", qemu.Pid.ToString()], CancellationToken.None, throwOnError: false);
            QemuProcess.Kill(qemu.Pid, spec.PidFile);
        }
    }

    private static async Task<QemuProcess> AttachEventuallyAsync(VmLaunchSpec spec)
    {
        for (var i = 0; ; i++)
        {
            try { return await QemuProcess.TryAttachAsync(spec.PidFile, spec.QmpSocket, TimeSpan.FromSeconds(2), Ct) ?? throw new InvalidOperationException("QEMU is gone"); }
            catch (QmpConnectionException) when (i < 10) { }
        }
    }

    [Fact]
    public async Task Launch_failure_reports_qemus_own_error_line()
    {
        using var dir = new TempDir();
        var e = await Assert.ThrowsAsync<ToolFailedException>(() => QemuProcess.LaunchAsync(Spec(dir, dir.File("missing.qcow2")), Ct));
        Assert.Contains("missing.qcow2", e.Message);
        Assert.False(File.Exists(dir.File("q.pid")));
    }

    [Fact]
    public async Task QemuImg_converts_between_qcow2_raw_and_vhdx_without_changing_content()
    {
        using var dir = new TempDir();
        var q = dir.File("a.qcow2");
        await QemuImg.CreateAsync(q, DiskFormat.Qcow2, 8 << 20, Ct);
        await GuestWrites.WriteOfflineAsync(q, 0x5a, 1 << 20, 256 << 10);
        await QemuImg.ConvertAsync(q, DiskFormat.Qcow2, dir.File("a.vhdx"), DiskFormat.Vhdx, Ct);
        await QemuImg.ConvertAsync(dir.File("a.vhdx"), DiskFormat.Vhdx, dir.File("a.raw"), DiskFormat.Raw, Ct);
        Assert.True(await QemuImg.CompareAsync(q, dir.File("a.vhdx"), ct: Ct));
        Assert.True(await QemuImg.CompareAsync(q, dir.File("a.raw"), ct: Ct));
        Assert.Equal(DiskFormat.Vhdx, (await QemuImg.InfoAsync(dir.File("a.vhdx"), ct: Ct)).Format);

        await GuestWrites.WriteOfflineAsync(q, 0x01, 0, 512);
        Assert.False(await QemuImg.CompareAsync(q, dir.File("a.raw"), ct: Ct));

        var overlay = dir.File("b.qcow2");
        await QemuImg.CreateOverlayAsync(overlay, q, Ct);
        Assert.Equal(q, (await QemuImg.InfoAsync(overlay, ct: Ct)).BackingFile);
        await QemuImg.RebaseAsync(overlay, null, safe: true, Ct);
        Assert.Null((await QemuImg.InfoAsync(overlay, ct: Ct)).BackingFile);
        Assert.True(await QemuImg.CompareAsync(q, overlay, ct: Ct));
    }

    [Fact]
    public async Task Explicit_accelerator_settings_are_honoured_and_auto_decides()
    {
        Assert.Equal(Accelerator.Tcg, await AcceleratorProbe.ResolveAsync(AcceleratorSetting.Tcg, Ct));
        Assert.Equal(Accelerator.Kvm, await AcceleratorProbe.ResolveAsync(AcceleratorSetting.Kvm, Ct));
        var auto = await AcceleratorProbe.ResolveAsync(AcceleratorSetting.Auto, Ct);
        if (!File.Exists("/dev/kvm") || Directory.Exists("/sys/module/kvm_pvm")) Assert.Equal(Accelerator.Tcg, auto);
        TestContext.Current.SendDiagnosticMessage($"auto resolved to {auto}");
    }
}
