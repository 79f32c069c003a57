using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Haven.Api;
using Haven.Bench;
using Haven.Bench.Replication;
using Haven.Qemu.Qmp;

// Replication benchmark: two havend hosts on loopback over mutual TLS with a counting TCP relay between them.
// Bytes on the wire per cycle against bytes changed (with and without compression), cycle latency for a large
// change on a large sparse disk, and how many small VMs one replica server keeps up with at a 30 s frequency.
// bench/README.md explains the method; bench/replication.sh runs it.

CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;

Options o;
try { o = Options.Parse(args); }
catch (Exception e) when (e is ArgumentException or FormatException)
{
    Console.Error.WriteLine("haven-bench-replication: " + e.Message);
    Console.Error.WriteLine(Options.Usage);
    return 2;
}

var bench = new ReplicationBench(o);
try
{
    var report = await bench.RunAsync();
    var path = Path.Combine(o.Dir, "report.md");
    await File.WriteAllTextAsync(path, report);
    Console.WriteLine(report);
    Console.Error.WriteLine($"haven-bench-replication: report saved to {path}");
    return 0;
}
catch (Exception e)
{
    Console.Error.WriteLine("haven-bench-replication: FAILED: " + e);
    return 1;
}
finally { await bench.CleanupAsync(); }

namespace Haven.Bench.Replication
{
    public sealed record Options(string Dir, string Havend, string RepoRoot, long DiskSize, long[] Changes, string[] Kinds, int LatencyCycles,
        int[] ScaleVms, long ScaleDisk, long ScaleChange, int ScaleCycles, int Frequency, bool ScaleCompression, bool ScaleAll, ulong Seed, bool Keep, string Command)
    {
        public const string Usage =
            "usage: Haven.Bench.Replication [--dir /tmp/haven-bench-replication] [--havend havend.dll] [--disk 8G] [--changes 1M,16M,64M]\n" +
            "    [--kinds random,text] [--latency-cycles 3] [--scale-vms 1,2,4,8] [--scale-disk 128M] [--scale-change 4M] [--scale-cycles 2]\n" +
            "    [--frequency 30] [--scale-compression] [--scale-all] [--seed N] [--keep] [--command TEXT]";

        public static Options Parse(string[] args)
        {
            string dir = "/tmp/haven-bench-replication";
            string? havend = null, command = null;
            long disk = 8L << 30, scaleDisk = 128L << 20, scaleChange = 4L << 20;
            long[] changes = [1L << 20, 16L << 20, 64L << 20];
            string[] kinds = ["random", "text"];
            int[] scaleVms = [1, 2, 4, 8];
            int latencyCycles = 3, scaleCycles = 2, frequency = 30;
            bool scaleCompression = false, scaleAll = false, keep = false;
            ulong seed = 42;
            for (var i = 0; i < args.Length; i++)
            {
                string Value() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
                switch (args[i])
                {
                    case "--dir": dir = Value(); break;
                    case "--havend": havend = Value(); break;
                    case "--disk": disk = ParseSize(Value()); break;
                    case "--changes": changes = Value().Split(',', StringSplitOptions.RemoveEmptyEntries).Select(ParseSize).ToArray(); break;
                    case "--kinds": kinds = Value().Split(',', StringSplitOptions.RemoveEmptyEntries); break;
                    case "--latency-cycles": latencyCycles = int.Parse(Value(), CultureInfo.InvariantCulture); break;
                    case "--scale-vms": scaleVms = Value().Split(',', StringSplitOptions.RemoveEmptyEntries).Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToArray(); break;
                    case "--scale-disk": scaleDisk = ParseSize(Value()); break;
                    case "--scale-change": scaleChange = ParseSize(Value()); break;
                    case "--scale-cycles": scaleCycles = int.Parse(Value(), CultureInfo.InvariantCulture); break;
                    case "--frequency": frequency = int.Parse(Value(), CultureInfo.InvariantCulture); break;
                    case "--scale-compression": scaleCompression = true; break;
                    case "--scale-all": scaleAll = true; break;
                    case "--seed": seed = ulong.Parse(Value(), CultureInfo.InvariantCulture); break;
                    case "--keep": keep = true; break;
                    case "--command": command = Value(); break;
                    default: throw new ArgumentException($"unknown argument {args[i]}");
                }
            }
            foreach (var k in kinds)
                if (k is not ("random" or "text")) throw new ArgumentException($"--kinds: {k} is neither random nor text");
            if (disk < 64L << 20 || disk % (4 << 20) != 0) throw new ArgumentException("--disk must be at least 64M and a whole number of 4 MiB");
            if (scaleDisk < 16L << 20 || scaleDisk % (4 << 20) != 0) throw new ArgumentException("--scale-disk must be at least 16M and a whole number of 4 MiB");
            foreach (var c in changes.Append(scaleChange))
                if (c < 64 << 10 || c % (64 << 10) != 0) throw new ArgumentException("change sizes must be whole numbers of 64 KiB");
            if (changes.Any(c => c * 2 > disk - (4L << 20)) || scaleChange * 2 > scaleDisk - (4L << 20)) throw new ArgumentException("changes must fit in half the disk");
            if (frequency < 5) throw new ArgumentException("--frequency must be at least 5 (havend's minimum)");
            var root = FindRepoRoot();
            havend ??= Path.Combine(root, "src/Haven.Daemon/bin/Release/net10.0/havend.dll");
            if (!File.Exists(havend)) throw new ArgumentException($"havend not found at {havend} (build with: dotnet build Haven.slnx -c Release)");
            command ??= "dotnet bench/Haven.Bench.Replication/bin/Release/net10.0/Haven.Bench.Replication.dll " + string.Join(' ', args);
            return new Options(Path.GetFullPath(dir), Path.GetFullPath(havend), root, disk, changes, kinds, latencyCycles, scaleVms, scaleDisk, scaleChange,
                scaleCycles, frequency, scaleCompression, scaleAll, seed, keep, command);
        }

        public static long ParseSize(string s)
        {
            var unit = char.ToUpperInvariant(s[^1]);
            var mult = unit switch { 'K' => 1L << 10, 'M' => 1L << 20, 'G' => 1L << 30, 'T' => 1L << 40, _ => 1L };
            var number = mult == 1 ? s : s[..^1];
            return checked((long)(double.Parse(number, CultureInfo.InvariantCulture) * mult));
        }

        private static string FindRepoRoot()
        {
            for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
                if (File.Exists(Path.Combine(d.FullName, "Haven.slnx"))) return d.FullName;
            return Directory.GetCurrentDirectory();
        }
    }

