using System.Text.RegularExpressions;
using Haven.TestSupport;

namespace Haven.EndToEnd.Tests;

/// <summary>havend's log on stdout: one line per entry, each operation's start and end with VM, id and duration; --log-level.</summary>
public sealed class DaemonLogTests
{
    [Fact]
    public async Task Havend_logs_each_operations_start_and_end_with_VM_id_and_duration_and_log_level_Warning_hides_them()
    {
        using var dir = new TempDir();
        // Not under systemd, whatever runs the tests: the simple formatter.
        await using (var d = await DaemonProcess.StartAsync(dir.File("info"), env: new Dictionary<string, string> { ["JOURNAL_STREAM"] = "" }))
        {
            var created = await d.Haven("vm", "create", "logged", "--disk-size", "16M");
            Assert.True(created.ExitCode == 0, created.ToString());
            var checkpoint = await d.Haven("checkpoint", "create", "logged", "--name", "one");
            Assert.True(checkpoint.ExitCode == 0, checkpoint.ToString());
            await d.StopAsync();
            var stdout = d.Stdout;
            Assert.DoesNotContain("\u001b[", stdout); // no colours when stdout is not a terminal

            // The VM does not exist yet when its creation starts: its id is "-".
            var create = Regex.Match(stdout, @"operation (?<id>[0-9a-f]{12}) POST /v1/vms on VM logged \(-\) started\n");
            Assert.True(create.Success, stdout);
            Assert.Matches($@"operation {create.Groups["id"].Value} POST /v1/vms on VM logged \(-\) ended in \d+ ms\n", stdout);

            var vmId = Regex.Match(stdout, @"on VM logged \((?<vm>[0-9a-f]{12})\)").Groups["vm"].Value;
            var cp = Regex.Match(stdout, $@"operation (?<id>[0-9a-f]{{12}}) POST /v1/vms/{{name}}/checkpoints on VM logged \({vmId}\) started\n");
            Assert.True(cp.Success, stdout);
            var end = Regex.Match(stdout, $@"operation {cp.Groups["id"].Value} POST /v1/vms/{{name}}/checkpoints on VM logged \({vmId}\) ended in (?<ms>\d+) ms\n");
            Assert.True(end.Success, stdout);
            Assert.True(int.Parse(end.Groups["ms"].Value) > 0, end.Value);
            // Each entry is one line: the line of an operation's end carries its level and category too.
            Assert.Contains(stdout.Split('\n'), l => l.Contains("info: Haven.Host[0]") && l.EndsWith(end.Value.TrimEnd('\n'), StringComparison.Ordinal));
        }

        // Under systemd (stdout is the journal): each line starts with its syslog priority, which journald keeps.
        await using (var d = await DaemonProcess.StartAsync(dir.File("journal"), env: new Dictionary<string, string> { ["JOURNAL_STREAM"] = "8:4242" }))
        {
            var created = await d.Haven("vm", "create", "journaled", "--disk-size", "16M");
            Assert.True(created.ExitCode == 0, created.ToString());
            var refused = await d.Haven("vm", "create", "journaled", "--disk-size", "16M");
            Assert.Equal(4, refused.ExitCode);
            await d.StopAsync();
            var lines = d.Stdout.Split('\n');
            Assert.Contains(lines, l => l.StartsWith("<6>Haven.Host[0] ", StringComparison.Ordinal) && l.EndsWith("POST /v1/vms on VM journaled (-) started", StringComparison.Ordinal));
            Assert.Contains(lines, l => l.StartsWith("<4>Haven.Host[0] ", StringComparison.Ordinal) && l.Contains("POST /v1/vms on VM journaled") && l.Contains(" failed after "));
        }

        await using (var d = await DaemonProcess.StartAsync(dir.File("warn"), args: ["--log-level", "Warning"]))
        {
            var created = await d.Haven("vm", "create", "quiet", "--disk-size", "16M");
            Assert.True(created.ExitCode == 0, created.ToString());
            await d.StopAsync();
            Assert.Contains("havend: listening", d.Stdout);
            Assert.DoesNotContain("operation ", d.Stdout);
            Assert.DoesNotContain(" started", d.Stdout);
        }
    }

    [Fact]
    public async Task An_unknown_log_level_stops_havend_with_one_line()
    {
        using var dir = new TempDir();
        await using var d = DaemonProcess.Launch(dir.File("data"), args: ["--log-level", "Loud"]);
        Assert.True(await d.WaitForExitAsync(TimeSpan.FromSeconds(30)), "havend did not exit");
        Assert.Equal(2, d.ExitCode);
        Assert.Equal("havend: --log-level takes Trace, Debug, Information, Warning, Error, Critical, not 'Loud'\n", d.Stderr);
        Assert.Equal("", d.Stdout);
        Assert.False(Directory.Exists(dir.File("data")));
    }
}
