using Haven.Qemu.Images;
using Haven.TestSupport;

namespace Haven.EndToEnd.Tests;

/// <summary>scripts/install-service.sh into a temporary root (HAVEN_SERVICE_ROOT; no systemd runs here, nothing is enabled).</summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class InstallServiceTests
{
    private static string Script => Path.Combine(TestGuest.RepoRoot, "scripts", "install-service.sh");

    private static async Task<ProcessResult> InstallAsync(string root, string? timeout = null)
    {
        var env = new List<string> { "HAVEN_SERVICE_ROOT=" + root, "HAVEN_SERVICE_PUBLISH=0" };
        if (timeout is not null) env.Add("HAVEN_SHUTDOWN_TIMEOUT=" + timeout);
        return await ProcessRunner.RunAsync("env", [.. env, "bash", Script], TestContext.Current.CancellationToken, throwOnError: false);
    }

    [Fact]
    public async Task Writes_the_units_the_haven_command_and_an_owner_only_data_folder_and_the_units_verify()
    {
        using var dir = new TempDir();
        foreach (var dll in new[] { "opt/haven/havend/havend.dll", "opt/haven/cli/haven.dll" })
        {
            Directory.CreateDirectory(Path.GetDirectoryName(dir.File(dll))!);
            File.WriteAllText(dir.File(dll), "");
        }
        var r = await InstallAsync(dir.Path, "90");
        Assert.True(r.ExitCode == 0, r.StandardOutput + r.StandardError);
        Assert.Contains("nothing enabled", r.StandardOutput);

        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(dir.File("var/lib/haven")));
        var haven = File.ReadAllText(dir.File("usr/local/bin/haven"));
        Assert.Contains(" /opt/haven/cli/haven.dll \"$@\"", haven);
        Assert.True(File.GetUnixFileMode(dir.File("usr/local/bin/haven")).HasFlag(UnixFileMode.OtherExecute));

        var units = dir.File("etc/systemd/system");
        var daemon = File.ReadAllText(Path.Combine(units, "havend.service"));
        Assert.Matches(@"ExecStart=/\S+/dotnet /opt/haven/havend/havend.dll --data /var/lib/haven\n", daemon);
        Assert.Contains("KillMode=process", daemon); // restarting havend leaves the VMs running
        var guests = File.ReadAllText(Path.Combine(units, "haven-guests.service"));
        Assert.Contains("ExecStop=/usr/local/bin/haven --host /var/lib/haven host shutdown-vms --timeout 90\n", guests);
        Assert.Contains("After=havend.service", guests);
        Assert.DoesNotContain("\nRequires=", guests); // a restart of havend must not stop the guests
        Assert.DoesNotContain("@", daemon + guests);

        // systemd's own check; the only complaint allowed is the haven command not being installed on this machine.
        var verify = await ProcessRunner.RunAsync("systemd-analyze", ["verify", Path.Combine(units, "havend.service"), Path.Combine(units, "haven-guests.service")],
            TestContext.Current.CancellationToken, throwOnError: false);
        var complaints = (verify.StandardOutput + verify.StandardError).Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Where(l => !(l.Contains("/usr/local/bin/haven is not executable") && !File.Exists("/usr/local/bin/haven"))).ToList();
        Assert.True(complaints.Count == 0, string.Join("\n", complaints));
    }

    [Fact]
    public async Task A_bad_timeout_or_a_root_without_the_programs_is_one_error_line_and_nothing_written()
    {
        using var dir = new TempDir();
        var bad = await InstallAsync(dir.Path, "soon");
        Assert.Equal(1, bad.ExitCode);
        Assert.Equal("install-service: error: HAVEN_SHUTDOWN_TIMEOUT must be 0..3600 seconds, not 'soon'", bad.StandardError.Trim());
        var missing = await InstallAsync(dir.Path);
        Assert.Equal(1, missing.ExitCode);
        Assert.StartsWith("install-service: error: no havend.dll/haven.dll in ", missing.StandardError.Trim());
        Assert.Empty(Directory.GetFileSystemEntries(dir.Path));
    }
}