    /// <summary>One measured cycle: what changed, what Haven says it sent, what crossed the relay.</summary>
    public sealed record CycleRow(string Vm, string Change, string Kind, long Changed, bool Compression, ReplicationCycleResult Result,
        long Up, long Down, long Connections, double ClientMs);

    /// <summary>One step of the scale test: N VMs replicating at the frequency.</summary>
    public sealed record ScaleStep(int Vms, double InitialAvg, double InitialMax, List<double> Latencies, List<double> RoundWalls,
        long Successful, long Failed, long Missed, long ExpectedCycles, bool TimedOut, long WireUp, List<string> Errors, double QemuIdleCpu)
    {
        public bool Sustained(int frequency) => !TimedOut && Failed == 0 && Missed == 0 && Successful >= ExpectedCycles &&
            Latencies.Count > 0 && Latencies.Max() <= frequency && InitialMax <= frequency;
    }

    public sealed class ReplicationBench(Options o)
    {
        private const string PrimaryName = "primary.bench";
        private const string ReplicaName = "replica.bench";
        private const int Piece = 4 << 20;
        private readonly Stopwatch _clock = Stopwatch.StartNew();
        private readonly List<int> _qemuPids = [];
        private readonly List<string> _notes = [];
        private Havend? _primary, _replica;
        private Relay? _relay;
        private string _relayUrl = "";
        private int _sourceCounter;

        private string PrimaryData => Path.Combine(o.Dir, "primary");
        private string ReplicaData => Path.Combine(o.Dir, "replica");
        private string Sources => Path.Combine(o.Dir, "sources");
        private Havend Primary => _primary ?? throw new InvalidOperationException("the primary havend is not running");

        private void Log(string message) => Console.Error.WriteLine($"[{_clock.Elapsed.TotalSeconds,6:F1}s] {message}");

        public async Task<string> RunAsync()
        {
            if (Directory.Exists(o.Dir)) Directory.Delete(o.Dir, true);
            Directory.CreateDirectory(Sources);
            var started = DateTimeOffset.UtcNow;
            var machine = await Machine.DescribeAsync(o.Dir, o.RepoRoot);
            await SetUpAsync();

            var (initial, rows, latency, idle) = await WireAndLatencyAsync();
            var steps = await ScaleAsync();
            return Report(machine, started, initial, rows, latency, idle, steps);
        }

        // ---- set-up -------------------------------------------------------------------------------------------

