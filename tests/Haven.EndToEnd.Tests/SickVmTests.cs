using System.Diagnostics;
using System.Net.Sockets;
using Haven.Api;
using Haven.Qemu.Images;
using Haven.Qemu.Qmp;
using Haven.Qemu.Runtime;
using Haven.TestSupport;

namespace Haven.EndToEnd.Tests;

/// <summary>
/// One sick VM never takes havend down: a QEMU that is stopped (SIGSTOP) or whose one QMP connection another
/// client holds is shown unresponsive with the reason, every other VM is served, and it is re-attached (and its
/// journal repaired) once it answers again. Real havend, real QEMU.
/// </summary>
public sealed class SickVmTests
{
    private static readonly TimeSpan Settle = TimeSpan.FromSeconds(90);

    [Fact(Timeout = 300_000)]
    public async Task Havend_starts_and_serves_other_VMs_while_one_QMP_socket_is_held_and_one_QEMU_is_stopped_then_reattaches_both()
    {
        await using var w = new HavenWorld(TestContext.Current.CancellationToken);
        await w.StartDaemonAsync();
        await w.CreateVmAsync("held", start: true);
        await w.CreateVmAsync("frozen", start: true);
        await w.CreateVmAsync("well");
        await w.StopDaemonAsync();

        // Another QMP client takes held's socket and never reads; frozen's QEMU is stopped.
        using var holder = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        await holder.ConnectAsync(new UnixDomainSocketEndPoint(w.Paths.QmpSocket(w.VmId("held"))), w.Ct);
        var frozenPid = QemuPid(w, "frozen");
        await Signal("STOP", frozenPid);
        try
        {
            var d = await w.StartDaemonAsync();
            Assert.Contains("VM 'held' is unresponsive", d.Stdout);
            Assert.Contains("VM 'frozen' is unresponsive", d.Stdout);

            var list = await w.JsonAsync<List<VmInfo>>("vm", "list");
            foreach (var name in new[] { "held", "frozen" })
            {
                var vm = list.Single(v => v.Name == name);
                Assert.Equal(VmState.Unresponsive, vm.State);
                Assert.Contains("no QMP greeting", vm.StateReason);
            }
            Assert.Equal(VmState.Off, list.Single(v => v.Name == "well").State);
            Assert.Null(list.Single(v => v.Name == "well").StateReason);
            var shown = await w.OkAsync("vm", "show", "held");
            Assert.Contains("Unresponsive because", shown);
            Assert.Contains("no QMP greeting", shown);

            // Operations on the sick VMs are refused at once with the reason; nothing changes.
            var before = w.DumpState();
            var refused = await w.Cli("checkpoint", "create", "frozen", "--name", "nope");
            Assert.Equal(4, refused.ExitCode);
            Assert.StartsWith("haven: VM 'frozen' is unresponsive: ", Assert.Single(refused.StderrLines));
            Assert.Equal(before, w.DumpState());

            // Everything else works meanwhile.
            Assert.Equal(VmState.Running, (await w.JsonAsync<VmInfo>("vm", "start", "well")).State);
            await w.CheckpointAsync("well", "w1");
            await w.CreateVmAsync("fresh", start: true);
            await w.CheckpointAsync("fresh", "f1");
        }
        finally
        {
            holder.Dispose();
            await Signal("CONT", frozenPid);
        }

        // Once they answer, both are re-attached in the background and work again.
        await WaitForStateAsync(w, "held", VmState.Running);
        await WaitForStateAsync(w, "frozen", VmState.Running);
        await w.CheckpointAsync("held", "h1");
        await w.CheckpointAsync("frozen", "z1");
        var zeros = w.NewModel("zeros");
        await w.AssertCleanAsync("held", zeros);
        await w.AssertCleanAsync("frozen", zeros);
    }

