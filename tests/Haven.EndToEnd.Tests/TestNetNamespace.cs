using Haven.Qemu.Images;

namespace Haven.EndToEnd.Tests;

/// <summary>A network namespace with bridge br0, deleted (with whatever taps are left in it) at the end.</summary>
public sealed class TestNetNamespace : IAsyncDisposable
{
    public string Name { get; } = "hvt" + Guid.NewGuid().ToString("N")[..8];

    public static async Task<TestNetNamespace> CreateAsync()
    {
        var ns = new TestNetNamespace();
        await ProcessRunner.RunAsync("ip", ["netns", "add", ns.Name]);
        await ns.IpAsync("link", "add", "br0", "type", "bridge");
        await ns.IpAsync("link", "set", "br0", "up");
        return ns;
    }

    public async Task<string> IpAsync(params string[] args) => (await ProcessRunner.RunAsync("ip", ["-n", Name, .. args])).StandardOutput;

    /// <summary>Names of the interfaces attached to br0.</summary>
    public async Task<List<string>> OnBridgeAsync() =>
        (await IpAsync("-o", "link", "show", "master", "br0")).Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => l.Split(':')[1].Trim().Split('@')[0]).Order().ToList();

    /// <summary>Names of Haven's tap devices in the namespace (on a bridge or not).</summary>
    public async Task<List<string>> TapsAsync() =>
        (await IpAsync("-o", "link", "show")).Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => l.Split(':')[1].Trim().Split('@')[0]).Where(n => n.StartsWith("hv", StringComparison.Ordinal)).Order().ToList();

    /// <summary>Runs a command inside the namespace (ip netns exec); its result whatever the exit code.</summary>
    public Task<ProcessResult> ExecAsync(params string[] command) => ProcessRunner.RunAsync("ip", ["netns", "exec", Name, .. command], throwOnError: false);

    public async ValueTask DisposeAsync() => await ProcessRunner.RunAsync("ip", ["netns", "del", Name], throwOnError: false);
}