        private async Task SetUpAsync()
        {
            _replica = await Havend.StartAsync(o.Havend, ReplicaData, Path.Combine(o.Dir, "replica.log"), ReplicaName);
            _primary = await Havend.StartAsync(o.Havend, PrimaryData, Path.Combine(o.Dir, "primary.log"), PrimaryName);
            var pc = await _primary.GetAsync<HostCertificateInfo>("/v1/host/certificate");
            var rc = await _replica.GetAsync<HostCertificateInfo>("/v1/host/certificate");
            await _primary.PostAsync<TrustedCertificateInfo>("/v1/host/trusted", new TrustAddRequest { Pem = rc.Pem });
            await _replica.PostAsync<TrustedCertificateInfo>("/v1/host/trusted", new TrustAddRequest { Pem = pc.Pem });
            var port = FreePort();
            await _replica.PostAsync<ReplicaServerInfo>("/v1/replica-server/enable", new ReplicaServerEnableRequest { Listen = $"https://127.0.0.1:{port}" });
            var storage = Path.Combine(ReplicaData, "replicas");
            Directory.CreateDirectory(storage);
            await _replica.PostAsync<ReplicaServerInfo>("/v1/replica-server/authorizations", new ReplicaAuthorizationRequest { Primary = "*", Storage = storage, TrustGroup = "g1", Thumbprint = pc.Thumbprint });
            var server = await _replica.GetAsync<ReplicaServerInfo>("/v1/replica-server");
            if (!server.Listening) throw new InvalidOperationException("the replica server does not listen: " + server.ListenError);
            _relay = new Relay(new IPEndPoint(IPAddress.Loopback, port));
            _relayUrl = $"https://127.0.0.1:{_relay.Port}";
            Log($"hosts {pc.Name} → {rc.Name}: replica server on port {port}, counting relay on {_relay.Port}");
        }

        private static int FreePort()
        {
            var l = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
            l.Start();
            var port = ((IPEndPoint)l.LocalEndpoint).Port;
            l.Stop();
            return port;
        }

        private async Task<VmInfo> CreateVmAsync(string name, long size)
        {
            await Primary.PostAsync<VmInfo>("/v1/vms", new VmCreateRequest
            {
                Name = name, MemoryMiB = 64, Vcpus = 1, Disks = [new DiskSpec { SizeBytes = size }],
                GuestAgent = false, Accelerator = "tcg", CheckpointType = CheckpointType.Standard,
            });
            var info = await Primary.PostAsync<VmInfo>($"/v1/vms/{name}/start", null);
            if (info.Pid is { } pid) _qemuPids.Add(pid);
            return info;
        }

        private Task EnableAsync(string vm, bool compression, int frequency, DateTimeOffset? startAt) =>
            Primary.PostAsync<ReplicationStatusInfo>($"/v1/vms/{vm}/replication", new ReplicationEnableRequest
            {
                Replica = _relayUrl, ReplicaName = ReplicaName, FrequencySeconds = frequency, AdditionalPoints = 0,
                Compression = compression, StartAt = startAt,
            });

        private async Task RetireAsync(IEnumerable<string> vms)
        {
            foreach (var vm in vms)
            {
                try { await Primary.DeleteAsync($"/v1/vms/{vm}/replication"); } catch (InvalidOperationException e) { Log("  " + e.Message); }
                try { await Primary.PostAsync<VmInfo>($"/v1/vms/{vm}/stop", new VmStopRequest { Force = true }); } catch (InvalidOperationException e) { Log("  " + e.Message); }
                try { await Primary.DeleteAsync($"/v1/vms/{vm}"); } catch (InvalidOperationException e) { Log("  " + e.Message); }
            }
        }

        // ---- changes through QEMU ------------------------------------------------------------------------------

        /// <summary>What to write into one VM: pieces (offset, source file of the piece's bytes).</summary>
        private sealed record Write(VmInfo Vm, List<(long Offset, string Source, int Length)> Pieces);

        /// <summary>
        /// Source files holding <paramref name="bytes"/> of random or log-like text bytes, in pieces of at most 4 MiB,
        /// each with its own content; and distinct piece-aligned offsets for them (never the first 4 MiB).
        /// </summary>
        private List<(long Offset, string Source, int Length)> Plan(long bytes, string kind, long diskSize, Xoshiro rng)
        {
            var piece = (int)Math.Min(bytes, Piece);
            var count = (int)((bytes + piece - 1) / piece);
            var slots = diskSize / piece;
            var chosen = new HashSet<long>();
            while (chosen.Count < count)
            {
                var slot = (long)rng.Below((ulong)slots);
                if (slot * piece >= Piece) chosen.Add(slot);
            }
            var list = new List<(long, string, int)>();
            foreach (var slot in chosen.Order())
            {
                var length = (int)Math.Min(piece, bytes - (long)list.Count * piece);
                var path = Path.Combine(Sources, $"piece-{_sourceCounter++}.bin");
                var buffer = new byte[length];
                if (kind == "random") FillRandom(buffer, rng);
                else FillText(buffer, rng);
                File.WriteAllBytes(path, buffer);
                list.Add((slot * piece, path, length));
            }
            return list;
        }

