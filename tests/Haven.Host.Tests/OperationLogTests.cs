using Haven.Api;
using Haven.Qemu.Images;
using Microsoft.Extensions.Logging;
using Xunit;

namespace Haven.Host.Tests;

/// <summary>What the host logs: operations with their VM, id and duration, and clean-up steps that fail for real.</summary>
public sealed class OperationLogTests
{
    [Fact]
    public async Task A_clean_up_that_fails_is_logged_once_at_Warning_with_its_VM_and_operation_and_the_first_failure_surfaces()
    {
        var logs = new CapturedLogs();
        using var factory = logs.Factory();
        await using var t = new TestHost(options: new HavenHostOptions { LoggerFactory = factory });
        await t.CreateVmAsync("web");
        await t.Host.Checkpoints.CreateAsync("web", "one", t.Ct);
        var vmId = t.Host.Vms.Find("web").Id;
        // The export's partial file is a folder with something in it: qemu-img cannot write it, and deleting it fails too.
        var target = t.Dir.File("web.qcow2");
        Directory.CreateDirectory(target + ".partial");
        File.WriteAllText(Path.Combine(target + ".partial", "keep"), "x");

        var e = await Assert.ThrowsAsync<ToolFailedException>(() => t.Host.Checkpoints.ExportAsync("web", "one", new CheckpointExportRequest { Path = target }, t.Ct));
        Assert.Contains("qemu-img", e.Message);

        var warning = Assert.Single(logs.Entries, l => l.Level == LogLevel.Warning);
        var started = Assert.Single(logs.Entries, l => l.Message.Contains("CheckpointService.Export") && l.Message.EndsWith("started", StringComparison.Ordinal));
        Assert.Equal(("web", vmId, "CheckpointService.Export", started["OperationId"]), (warning["Vm"], warning["VmId"], warning["Operation"], warning["OperationId"]));
        Assert.Contains("cleanup failed: delete the partial export " + target + ".partial", warning.Message);
        Assert.Contains("VM web " + vmId, warning.Message);
        Assert.Contains("operation CheckpointService.Export " + started["OperationId"], warning.Message);
        Assert.True(Directory.Exists(target + ".partial"));
    }

    [Fact]
    public async Task An_operation_logs_its_start_and_its_end_or_failure_with_VM_id_and_duration()
    {
        var logs = new CapturedLogs();
        using var factory = logs.Factory();
        var clock = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(new DateTimeOffset(2026, 3, 2, 10, 0, 0, TimeSpan.Zero));
        await using var t = new TestHost(options: new HavenHostOptions { LoggerFactory = factory, Time = clock });
        await t.CreateVmAsync("web");

        await t.Host.RunOperationAsync("checkpoint create", "web", async () =>
        {
            clock.Advance(TimeSpan.FromMilliseconds(1500));
            return await t.Host.Checkpoints.CreateAsync("web", "one", t.Ct);
        });
        var ours = logs.Entries.Where(l => l.Level == LogLevel.Information && Equals(l["Operation"], "checkpoint create")).ToList();
        Assert.Equal(2, ours.Count);
        Assert.Equal(ours[0]["OperationId"], ours[1]["OperationId"]);
        Assert.Equal($"operation {ours[0]["OperationId"]} checkpoint create on VM web ({t.Host.Vms.Find("web").Id}) started", ours[0].Message);
        Assert.EndsWith("ended in 1500 ms", ours[1].Message);
        // The VM lock inside joined the named operation instead of starting one of its own.
        Assert.DoesNotContain(logs.Entries, l => Equals(l["Operation"], "CheckpointService.Create"));

        await Assert.ThrowsAsync<HavenException>(() => t.Host.RunOperationAsync("checkpoint create", "web", () => t.Host.Checkpoints.CreateAsync("web", "one", t.Ct)));
        var failed = Assert.Single(logs.Entries, l => l.Message.Contains(" failed after "));
        Assert.Equal(LogLevel.Warning, failed.Level);
        Assert.Contains("already has a checkpoint named 'one'", failed.Message);
        Assert.Equal("web", failed["Vm"]);
    }
}
