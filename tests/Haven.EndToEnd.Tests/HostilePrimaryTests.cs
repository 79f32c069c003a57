using System.Text.Json;
using Google.Protobuf;
using Grpc.Core;
using Haven.Api;
using Haven.Replication;
using Haven.Replication.V1;
using Haven.TestSupport;
using DiskInfo = Haven.Replication.V1.DiskInfo;

namespace Haven.EndToEnd.Tests;

/// <summary>
/// A real havend replica server ("replica.test") and test primaries speaking the wire protocol directly
/// (<see cref="HostilePrimary"/>): "victim.test" (its replica "web" holds cycle 1), "attacker.test" (authorized, same
/// trust group, its own replica "att"), and "forged": a certificate named victim.test issued by a CA the replica trusts
/// through a CA entry. The replica pins victim and attacker by thumbprint (allow --primary NAME).
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class HostilePrimaryFixture : IAsyncLifetime
{
    public const string VictimVm = "victim-vm-1";
    public const string AttackerVm = "attacker-vm-1";
    public const long DiskBytes = 16 << 20;
    public TempDir Dir { get; } = new();
    public DaemonProcess Replica { get; private set; } = null!;
    public string ReplicaUrl { get; private set; } = "";
    public string Storage => Dir.File("replicas");
    public HostilePrimary Victim { get; private set; } = null!;
    public HostilePrimary Attacker { get; private set; } = null!;
    public HostilePrimary Forged { get; private set; } = null!;
    public string CaFile => Dir.File("ca.crt");

    public async ValueTask InitializeAsync()
    {
        var ct = TestContext.Current.CancellationToken;
        Directory.CreateDirectory(Storage);
        Replica = await DaemonProcess.StartAsync(Dir.File("replica"), args: ["--host-name", "replica.test"]);
        await OkAsync("host", "certificate", "--out", Dir.File("replica.crt"));
        var replicaPem = await File.ReadAllTextAsync(Dir.File("replica.crt"), ct);
        ReplicaUrl = $"https://127.0.0.1:{ReplicaServerFixture.FreePort()}";
        var ca = HostilePrimary.CreateCa("Haven Hostile Test CA");
        await File.WriteAllTextAsync(CaFile, ca.Cert.ExportCertificatePem(), ct);

        Victim = new HostilePrimary(Dir.File("victim-tls"), "victim.test", ReplicaUrl, replicaPem);
        Attacker = new HostilePrimary(Dir.File("attacker-tls"), "attacker.test", ReplicaUrl, replicaPem);
        Forged = new HostilePrimary(Dir.File("forged-tls"), "victim.test", ReplicaUrl, replicaPem, HostilePrimary.Issue(ca, "victim.test"));
        foreach (var (p, file) in new[] { (Victim, "victim.crt"), (Attacker, "attacker.crt") })
        {
            await File.WriteAllTextAsync(Dir.File(file), p.Identity.CertificatePem, ct);
            await OkAsync("host", "trust", "add", Dir.File(file));
        }
        var trustedCa = JsonSerializer.Deserialize<TrustedCertificateInfo>(await OkAsync("host", "trust", "add", "--ca", CaFile, "--json"), ApiJson.Options)!;
        await OkAsync("replica-server", "enable", "--listen", ReplicaUrl);
        await OkAsync("replica-server", "allow", "--primary", "victim.test", "--storage", Storage, "--trust-group", "g1");
        await OkAsync("replica-server", "allow", "--primary", "attacker.test", "--storage", Storage, "--trust-group", "g1");
        await OkAsync("replica-server", "allow", "--primary", "*.test", "--ca", trustedCa.Thumbprint, "--storage", Storage, "--trust-group", "g1");

        await Victim.Client.EnsureReplicaAsync(HostilePrimary.Vm(VictimVm, "web", DiskBytes), cancellationToken: ct);
        var first = await Victim.SendCycleAsync(Cycle(HostilePrimary.Begin(VictimVm, 1, 0, DiskBytes), HostilePrimary.Data(0, 65536, 0xAB)), ct);
        Assert.True(first.Code == StatusCode.OK, first.Detail);
        await Attacker.Client.EnsureReplicaAsync(HostilePrimary.Vm(AttackerVm, "att", DiskBytes), cancellationToken: ct);
    }

    /// <summary>Begin, extents, and a CycleEnd with the true counts.</summary>
    public static IEnumerable<CycleMessage> Cycle(CycleBegin begin, params Extent[] extents)
    {
        yield return new CycleMessage { Begin = begin };
        foreach (var e in extents) yield return new CycleMessage { Extent = e };
        yield return new CycleMessage { End = new CycleEnd { ExtentCount = (ulong)extents.Length, ByteCount = (ulong)extents.Sum(e => (long)e.Length) } };
    }

    public Task<CliResult> Cli(params string[] args) => DaemonProcess.HavenAsync(Replica.DataDir, TestContext.Current.CancellationToken, args);

    public async Task<string> OkAsync(params string[] args)
    {
        var r = await Cli(args);
        Assert.True(r.ExitCode == 0 && r.Stderr == "", r.ToString());
        return r.Stdout;
    }

    /// <summary>Every file of the replica host (data folder and storage location) with its size, except the state database.</summary>
    public string Files()
    {
        var lines = new List<string>();
        foreach (var root in new[] { Replica.DataDir, Storage })
            foreach (var f in Directory.EnumerateFileSystemEntries(root, "*", new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = 0 }))
            {
                var rel = Path.GetRelativePath(root, f);
                if (rel.StartsWith("haven.db", StringComparison.Ordinal)) continue;
                var info = new FileInfo(f);
                lines.Add(rel + (info.Exists && info.LinkTarget is null ? " " + info.Length : ""));
            }
        lines.Sort(StringComparer.Ordinal);
        return string.Join("\n", lines);
    }

    /// <summary>What the replica host says it holds: its VMs, the replicas' checkpoints (recovery points).</summary>
    public async Task<string> StateAsync() =>
        await OkAsync("vm", "list", "--json") + await OkAsync("checkpoint", "list", "web", "--json") + await OkAsync("checkpoint", "list", "att", "--json");

    public async ValueTask DisposeAsync()
    {
        Victim?.Dispose();
        Attacker?.Dispose();
        Forged?.Dispose();
        if (Replica is not null) await Replica.DisposeAsync();
        Dir.Dispose();
    }
}