        private static void FillRandom(byte[] buffer, Xoshiro rng)
        {
            for (var i = 0; i + 8 <= buffer.Length; i += 8) BitConverter.TryWriteBytes(buffer.AsSpan(i), rng.Next());
        }

        private static readonly string[] Hosts = ["web-01", "web-02", "db-01", "cache-01", "worker-03"];
        private static readonly string[] Services = ["nginx", "postgres", "systemd", "kernel", "sshd", "cron", "app", "redis"];
        private static readonly string[] Levels = ["INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"];
        private static readonly string[] Words = ["GET", "POST", "request", "completed", "started", "session", "user", "connection", "from",
            "closed", "timeout", "retry", "query", "rows", "cache", "miss", "hit", "accepted", "port", "link", "up", "down", "ok", "failed"];
        private static readonly string[] Paths = ["/api/v1/items", "/api/v1/users", "/static/app.js", "/index.html", "/healthz", "/api/v2/orders"];

        /// <summary>Log-like lines (zstd compresses them several times), as a VM's logs or text files.</summary>
        private static void FillText(byte[] buffer, Xoshiro rng)
        {
            var sb = new StringBuilder(buffer.Length + 256);
            var t = new DateTime(2026, 11, 24, 0, 0, 0, DateTimeKind.Utc).AddSeconds(rng.Below(86400));
            while (sb.Length < buffer.Length)
            {
                t = t.AddMilliseconds(rng.Below(2000));
                sb.Append(t.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", CultureInfo.InvariantCulture)).Append(' ')
                    .Append(Hosts[rng.Below((ulong)Hosts.Length)]).Append(' ').Append(Services[rng.Below((ulong)Services.Length)])
                    .Append('[').Append(1000 + rng.Below(30000)).Append("]: ").Append(Levels[rng.Below((ulong)Levels.Length)]);
                var words = 3 + (int)rng.Below(8);
                for (var w = 0; w < words; w++) sb.Append(' ').Append(Words[rng.Below((ulong)Words.Length)]);
                sb.Append(' ').Append(Paths[rng.Below((ulong)Paths.Length)]).Append(" id=").Append(rng.Next().ToString("x8", CultureInfo.InvariantCulture)[..8])
                    .Append(" took=").Append(rng.Below(5000)).Append("ms\n");
            }
            Encoding.ASCII.GetBytes(sb.ToString(0, buffer.Length), buffer);
        }

        /// <summary>
        /// Stops the primary havend (QEMU's QMP socket takes one client; the VMs keep running), writes through
        /// qemu-io inside each QEMU, and starts havend again.
        /// </summary>
        private async Task WriteAsync(IEnumerable<Write> writes)
        {
            await Primary.DisposeAsync();
            _primary = null;
            foreach (var w in writes)
            {
                var device = w.Vm.Disks[0].DeviceId;
                await using var qmp = await QmpClient.ConnectAsync(w.Vm.QmpSocket, TimeSpan.FromSeconds(30));
                foreach (var (offset, source, length) in w.Pieces)
                    await Hmp(qmp, $"qemu-io -d /machine/peripheral/{device}/virtio-backend \"write -s {source} {offset} {length}\"");
                await Hmp(qmp, $"qemu-io -d /machine/peripheral/{device}/virtio-backend \"flush\"");
            }
            _primary = await Havend.StartAsync(o.Havend, PrimaryData, Path.Combine(o.Dir, "primary.log"), PrimaryName);
        }

        private static async Task Hmp(QmpClient qmp, string command)
        {
            var text = (await qmp.ExecuteAsync("human-monitor-command", new JsonObject { ["command-line"] = command })).GetString() ?? "";
            if (text.Contains("error", StringComparison.OrdinalIgnoreCase) || text.Contains("fail", StringComparison.OrdinalIgnoreCase))
                throw new InvalidOperationException($"{command}: {text}");
        }

        // ---- parts 1 and 2: bytes on the wire, latency -------------------------------------------------------------

        private async Task<CycleRow> CycleAsync(string vm, string change, string kind, long changed, bool compression)
        {
            var before = _relay!.Counters;
            var sw = Stopwatch.StartNew();
            var r = await Primary.PostAsync<ReplicationCycleResult>($"/v1/vms/{vm}/replication/cycle", null);
            var clientMs = sw.Elapsed.TotalMilliseconds;
            await Task.Delay(200); // anything still in flight after the answer (acknowledgements, pings)
            var after = _relay.Counters;
            var row = new CycleRow(vm, change, kind, changed, compression, r, after.Up - before.Up, after.Down - before.Down, after.Connections - before.Connections, clientMs);
            Log($"  {vm} cycle {r.Cycle}{(r.Full ? " (full)" : "")}: {change} {kind}, data {Mib(r.DataBytes)}, wire ↑{Mib(row.Up)} ↓{Mib(row.Down)}, {r.WallMilliseconds:F0} ms");
            return row;
        }

        private async Task<(List<CycleRow> Initial, List<CycleRow> Rows, List<CycleRow> Latency, List<CycleRow> Idle)> WireAndLatencyAsync()
        {
            Log($"part 1/2: VMs plain and zstd ({Mib(o.DiskSize)} sparse disks), warm-plain and warm-zstd (64 MiB) for the JIT after each havend start");
            var vms = new Dictionary<string, (VmInfo Info, bool Compression, long Size)>
            {
                ["plain"] = (await CreateVmAsync("plain", o.DiskSize), false, o.DiskSize),
                ["zstd"] = (await CreateVmAsync("zstd", o.DiskSize), true, o.DiskSize),
                ["warm-plain"] = (await CreateVmAsync("warm-plain", 64L << 20), false, 64L << 20),
                ["warm-zstd"] = (await CreateVmAsync("warm-zstd", 64L << 20), true, 64L << 20),
            };
            var dayAhead = DateTimeOffset.UtcNow.AddDays(1);
            foreach (var (name, v) in vms) await EnableAsync(name, v.Compression, 300, dayAhead);

            var initial = new List<CycleRow>();
            foreach (var (name, v) in vms) initial.Add(await CycleAsync(name, "initial (empty disk)", "-", 0, v.Compression));

            var rng = new Xoshiro(o.Seed);
            var rows = new List<CycleRow>();
            async Task<List<CycleRow>> ChangeAndCycleAsync(long bytes, string kind)
            {
                Log($"writing {Mib(bytes)} of {kind} into plain and zstd (havend stopped)");
                var pieces = Plan(bytes, kind, o.DiskSize, rng);
                var warm = Plan(1L << 20, kind, 64L << 20, rng);
                await WriteAsync([
                    new Write(vms["plain"].Info, pieces), new Write(vms["zstd"].Info, pieces),
                    new Write(vms["warm-plain"].Info, warm), new Write(vms["warm-zstd"].Info, warm),
                ]);
                await CycleAsync("warm-plain", "warm-up", kind, 1L << 20, false);
                await CycleAsync("warm-zstd", "warm-up", kind, 1L << 20, true);
                var list = new List<CycleRow>
                {
                    await CycleAsync("plain", Mib(bytes), kind, bytes, false),
                    await CycleAsync("zstd", Mib(bytes), kind, bytes, true),
                };
                foreach (var f in Directory.GetFiles(Sources)) File.Delete(f);
                return list;
            }

            foreach (var size in o.Changes)
                foreach (var kind in o.Kinds)
                    rows.AddRange(await ChangeAndCycleAsync(size, kind));

            Log("nothing changed: one cycle each");
            var idle = new List<CycleRow>
            {
                await CycleAsync("plain", "nothing", "-", 0, false),
                await CycleAsync("zstd", "nothing", "-", 0, true),
            };

            var latency = new List<CycleRow>();
            var big = o.Changes.Max();
            for (var i = 0; i < o.LatencyCycles; i++)
                latency.AddRange(await ChangeAndCycleAsync(big, "random"));

            await RetireAsync(vms.Keys);
            return (initial, rows, latency, idle);
        }

        // ---- part 3: VMs per replica server --------------------------------------------------------------------

        private sealed record Snapshot(long Cycle, long Successful, double TotalSeconds, double MaxSeconds, long Failed, long Missed, string? LastError);

        private int _statusErrors;
        private string? _firstStatusError;

        /// <summary>The VM's replication status; an error answer is retried (and counted for the report's notes).</summary>
        private async Task<Snapshot> SnapAsync(string vm)
        {
            ReplicationStatusInfo? s = null;
            for (var attempt = 0; s is null; attempt++)
            {
                try { s = await Primary.GetAsync<ReplicationStatusInfo>($"/v1/vms/{vm}/replication"); }
                catch (InvalidOperationException e) when (attempt < 200)
                {
                    if (_statusErrors++ == 0) { _firstStatusError = e.Message; Log("  " + e.Message); }
                    await Task.Delay(100);
                }
            }
            return new Snapshot(s.LastCycle, s.SuccessfulCycles, s.AverageSeconds * s.SuccessfulCycles, s.MaxSeconds, s.FailedCycles, s.MissedCycles, s.LastError);
        }

        /// <summary>Waits until every VM's last cycle is at least <paramref name="cycle"/>; false on timeout.</summary>
        private async Task<(bool Done, double Seconds)> WaitCyclesAsync(IReadOnlyList<string> vms, long cycle, TimeSpan timeout)
        {
            var sw = Stopwatch.StartNew();
            while (sw.Elapsed < timeout)
            {
                var all = true;
                foreach (var vm in vms)
                    if ((await SnapAsync(vm)).Cycle < cycle) { all = false; break; }
                if (all) return (true, sw.Elapsed.TotalSeconds);
                await Task.Delay(250);
            }
            return (false, sw.Elapsed.TotalSeconds);
        }

        private async Task<List<ScaleStep>> ScaleAsync()
        {
            var steps = new List<ScaleStep>();
            var rng = new Xoshiro(o.Seed ^ 0x5CA1E);
            // A round whose cycles have not all finished two frequencies after havend came back has failed anyway.
            var timeout = TimeSpan.FromSeconds(o.Frequency * 2 + 30);
            foreach (var n in o.ScaleVms)
            {
                Log($"part 3: {n} VM(s) of {Mib(o.ScaleDisk)}, {Mib(o.ScaleChange)} random per cycle, every {o.Frequency} s, {o.ScaleCycles} cycles after the initial one");
                var names = Enumerable.Range(1, n).Select(i => $"s{n}-{i}").ToList();
                var infos = new List<VmInfo>();
                foreach (var name in names) infos.Add(await CreateVmAsync(name, o.ScaleDisk));
                var idleCpu = await QemuIdleCpuAsync(infos);
                var wireBefore = _relay!.Counters.Up;
                // The initial replication: the scheduler starts it at once (startAt null) for every VM.
                foreach (var name in names) await EnableAsync(name, o.ScaleCompression, o.Frequency, null);
                var errors = new List<string>();
                var timedOut = false;
                var (done, _) = await WaitCyclesAsync(names, 1, timeout);
                timedOut |= !done;
                var snaps = new List<Snapshot>();
                foreach (var name in names) snaps.Add(await SnapAsync(name));
                var initial = snaps.Select(s => s.TotalSeconds).ToList();
                var latencies = new List<double>();
                var walls = new List<double>();
                for (var round = 1; round <= o.ScaleCycles && !timedOut; round++)
                {
                    var writes = infos.Select(vm => new Write(vm, Plan(o.ScaleChange, "random", o.ScaleDisk, rng))).ToList();
                    await WriteAsync(writes);
                    foreach (var f in Directory.GetFiles(Sources)) File.Delete(f);
                    // havend's scheduler starts each VM's cycle one frequency after its last success.
                    var (ok, seconds) = await WaitCyclesAsync(names, round + 1, timeout);
                    walls.Add(seconds);
                    if (!ok) { timedOut = true; errors.Add($"round {round}: not every VM finished within {timeout.TotalSeconds:F0} s"); }
                    for (var i = 0; i < n; i++)
                    {
                        var s = await SnapAsync(names[i]);
                        if (s.Successful > snaps[i].Successful) latencies.Add((s.TotalSeconds - snaps[i].TotalSeconds) / (s.Successful - snaps[i].Successful));
                        snaps[i] = s;
                    }
                    Log($"  round {round}: all {n} cycles done {seconds:F1} s after havend came back; latencies so far avg {(latencies.Count > 0 ? latencies.Average() : 0):F2} s, max {(latencies.Count > 0 ? latencies.Max() : 0):F2} s");
                }
                var final = new List<Snapshot>();
                foreach (var name in names) final.Add(await SnapAsync(name));
                foreach (var (name, s) in names.Zip(final))
                    if (s.LastError is { } err) errors.Add($"{name}: {err}");
                var step = new ScaleStep(n, initial.Average(), initial.Max(), latencies, walls, final.Sum(s => s.Successful), final.Sum(s => s.Failed),
                    final.Sum(s => s.Missed), (long)n * (o.ScaleCycles + 1), timedOut, _relay.Counters.Up - wireBefore, errors, idleCpu);
                steps.Add(step);
                Log($"  {n} VM(s): {step.Successful} successful, {step.Failed} failed, {step.Missed} missed; {(step.Sustained(o.Frequency) ? "sustained" : "NOT sustained")}");
                await RetireAsync(names);
                if (!step.Sustained(o.Frequency) && !o.ScaleAll) break;
            }
            return steps;
        }

        /// <summary>CPU seconds per second the idle QEMU processes (TCG, firmware only) use together, over 2 s.</summary>
        private static async Task<double> QemuIdleCpuAsync(List<VmInfo> vms)
        {
            double Sum() => vms.Sum(v => v.Pid is { } pid && File.Exists($"/proc/{pid}/stat") ? CpuSeconds(pid) : 0);
            var a = Sum();
            await Task.Delay(2000);
            return (Sum() - a) / 2;
        }

        private static double CpuSeconds(int pid)
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            var f = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return (double.Parse(f[11], CultureInfo.InvariantCulture) + double.Parse(f[12], CultureInfo.InvariantCulture)) / 100.0;
        }