    [Fact(Timeout = 300_000)]
    public async Task A_checkpoint_of_a_stopped_QEMU_fails_within_the_QMP_timeout_is_rolled_back_after_SIGCONT_and_other_VMs_are_served_meanwhile()
    {
        const long M = HavenWorld.M;
        await using var w = new HavenWorld(TestContext.Current.CancellationToken);
        await w.StartDaemonAsync();
        await w.CreateVmAsync("sick", start: true);
        await w.CreateVmAsync("other", start: true);
        var now = w.NewModel("now");
        await w.WriteAsync("sick", now, new W(0x11, 0, M));
        await w.CheckpointAsync("sick", "c1");
        var m1 = await w.Remember(now, "m1");
        await w.WriteAsync("sick", now, new W(0x22, M, M));
        var sickBefore = await w.ShowAsync("sick");

        var pid = QemuPid(w, "sick");
        await Signal("STOP", pid);
        try
        {
            var clock = Stopwatch.StartNew();
            var create = w.Cli("checkpoint", "create", "sick", "--name", "c2");

            // While it waits on the stopped QEMU: the list answers (showing it unresponsive) and other VMs work.
            var list = await w.JsonAsync<List<VmInfo>>("vm", "list");
            Assert.Equal(VmState.Unresponsive, list.Single(v => v.Name == "sick").State);
            Assert.Equal(VmState.Running, list.Single(v => v.Name == "other").State);
            await w.CheckpointAsync("other", "o1");
            Assert.False(create.IsCompleted, "the checkpoint of the stopped VM should still be waiting for QEMU");

            var r = await create;
            var elapsed = clock.Elapsed;
            Assert.True(r.ExitCode == 1, r.ToString());
            Assert.Equal("", r.Stdout);
            var line = Assert.Single(r.StderrLines);
            Assert.Matches(@"^haven: checkpoint creation on VM 'sick' failed: QEMU did not answer \S+ within 30 s; it is finished or rolled back when QEMU answers again$", line);
            Assert.InRange(elapsed, QmpClient.DefaultCommandTimeout - TimeSpan.FromSeconds(1), QmpClient.DefaultCommandTimeout + TimeSpan.FromSeconds(20));

            // The VM is shown unresponsive with that reason; its journal row waits for QEMU; other VMs still work.
            var sick = await w.ShowAsync("sick");
            Assert.Equal(VmState.Unresponsive, sick.State);
            Assert.Matches(@"^QEMU did not answer \S+ within 30 s$", sick.StateReason);
            Assert.Equal(sickBefore.CurrentCheckpoint, sick.CurrentCheckpoint);
            Assert.Equal(sickBefore.Disks[0].Chain, sick.Disks[0].Chain);
            Assert.Contains("create-checkpoint", JournalKinds(w));
            await w.CheckpointAsync("other", "o2");
        }
        finally { await Signal("CONT", pid); }

        // After SIGCONT: re-attached, the half-made checkpoint rolled back, the VM running with its data.
        await WaitForStateAsync(w, "sick", VmState.Running);
        var clock2 = Stopwatch.StartNew();
        while (JournalKinds(w).Count > 0)
        {
            Assert.True(clock2.Elapsed < Settle, "the journal row of the failed checkpoint was not resolved after re-attaching");
            await Task.Delay(200, w.Ct);
        }
        await w.AssertRecoveredAsync("sick", CreateCrashTests.Tree(("c1", null)), "c1",
            new Dictionary<string, DiskModel> { ["c1"] = m1 }, now, VmState.Running);
        await w.CheckpointAsync("sick", "c2");
    }

    private static int QemuPid(HavenWorld w, string vm) =>
        QemuProcess.ReadPid(w.Paths.PidFile(w.VmId(vm))) ?? throw new InvalidOperationException($"{vm} has no pid file");

    private static Task Signal(string signal, int pid) =>
        ProcessRunner.RunAsync("kill", ["-" + signal, pid.ToString()], CancellationToken.None, throwOnError: false);

    /// <summary>Kinds of the journaled operations, read from the state database (read-only, safe while havend runs).</summary>
    private static List<string> JournalKinds(HavenWorld w)
    {
        var cs = new Microsoft.Data.Sqlite.SqliteConnectionStringBuilder { DataSource = w.Paths.Database, Mode = Microsoft.Data.Sqlite.SqliteOpenMode.ReadOnly, Pooling = false };
        using var db = new Microsoft.Data.Sqlite.SqliteConnection(cs.ToString());
        db.Open();
        using var cmd = db.CreateCommand();
        cmd.CommandText = "SELECT kind FROM operations";
        using var r = cmd.ExecuteReader();
        var kinds = new List<string>();
        while (r.Read()) kinds.Add(r.GetString(0));
        return kinds;
    }

    private static async Task WaitForStateAsync(HavenWorld w, string vm, VmState state)
    {
        var clock = Stopwatch.StartNew();
        VmInfo info;
        while ((info = await w.ShowAsync(vm)).State != state)
        {
            Assert.True(clock.Elapsed < Settle, $"VM '{vm}' is still {info.State} ({info.StateReason}) after {Settle.TotalSeconds} s");
            await Task.Delay(500, w.Ct);
        }
    }
}