[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class HostilePrimaryTests(HostilePrimaryFixture f) : IClassFixture<HostilePrimaryFixture>
{
    const string VictimVm = HostilePrimaryFixture.VictimVm;
    const string AttackerVm = HostilePrimaryFixture.AttackerVm;
    const long DiskBytes = HostilePrimaryFixture.DiskBytes;
    static CancellationToken Ct => TestContext.Current.CancellationToken;

    async Task<ulong> LastCycleAsync(HostilePrimary p, string vmId) => (await p.Client.GetReplicaAsync(new ReplicaRef { VmId = vmId }, cancellationToken: Ct)).LastCycle;

    [Fact]
    public async Task Another_primary_cannot_touch_a_replica_by_its_vm_id_not_in_the_same_trust_group_nor_with_a_ca_certificate_of_its_name()
    {
        var files = f.Files();
        var state = await f.StateAsync();
        // The forged certificate gets past authorization (the CA entry admits it): only ownership stops it.
        Assert.Equal("g1", (await f.Forged.Client.HelloAsync(new HelloRequest { ProtocolVersion = 1 }, cancellationToken: Ct)).TrustGroup);
        foreach (var (who, p) in new[] { ("attacker", f.Attacker), ("forged", f.Forged) })
        {
            Assert.Equal(StatusCode.PermissionDenied, await HostilePrimary.CodeOf(() => p.Client.EnsureReplicaAsync(HostilePrimary.Vm(VictimVm, "web2", DiskBytes), cancellationToken: Ct).ResponseAsync));
            Assert.Equal(StatusCode.PermissionDenied, await HostilePrimary.CodeOf(() => p.Client.GetReplicaAsync(new ReplicaRef { VmId = VictimVm }, cancellationToken: Ct).ResponseAsync));
            var cycle = await p.SendCycleAsync(HostilePrimaryFixture.Cycle(HostilePrimary.Begin(VictimVm, 2, 1, DiskBytes), HostilePrimary.Data(0, 65536, 0x66)), Ct);
            Assert.True(cycle.Code == StatusCode.PermissionDenied, who + ": " + cycle);
            Assert.Equal(StatusCode.PermissionDenied, await HostilePrimary.CodeOf(async () =>
            {
                using var call = p.Client.HashBlocks(new ReplicaRef { VmId = VictimVm }, cancellationToken: Ct);
                await foreach (var _ in call.ResponseStream.ReadAllAsync(Ct)) { }
            }));
            Assert.Equal(StatusCode.PermissionDenied, await HostilePrimary.CodeOf(() => p.Client.FailoverAsync(new FailoverRequest { VmId = VictimVm, Start = false }, cancellationToken: Ct).ResponseAsync));
            Assert.Equal(StatusCode.PermissionDenied, await HostilePrimary.CodeOf(() => p.Client.ReverseAsync(new ReverseRequest { VmId = VictimVm, ReplicaAddress = "https://127.0.0.1:1", FrequencySeconds = 30 }, cancellationToken: Ct).ResponseAsync));
            Assert.Equal(StatusCode.PermissionDenied, await p.SendBootFileAsync(VictimVm, BootFileKind.BootFileKernel, 4, [[1, 2, 3, 4]], Ct));
        }
        Assert.Equal(files, f.Files());
        Assert.Equal(state, await f.StateAsync());
        Assert.Equal(1UL, await LastCycleAsync(f.Victim, VictimVm));
    }

    public static TheoryData<string> HostileReplicas =>
    [
        "17 disks", "a disk of 2^63+1 bytes", "a disk of 0 bytes", "disk index 3", "4e9 vcpus", "2^32-1 MiB of memory", "0 MiB of memory",
        "1000 additional points", "a vm name with a path", "an append line with a newline", "an accelerator with arguments", "a vm id with a path",
    ];

    [Theory]
    [MemberData(nameof(HostileReplicas))]
    public async Task A_replica_with_hostile_fields_is_refused_with_nothing_written(string what)
    {
        var request = HostilePrimary.Vm("hostile-" + Guid.NewGuid().ToString("N")[..8], "hostile", DiskBytes);
        switch (what)
        {
            case "17 disks": for (uint i = 1; i < 17; i++) request.Disks.Add(new DiskInfo { Index = i, SizeBytes = 1 << 20 }); break;
            case "a disk of 2^63+1 bytes": request.Disks[0].SizeBytes = (1UL << 63) + 1; break;
            case "a disk of 0 bytes": request.Disks[0].SizeBytes = 0; break;
            case "disk index 3": request.Disks[0].Index = 3; break;
            case "4e9 vcpus": request.Vcpus = 4_000_000_000; break;
            case "2^32-1 MiB of memory": request.MemoryMib = uint.MaxValue; break;
            case "0 MiB of memory": request.MemoryMib = 0; break;
            case "1000 additional points": request.AdditionalPoints = 1000; break;
            case "a vm name with a path": request.VmName = "../../etc/passwd"; break;
            case "an append line with a newline": request.Append = "console=ttyS0\ninit=/bin/sh"; break;
            case "an accelerator with arguments": request.Accelerator = "kvm -hda /etc/shadow"; break;
            case "a vm id with a path": request.VmId = "../../tls"; break;
        }
        var files = f.Files();
        var state = await f.StateAsync();
        Assert.Equal(StatusCode.InvalidArgument, await HostilePrimary.CodeOf(() => f.Attacker.Client.EnsureReplicaAsync(request, cancellationToken: Ct).ResponseAsync));
        Assert.Equal(files, f.Files());
        Assert.Equal(state, await f.StateAsync());
    }

    [Fact]
    public async Task A_kernel_path_from_a_primary_is_never_used_and_boot_files_arrive_as_bounded_bytes_in_the_vms_own_folder()
    {
        // An old primary's EnsureReplicaRequest.kernel / initrd (fields 6, 7) naming the replica's own TLS key: ignored.
        var key = Path.Combine(f.Replica.DataDir, "tls", "host.key");
        var bytes = HostilePrimary.Vm("boot-vm-1", "boot", DiskBytes).ToByteArray()
            .Concat(new byte[] { 6 << 3 | 2, (byte)key.Length }).Concat(System.Text.Encoding.UTF8.GetBytes(key))
            .Concat(new byte[] { 7 << 3 | 2, (byte)key.Length }).Concat(System.Text.Encoding.UTF8.GetBytes(key)).ToArray();
        await f.Attacker.Client.EnsureReplicaAsync(EnsureReplicaRequest.Parser.ParseFrom(bytes), cancellationToken: Ct);
        var vm = JsonSerializer.Deserialize<VmInfo>(await f.OkAsync("vm", "show", "boot", "--json"), ApiJson.Options)!;
        Assert.Null(vm.Kernel);
        Assert.Null(vm.Initrd);

        var kernel = new byte[300_000];
        Random.Shared.NextBytes(kernel);
        Assert.Equal(StatusCode.OK, await f.Attacker.SendBootFileAsync("boot-vm-1", BootFileKind.BootFileKernel, (ulong)kernel.Length, kernel.Chunk(100_000), Ct));
        vm = JsonSerializer.Deserialize<VmInfo>(await f.OkAsync("vm", "show", "boot", "--json"), ApiJson.Options)!;
        Assert.NotNull(vm.Kernel);
        Assert.Equal(Path.Combine(f.Replica.DataDir, "vms", vm.Id, "kernel"), vm.Kernel);
        Assert.Equal(kernel, await File.ReadAllBytesAsync(vm.Kernel, Ct));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(vm.Kernel));

        var files = f.Files();
        var state = await f.StateAsync();
        foreach (var (what, kind, size, chunks) in new (string, BootFileKind, ulong, byte[][])[]
        {
            ("an empty file", BootFileKind.BootFileKernel, 0, [[]]),
            ("more than 256 MiB", BootFileKind.BootFileKernel, (257UL << 20), [[1]]),
            ("more bytes than announced", BootFileKind.BootFileKernel, 10, [new byte[8], new byte[8]]),
            ("fewer bytes than announced", BootFileKind.BootFileKernel, 1000, [new byte[10]]),
            ("an unknown kind", (BootFileKind)7, 4, [new byte[4]]),
            ("a vm that is not there", BootFileKind.BootFileKernel, 4, [new byte[4]]),
        })
        {
            var code = await f.Attacker.SendBootFileAsync(what == "a vm that is not there" ? "no-such-vm" : "boot-vm-1", kind, size, chunks, Ct);
            Assert.True(code is StatusCode.InvalidArgument or StatusCode.NotFound, $"{what}: {code}");
            Assert.Equal(kernel, await File.ReadAllBytesAsync(vm.Kernel, Ct));
        }
        Assert.Equal(files, f.Files());
        Assert.Equal(state, await f.StateAsync());
    }

    public static TheoryData<string> HostileCycles =>
    [
        "an extent for disk 1", "an extent for disk 2^32-1", "an offset of 2^64-10", "an offset that overflows", "an extent past the disk's end",
        "an extent of 0 bytes", "an extent of 5 MiB", "fewer data bytes than the length", "a zero extent with data", "cycle 0", "cycle 2^64-1",
        "a base the replica is not at", "consistency 'x'", "another disk size", "two disks", "a point in time in the year 300000",
        "no CycleEnd", "a CycleEnd with wrong counts", "a message after CycleEnd", "a second CycleBegin",
        "a failover network of 9 NICs", "a failover network naming nic0 twice", "a failover network NIC 'eth0'", "a failover network bridge '..'",
        "a failover network bridge of 16 characters",
    ];

    [Theory]
    [MemberData(nameof(HostileCycles))]
    public async Task A_hostile_or_unfinished_cycle_gets_an_error_status_and_leaves_the_replica_as_it_was(string what)
    {
        var last = await LastCycleAsync(f.Attacker, AttackerVm);
        var begin = HostilePrimary.Begin(AttackerVm, last + 1, last, DiskBytes);
        var good = HostilePrimary.Data(65536, 65536, 0x5A);
        IEnumerable<CycleMessage> messages = what switch
        {
            "an extent for disk 1" => HostilePrimaryFixture.Cycle(begin, good, HostilePrimary.Data(0, 512, 1, disk: 1)),
            "an extent for disk 2^32-1" => HostilePrimaryFixture.Cycle(begin, good, HostilePrimary.Data(0, 512, 1, disk: uint.MaxValue)),
            "an offset of 2^64-10" => HostilePrimaryFixture.Cycle(begin, good, HostilePrimary.Data(ulong.MaxValue - 10, 512, 1)),
            "an offset that overflows" => HostilePrimaryFixture.Cycle(begin, good, HostilePrimary.Data(long.MaxValue - 100, 4096, 1)),
            "an extent past the disk's end" => HostilePrimaryFixture.Cycle(begin, good, HostilePrimary.Data(DiskBytes - 512, 4096, 1)),
            "an extent of 0 bytes" => HostilePrimaryFixture.Cycle(begin, good, new Extent { Offset = 0, Length = 0, Zero = true }),
            "an extent of 5 MiB" => HostilePrimaryFixture.Cycle(begin, good, new Extent { Offset = 0, Length = 5 << 20, Zero = true }),
            "fewer data bytes than the length" => HostilePrimaryFixture.Cycle(begin, good, new Extent { Offset = 0, Length = 4096, Data = ByteString.CopyFrom(new byte[100]) }),
            "a zero extent with data" => HostilePrimaryFixture.Cycle(begin, good, new Extent { Offset = 0, Length = 100, Zero = true, Data = ByteString.CopyFrom(new byte[100]) }),
            "cycle 0" => HostilePrimaryFixture.Cycle(Change(begin, b => { b.CycleNumber = 0; b.BaseCycleNumber = 0; }), good),
            "cycle 2^64-1" => HostilePrimaryFixture.Cycle(Change(begin, b => b.CycleNumber = ulong.MaxValue), good),
            "a base the replica is not at" => HostilePrimaryFixture.Cycle(Change(begin, b => { b.BaseCycleNumber = last + 5; b.CycleNumber = last + 6; }), good),
            "consistency 'x'" => HostilePrimaryFixture.Cycle(Change(begin, b => b.Consistency = "x"), good),
            "another disk size" => HostilePrimaryFixture.Cycle(Change(begin, b => b.Disks[0].SizeBytes = 2 * DiskBytes), good),
            "two disks" => HostilePrimaryFixture.Cycle(Change(begin, b => b.Disks.Add(new DiskInfo { Index = 1, SizeBytes = DiskBytes })), good),
            "a point in time in the year 300000" => HostilePrimaryFixture.Cycle(Change(begin, b => b.PointInTimeUnixMs = long.MaxValue / 2), good),
            "no CycleEnd" => HostilePrimaryFixture.Cycle(begin, good).SkipLast(1),
            "a CycleEnd with wrong counts" => HostilePrimaryFixture.Cycle(begin, good).SkipLast(1).Append(new CycleMessage { End = new CycleEnd { ExtentCount = 2, ByteCount = 65536 } }),
            "a message after CycleEnd" => HostilePrimaryFixture.Cycle(begin, good).Append(new CycleMessage { Extent = good }),
            "a second CycleBegin" => HostilePrimaryFixture.Cycle(begin, good).SkipLast(1).Append(new CycleMessage { Begin = begin }),
            "a failover network of 9 NICs" => HostilePrimaryFixture.Cycle(Change(begin, b => b.FailoverNetwork.Add(
                Enumerable.Range(0, 9).Select(i => new FailoverNic { Nic = "nic" + (i % 8), Bridge = "br" + i }))), good),
            "a failover network naming nic0 twice" => HostilePrimaryFixture.Cycle(Change(begin, b => b.FailoverNetwork.Add(
                [new FailoverNic { Nic = "nic0", Bridge = "br0" }, new FailoverNic { Nic = "nic0", Bridge = "br1" }])), good),
            "a failover network NIC 'eth0'" => HostilePrimaryFixture.Cycle(Change(begin, b => b.FailoverNetwork.Add(new FailoverNic { Nic = "eth0", Bridge = "br0" })), good),
            "a failover network bridge '..'" => HostilePrimaryFixture.Cycle(Change(begin, b => b.FailoverNetwork.Add(new FailoverNic { Nic = "nic0", Bridge = ".." })), good),
            "a failover network bridge of 16 characters" => HostilePrimaryFixture.Cycle(Change(begin, b => b.FailoverNetwork.Add(
                new FailoverNic { Nic = "nic0", Bridge = new string('b', 16) })), good),
            _ => throw new ArgumentException(what),
        };
        var files = f.Files();
        var state = await f.StateAsync();
        var result = await f.Attacker.SendCycleAsync(messages, Ct);
        Assert.True(result.Code != StatusCode.OK, $"{what}: the replica committed cycle {result.Ack?.CommittedCycleNumber}");
        Assert.Equal(last, await LastCycleAsync(f.Attacker, AttackerVm));
        Assert.Equal(state, await f.StateAsync());
        Assert.Equal(files, f.Files());

        // And the replica still takes the honest cycle afterwards.
        var ok = await f.Attacker.SendCycleAsync(HostilePrimaryFixture.Cycle(begin, good), Ct);
        Assert.True(ok.Code == StatusCode.OK, ok.Detail);
        Assert.Equal(last + 1, await LastCycleAsync(f.Attacker, AttackerVm));
    }

    static CycleBegin Change(CycleBegin b, Action<CycleBegin> change)
    {
        var copy = b.Clone();
        change(copy);
        return copy;
    }

    [Fact]
    public async Task Trusting_a_ca_needs_ca_a_ca_host_certificate_and_an_unpinned_pattern_are_refused_with_exit_2()
    {
        var trusted = await f.OkAsync("host", "trust", "list", "--json");
        var settings = await f.OkAsync("replica-server", "show", "--json");
        var certificate = await f.OkAsync("host", "certificate", "--json");
        var other = HostilePrimary.CreateCa("Another CA");
        var caFile = f.Dir.File("other-ca.crt");
        await File.WriteAllTextAsync(caFile, other.Cert.ExportCertificatePem(), Ct);
        var keyFile = f.Dir.File("other-ca.key");
        await File.WriteAllTextAsync(keyFile, other.Key.ExportPkcs8PrivateKeyPem(), Ct);

        var add = await f.Cli("host", "trust", "add", caFile);
        Assert.Equal(2, add.ExitCode);
        Assert.Contains("is a CA certificate", Assert.Single(add.StderrLines));
        var notCa = await f.Cli("host", "trust", "add", "--ca", f.Dir.File("victim.crt"));
        Assert.Equal(2, notCa.ExitCode);
        var set = await f.Cli("host", "certificate", "set", "--cert", caFile, "--key", keyFile);
        Assert.Equal(2, set.ExitCode);
        Assert.Contains("is a CA certificate", Assert.Single(set.StderrLines));
        var pattern = await f.Cli("replica-server", "allow", "--primary", "*.example", "--storage", f.Storage, "--trust-group", "g1");
        Assert.Equal(2, pattern.ExitCode);
        Assert.Contains("pins nothing", Assert.Single(pattern.StderrLines));
        var unknown = await f.Cli("replica-server", "allow", "--primary", "nobody.test", "--storage", f.Storage, "--trust-group", "g1");
        Assert.Equal(2, unknown.ExitCode);

        Assert.Equal(trusted, await f.OkAsync("host", "trust", "list", "--json"));
        Assert.Equal(settings, await f.OkAsync("replica-server", "show", "--json"));
        Assert.Equal(certificate, await f.OkAsync("host", "certificate", "--json"));
        var info = JsonSerializer.Deserialize<ReplicaServerInfo>(settings, ApiJson.Options)!;
        Assert.Equal(f.Attacker.Identity.Thumbprint, info.Authorizations.Single(a => a.Primary == "attacker.test").Thumbprint);
    }
}