        // ---- report --------------------------------------------------------------------------------------------

        private static string Mib(long bytes) => bytes >= 1 << 20 && bytes % (1 << 20) == 0 ? $"{bytes >> 20} MiB" : $"{bytes / 1048576.0:F2} MiB";

        private static string Ratio(long a, long b) => b == 0 ? "–" : $"{(double)a / b:F3}";

        private string Report(Machine m, DateTimeOffset started, List<CycleRow> initial, List<CycleRow> rows, List<CycleRow> latency, List<CycleRow> idle, List<ScaleStep> steps)
        {
            var sb = new StringBuilder();
            sb.AppendLine("# Haven replication benchmark").AppendLine();
            sb.AppendLine($"Command: `{o.Command}`  ").AppendLine($"Started {started:yyyy-MM-dd HH:mm} UTC, took {_clock.Elapsed.TotalMinutes:F1} min.").AppendLine();
            sb.AppendLine("| machine | |").AppendLine("| --- | --- |");
            sb.AppendLine($"| CPU | {m.Cores} × {m.Cpu} |").AppendLine($"| memory | {m.MemoryMiB} MiB |").AppendLine($"| OS, kernel | {m.Os}, {m.Kernel} |");
            sb.AppendLine($"| disk ({o.Dir}) | {m.Disk} |").AppendLine($"| QEMU | {m.Qemu} |").AppendLine($"| runtime | {m.DotNet} |");
            sb.AppendLine($"| Haven | {m.HavenCommit} at the start; `havend` built {File.GetLastWriteTimeUtc(o.Havend):yyyy-MM-dd HH:mm} UTC |").AppendLine($"| load average at the end | {Machine.ReadLoadAverage()} |").AppendLine();
            sb.AppendLine($"Two `havend` processes on this machine ({PrimaryName} → {ReplicaName}), mutual TLS on loopback through a counting TCP relay. " +
                "VMs run QEMU TCG with firmware only; changes are written through `qemu-io` in the running QEMU (the primary `havend` is stopped while the benchmark holds QMP). " +
                "Wire bytes are everything that crossed the relay during the cycle (TLS, HTTP/2, gRPC included); ↑ is primary → replica.").AppendLine();

            sb.AppendLine($"## 1. Bytes on the wire per cycle ({Mib(o.DiskSize)} sparse disk)").AppendLine();
            sb.AppendLine("| change | data | compression | Haven data bytes | extents | wire ↑ | wire ↓ | ↑ / changed | cycle (server) | cycle (client) |");
            sb.AppendLine("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
            foreach (var r in initial.Where(r => r.Vm is "plain" or "zstd").Concat(rows).Concat(idle))
                sb.AppendLine($"| {r.Change} | {r.Kind} | {(r.Compression ? "zstd" : "off")} | {Mib(r.Result.DataBytes)} | {r.Result.Extents} | {Mib(r.Up)} | {Mib(r.Down)} | " +
                    $"{Ratio(r.Up, r.Changed)} | {r.Result.WallMilliseconds:F0} ms | {r.ClientMs:F0} ms |");
            sb.AppendLine();

            sb.AppendLine($"## 2. Cycle latency, {Mib(o.Changes.Max())} of changes on a {Mib(o.DiskSize)} sparse disk (VM running)").AppendLine();
            var big = rows.Where(r => r.Changed == o.Changes.Max()).Concat(latency).ToList();
            sb.AppendLine("| compression | data | cycles | server avg | server min | server max | client avg | wire ↑ avg | max wire ↑ / changed |");
            sb.AppendLine("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
            foreach (var g in big.GroupBy(r => (r.Compression, r.Kind)))
                sb.AppendLine($"| {(g.Key.Compression ? "zstd" : "off")} | {g.Key.Kind} | {g.Count()} | {g.Average(r => r.Result.WallMilliseconds):F0} ms | {g.Min(r => r.Result.WallMilliseconds):F0} ms | " +
                    $"{g.Max(r => r.Result.WallMilliseconds):F0} ms | {g.Average(r => r.ClientMs):F0} ms | {Mib((long)g.Average(r => r.Up))} | {g.Max(r => (double)r.Up / r.Changed):F4} |");
            sb.AppendLine();
            sb.AppendLine("Each measured cycle runs right after a restart of the primary `havend`, after one warm-up cycle of a 1 MiB change on a small VM with the same compression setting.").AppendLine();

            sb.AppendLine($"## 3. VMs one replica server sustains at {o.Frequency} s").AppendLine();
            sb.AppendLine($"{Mib(o.ScaleDisk)} disks, {Mib(o.ScaleChange)} of random changes per VM per cycle, compression {(o.ScaleCompression ? "zstd" : "off")}, " +
                $"{o.ScaleCycles} cycles per VM after the initial one (of the empty disk), each started by havend's scheduler one frequency after the VM's last success. Latencies from `GET /v1/vms/{{name}}/replication` (successful cycles, average and max), per cycle from the differences between rounds.").AppendLine();
            sb.AppendLine("| VMs | cycles ok / expected | failed | missed | initial avg / max | cycle avg | cycle max | idle QEMU CPU | wire ↑ | sustained |");
            sb.AppendLine("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
            foreach (var s in steps)
                sb.AppendLine($"| {s.Vms} | {s.Successful} / {s.ExpectedCycles} | {s.Failed} | {s.Missed} | {s.InitialAvg:F2} s / {s.InitialMax:F2} s | " +
                    $"{(s.Latencies.Count > 0 ? s.Latencies.Average() : double.NaN):F2} s | {(s.Latencies.Count > 0 ? s.Latencies.Max() : double.NaN):F2} s | " +
                    $"{s.QemuIdleCpu:F2} cores | {Mib(s.WireUp)} | {(s.Sustained(o.Frequency) ? "yes" : "**no**")} |");
            sb.AppendLine();
            var errors = steps.SelectMany(s => s.Errors.Select(e => $"{s.Vms} VM(s): {e}")).ToList();
            var odd = rows.Concat(latency).Where(r => r.Up > r.Changed * 1.05 + (256 << 10)).Select(r => $"{r.Vm} {r.Change} {r.Kind}: {Mib(r.Up)} on the wire for {Mib(r.Changed)} changed").ToList();
            odd.AddRange(rows.Concat(latency).Where(r => r.Result.DataBytes != r.Changed).Select(r => $"{r.Vm} {r.Change} {r.Kind}: Haven sent {Mib(r.Result.DataBytes)} of data for {Mib(r.Changed)} changed"));
            if (_statusErrors > 0)
                _notes.Add($"`GET /v1/vms/{{name}}/replication` answered with an error {_statusErrors} time(s) while polling (retried), first: {_firstStatusError}");
            if (errors.Count + odd.Count + _notes.Count > 0)
            {
                sb.AppendLine("## Notes").AppendLine();
                foreach (var e in errors.Concat(odd).Concat(_notes)) sb.AppendLine("- " + e);
                sb.AppendLine();
            }
            return sb.ToString();
        }

        // ---- clean-up ------------------------------------------------------------------------------------------

        public async Task CleanupAsync()
        {
            try
            {
                if (_primary is not null)
                    foreach (var vm in await _primary.GetAsync<List<VmInfo>>("/v1/vms"))
                        if (vm.State != VmState.Off)
                            try { await _primary.PostAsync<VmInfo>($"/v1/vms/{vm.Name}/stop", new VmStopRequest { Force = true }); } catch (InvalidOperationException) { }
            }
            catch (Exception e) { Log("clean-up: " + e.Message); }
            if (_primary is not null) await _primary.DisposeAsync();
            if (_replica is not null) await _replica.DisposeAsync();
            if (_relay is not null) await _relay.DisposeAsync();
            foreach (var pid in _qemuPids)
            {
                try
                {
                    // Only a live QEMU (a zombie waiting for its parent to reap it is already gone, as havend sees it).
                    var stat = File.ReadAllText($"/proc/{pid}/stat");
                    if (stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[0] is "Z" or "X") continue;
                    using var p = Process.GetProcessById(pid);
                    if (p.ProcessName.StartsWith("qemu", StringComparison.Ordinal)) { p.Kill(); Log($"clean-up: QEMU {pid} was still running, killed"); }
                }
                catch (Exception e) when (e is ArgumentException or InvalidOperationException or IOException) { }
            }
            if (!o.Keep && Directory.Exists(o.Dir))
                foreach (var d in new[] { PrimaryData, ReplicaData, Sources })
                    try { if (Directory.Exists(d)) Directory.Delete(d, true); } catch (IOException e) { Log("clean-up: " + e.Message); }
        }
    }
}
