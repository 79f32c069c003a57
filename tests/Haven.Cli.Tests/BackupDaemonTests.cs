using System.Text.Json;
using Haven.Api;

namespace Haven.Cli.Tests;

/// <summary>The backup commands against a canned fake havend: requests sent, NDJSON streams read, output printed.</summary>
public class BackupDaemonTests
{
    const string Ndjson = "application/x-ndjson";

    const string ResultJson = """
        {"backupId":"b-20250102-0001","vm":"web","mode":"full","reason":"no earlier backup of this VM in the repository",
         "consistency":"ApplicationConsistent","bytesRead":1073741824,"chunksRead":1024,"bytesNew":10485760,"chunksNew":10,
         "chunksZero":900,"chunksReused":114,"frozenMilliseconds":42.5,"wallMilliseconds":12300}
        """;

    static string Line(string json) => JsonSerializer.Serialize(JsonDocument.Parse(json).RootElement) + "\n";

    static string Progress(int disk, int count, long done, long total) =>
        Line($$"""{"type":"progress","phase":"reading","disk":{{disk}},"diskCount":{{count}},"bytesDone":{{done}},"bytesTotal":{{total}}}""");

    static string Stream(params string[] lines) => string.Concat(lines);

    static Dictionary<string, string> Env(FakeHavend daemon) =>
        new(daemon.Env) { ["HAVEN_REPO"] = "/srv/repo", ["HAVEN_PASSPHRASE"] = "pw" };

    [Fact]
    public async Task BackupStreamWithProgressThenResultPrintsTheSummary()
    {
        var body = Stream(Progress(0, 2, 0, 1000), Progress(0, 2, 500, 1000), Progress(1, 2, 10, 20), Line("""{"type":"result","result":""" + ResultJson + "}"));
        using var daemon = new FakeHavend(200, body, contentType: Ndjson);
        var run = await CliRun.RunAsync(Env(daemon), "backup", "web");

        Assert.Equal(0, run.ExitCode);
        Assert.Equal("", run.Error);
        Assert.DoesNotContain("\u001b[", run.Out); // no progress bar without a terminal
        Assert.Contains("Backed up VM 'web' as backup b-20250102-0001.", run.Out);
        Assert.Matches(@"(?m)^Mode\s+full \(no earlier backup of this VM in the repository\)$", run.Out);
        Assert.Matches(@"(?m)^Consistency\s+application-consistent$", run.Out);
        Assert.Matches(@"(?m)^Read\s+1 GiB$", run.Out);
        Assert.Matches(@"(?m)^New\s+10 MiB \(after deduplication\)$", run.Out);
        Assert.Matches(@"(?m)^Chunks\s+1024 read, 10 new, 900 zero, 114 reused$", run.Out);
        Assert.Matches(@"(?m)^Frozen\s+43 ms$", run.Out);
        Assert.Matches(@"(?m)^Wall time\s+12.3 s$", run.Out);

        var request = Assert.Single(daemon.Requests);
        Assert.Equal("POST /v1/vms/web/backup", $"{request.Method} {request.Target}");
        Assert.Contains(Ndjson, request.Headers["Accept"]);
        Assert.Equal("Bearer " + FakeHavend.TokenValue, request.Headers["Authorization"]);
        var sent = JsonSerializer.Deserialize<BackupRequest>(request.Body, ApiJson.Options)!;
        Assert.Equal(new BackupRequest { Repository = "/srv/repo", Passphrase = "pw" }, sent);
    }

    [Fact]
    public async Task IncrementalWithoutFreezeSaysSo()
    {
        var result = """{"backupId":"b2","vm":"db","mode":"incremental","consistency":"CrashConsistent","bytesRead":0,"chunksRead":0,"bytesNew":0,"chunksNew":0,"chunksZero":0,"chunksReused":0,"wallMilliseconds":850}""";
        using var daemon = new FakeHavend(200, Line("""{"type":"result","result":""" + result + "}"), contentType: Ndjson);
        var run = await CliRun.RunAsync(Env(daemon), "backup", "db");

        Assert.Equal(0, run.ExitCode);
        Assert.Matches(@"(?m)^Mode\s+incremental$", run.Out);
        Assert.Matches(@"(?m)^Consistency\s+crash-consistent$", run.Out);
        Assert.Matches(@"(?m)^Frozen\s+no \(guest file systems not frozen\)$", run.Out);
        Assert.Matches(@"(?m)^Wall time\s+850 ms$", run.Out);
    }

    [Fact]
    public async Task BackupJsonPrintsOnlyTheResult()
    {
        var body = Stream(Progress(0, 1, 0, 1000), Progress(0, 1, 1000, 1000), Line("""{"type":"result","result":""" + ResultJson + "}"));
        using var daemon = new FakeHavend(200, body, contentType: Ndjson);
        var run = await CliRun.RunAsync(Env(daemon), "backup", "web", "--json");

        Assert.Equal(0, run.ExitCode);
        Assert.Equal("", run.Error);
        var printed = JsonSerializer.Deserialize<BackupResult>(run.Out, ApiJson.Options); // throws if anything but JSON is on stdout
        Assert.Equal(JsonSerializer.Deserialize<BackupResult>(ResultJson, ApiJson.Options), printed);
        using var doc = JsonDocument.Parse(run.Out);
        Assert.Equal("b-20250102-0001", doc.RootElement.GetProperty("backupId").GetString());
        Assert.False(doc.RootElement.TryGetProperty("type", out _));
        Assert.StartsWith("{\n  \"backupId\"", run.Out.ReplaceLineEndings("\n"));
    }

    [Theory]
    [InlineData("invalid_argument", 2)]
    [InlineData("not_found", 3)]
    [InlineData("conflict", 4)]
    [InlineData("failed", 1)]
    [InlineData("internal", 1)]
    public async Task BackupStreamEndingWithAnErrorMapsLikeAnErrorResponse(string code, int exitCode)
    {
        var body = Stream(Progress(0, 1, 0, 1000), Progress(0, 1, 400, 1000),
            Line($$$"""{"type":"error","error":{"error":"repository is locked by another backup","code":"{{{code}}}"}}"""));
        using var daemon = new FakeHavend(200, body, contentType: Ndjson);
        var run = await CliRun.RunAsync(Env(daemon), "backup", "web");

        Assert.Equal(exitCode, run.ExitCode);
        Assert.Equal(["haven: repository is locked by another backup"], run.ErrorLines);
        Assert.Equal("", run.Out);

        // The same answer as a non-2xx ErrorResponse gives the same line and exit code.
        using var plain = new FakeHavend(code == "not_found" ? 404 : 400, $$"""{"error":"repository is locked by another backup","code":"{{code}}"}""");
        var plainRun = await CliRun.RunAsync(Env(plain), "backup", "web");
        Assert.Equal((run.ExitCode, run.Error), (plainRun.ExitCode, plainRun.Error));
    }

    [Fact]
    public async Task BackupErrorWithJsonStillGoesToStderrOnly()
    {
        var body = Line("""{"type":"error","error":{"error":"VM 'web' not found","code":"not_found"}}""");
        using var daemon = new FakeHavend(200, body, contentType: Ndjson);
        var run = await CliRun.RunAsync(Env(daemon), "--json", "backup", "web");

        Assert.Equal(3, run.ExitCode);
        Assert.Equal("", run.Out);
        Assert.Equal(["haven: VM 'web' not found"], run.ErrorLines);
    }

    [Fact]
    public async Task BackupStreamWithoutAResultIsALostConnection()
    {
        using var daemon = new FakeHavend(200, Stream(Progress(0, 1, 0, 1000), Progress(0, 1, 400, 1000)), contentType: Ndjson);
        var run = await CliRun.RunAsync(Env(daemon), "backup", "web");

        Assert.Equal(1, run.ExitCode);
        Assert.Equal("", run.Out);
        var line = Assert.Single(run.ErrorLines);
        Assert.StartsWith($"haven: lost connection to havend at {daemon.SocketPath}: ", line);
        Assert.Contains("ended without a result", line);
    }

    [Fact]
    public async Task BackupStreamWithGarbageIsExit1()
    {
        using var daemon = new FakeHavend(200, Progress(0, 1, 0, 10) + "<html>oops</html>\n", contentType: Ndjson);
        var run = await CliRun.RunAsync(Env(daemon), "backup", "web");

        Assert.Equal(1, run.ExitCode);
        Assert.StartsWith("haven: havend sent a line in its answer to POST /v1/vms/web/backup that is not an OperationEvent", run.Error);
    }

    [Fact]
    public async Task UnknownEventTypesAndBlankLinesAreSkipped()
    {
        var body = Stream("\n", Line("""{"type":"notice","phase":"thawed"}"""), Line("""{"type":"result","result":""" + ResultJson + "}"));
        using var daemon = new FakeHavend(200, body, contentType: Ndjson);
        var run = await CliRun.RunAsync(Env(daemon), "backup", "web");

        Assert.Equal(0, run.ExitCode);
        Assert.Contains("as backup b-20250102-0001.", run.Out);
    }

    [Fact]
    public async Task PlainJsonAnswerToABackupIsAcceptedToo()
    {
        using var daemon = new FakeHavend(200, ResultJson); // a havend that does not stream
        var run = await CliRun.RunAsync(Env(daemon), "backup", "web");

        Assert.Equal(0, run.ExitCode);
        Assert.Contains("Backed up VM 'web' as backup b-20250102-0001.", run.Out);
    }

    [Fact]
    public async Task BackupOnATerminalDrawsProgressAndPrintsTheSummary()
    {
        var body = Stream(Progress(0, 2, 0, 1000), Progress(0, 2, 500, 1000), Progress(1, 2, 0, 0), Line("""{"type":"result","result":""" + ResultJson + "}"));
        using var daemon = new FakeHavend(200, body, contentType: Ndjson);
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var env = Env(daemon);
        var code = await HavenCli.RunAsync(["backup", "web"], new CliEnvironment
        {
            Out = stdout,
            Error = stderr,
            GetEnv = name => env.GetValueOrDefault(name),
            OutIsTerminal = true,
        }, TestContext.Current.CancellationToken);

        Assert.Equal(0, code);
        Assert.Equal("", stderr.ToString());
        Assert.Contains("Backed up VM 'web' as backup b-20250102-0001.", stdout.ToString());
    }

    [Fact]
    public async Task BackupNameIsCheckedBeforeTheRequest()
    {
        using var daemon = new FakeHavend(200, "{}");
        var run = await CliRun.RunAsync(Env(daemon), "backup", "../etc");

        Assert.Equal(2, run.ExitCode);
        Assert.Empty(daemon.Requests);
    }

    const string BackupsJson = """
        [{"id":"b3","vm":"web","createdAt":"2025-01-03T03:00:00+00:00","mode":"incremental","host":"h1","sizeBytes":2147483648},
         {"id":"b1","vm":"web","createdAt":"2025-01-01T03:00:00+00:00","mode":"full","host":"h1","sizeBytes":2147483648},
         {"id":"b2","vm":"db","createdAt":"2025-01-02T03:00:00+00:00","mode":"full","host":"h2","sizeBytes":1073741824}]
        """;

    [Fact]
    public async Task BackupsListIsATableOldestFirst()
    {
        using var daemon = new FakeHavend(200, BackupsJson);
        var run = await CliRun.RunAsync(Env(daemon), "backups", "list");

        Assert.Equal(0, run.ExitCode);
        var lines = run.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Matches(@"^ID\s+VM\s+CREATED\s+MODE\s+HOST\s+SIZE\s*$", lines[0]);
        Assert.Equal(["b1", "b2", "b3"], lines.Skip(1).Select(l => l.Split(' ')[0]));
        Assert.Matches(@"^b2\s+db\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+full\s+h2\s+1 GiB\s*$", lines[2]);

        var request = Assert.Single(daemon.Requests);
        Assert.Equal("POST /v1/repo/backups", $"{request.Method} {request.Target}");
        Assert.Equal(new RepositoryRef { Repository = "/srv/repo", Passphrase = "pw" }, JsonSerializer.Deserialize<RepositoryRef>(request.Body, ApiJson.Options));
    }

    [Fact]
    public async Task BackupsListFiltersByVm()
    {
        using var daemon = new FakeHavend(200, BackupsJson);
        var run = await CliRun.RunAsync(Env(daemon), "backups", "ls", "--vm", "web", "--json");

        Assert.Equal(0, run.ExitCode);
        var list = JsonSerializer.Deserialize<List<BackupInfo>>(run.Out, ApiJson.Options)!;
        Assert.Equal(["b3", "b1"], list.Select(b => b.Id)); // havend's order, filtered

        run = await CliRun.RunAsync(Env(daemon), "backups", "list", "--vm", "mail");
        Assert.Equal(0, run.ExitCode);
        Assert.Equal("No backups of VM 'mail'.", run.Out.Trim());
    }

    [Fact]
    public async Task RepoInitSendsTheChunkSize()
    {
        using var daemon = new FakeHavend(200, """{"id":"r-1","location":"/srv/repo","chunkSize":4194304}""");
        var run = await CliRun.RunAsync(Env(daemon), "repo", "init", "--chunk-size", "4M");

        Assert.Equal(0, run.ExitCode);
        Assert.Contains("Created repository r-1 at /srv/repo (chunk size 4 MiB).", run.Out);
        var request = Assert.Single(daemon.Requests);
        Assert.Equal("POST /v1/repo/init", $"{request.Method} {request.Target}");
        Assert.Equal("""{"chunkSize":4194304,"repository":"/srv/repo","passphrase":"pw"}""", request.Body);
    }

    [Fact]
    public async Task RepoInitConflictIsExit4()
    {
        using var daemon = new FakeHavend(409, """{"error":"a repository already exists at /srv/repo","code":"conflict"}""");
        var run = await CliRun.RunAsync(Env(daemon), "repo", "init");

        Assert.Equal(4, run.ExitCode);
        Assert.Equal(["haven: a repository already exists at /srv/repo"], run.ErrorLines);
        Assert.DoesNotContain("chunkSize", daemon.Requests[0].Body); // havend's default
    }

    [Fact]
    public async Task RestoreOneDiskSendsAnAbsoluteTarget()
    {
        using var daemon = new FakeHavend(200, """{"files":["/tmp/out/d1.raw"],"bytesWritten":1073741824,"wallMilliseconds":2500}""");
        var run = await CliRun.RunAsync(Env(daemon), "restore", "b1", "--disk", "1", "--to", "out/d1.raw", "--format", "raw");

        Assert.Equal(0, run.ExitCode);
        Assert.Contains("Restored disk 1 of backup b1 (1 GiB written in 2.5 s) to:", run.Out);
        Assert.Contains("  /tmp/out/d1.raw", run.Out);
        var request = Assert.Single(daemon.Requests);
        Assert.Equal("POST /v1/repo/restore", $"{request.Method} {request.Target}");
        var sent = JsonSerializer.Deserialize<RestoreRequest>(request.Body, ApiJson.Options)!;
        Assert.Equal(new RestoreRequest
        {
            Repository = "/srv/repo",
            Passphrase = "pw",
            BackupId = "b1",
            Disk = 1,
            TargetPath = Path.GetFullPath("out/d1.raw"),
            Format = "raw",
        }, sent);
    }

    [Fact]
    public async Task RestoreAsNewVm()
    {
        using var daemon = new FakeHavend(200, """{"vm":"web2","files":[],"bytesWritten":2147483648,"wallMilliseconds":65000}""");
        var run = await CliRun.RunAsync(Env(daemon), "restore", "b1", "--name", "web2");

        Assert.Equal(0, run.ExitCode);
        Assert.Equal("Restored backup b1 as new VM 'web2' (2 GiB written in 1 min 5 s).", run.Out.Trim());
        Assert.Contains("\"newName\":\"web2\"", daemon.Requests[0].Body);
        Assert.Contains("\"inPlace\":false", daemon.Requests[0].Body);
    }

    [Fact]
    public async Task RestoreInPlaceConflictIsExit4()
    {
        using var daemon = new FakeHavend(409, """{"error":"VM 'web' is running; stop it first","code":"conflict"}""");
        var run = await CliRun.RunAsync(Env(daemon), "restore", "b1", "--in-place");

        Assert.Equal(4, run.ExitCode);
        Assert.Equal(["haven: VM 'web' is running; stop it first"], run.ErrorLines);
        Assert.Contains("\"inPlace\":true", daemon.Requests[0].Body);
    }

    const string HealthyVerify = """
        {"dataRead":true,"backupsChecked":3,"chunksReferenced":2048,"chunksPresent":2048,"chunksRead":2048,
         "corruptManifests":[],"missingChunks":[],"corruptChunks":[],"damagedBackups":[],"isHealthy":true}
        """;

    [Fact]
    public async Task RepoVerifyPrintsTheAnswerFieldByField()
    {
        using var daemon = new FakeHavend(200, HealthyVerify);
        var run = await CliRun.RunAsync(Env(daemon), "repo", "verify", "--read-data");

        Assert.Equal(0, run.ExitCode);
        Assert.Equal("", run.Error);
        Assert.Contains("Verified repository /srv/repo (structure and data):", run.Out);
        Assert.Matches(@"(?m)^Backups checked\s+3$", run.Out);
        Assert.Matches(@"(?m)^Chunks referenced\s+2048$", run.Out);
        Assert.Matches(@"(?m)^Missing chunks\s+none$", run.Out);
        Assert.Matches(@"(?m)^Is healthy\s+yes$", run.Out);
        var request = Assert.Single(daemon.Requests);
        Assert.Equal("POST /v1/repo/verify", $"{request.Method} {request.Target}");
        Assert.Equal("""{"readData":true,"repository":"/srv/repo","passphrase":"pw"}""", request.Body);
    }

    [Fact]
    public async Task RepoVerifyOfADamagedRepositoryIsExit1()
    {
        var body = """
            {"dataRead":false,"backupsChecked":2,"chunksReferenced":10,"chunksPresent":9,"chunksRead":0,"corruptManifests":[],
             "missingChunks":[{"chunkId":"ab12","backupIds":["b1","b2"],"reason":"missing"}],"corruptChunks":[],
             "damagedBackups":["b1","b2"],"isHealthy":false}
            """;
        using var daemon = new FakeHavend(200, body);
        var run = await CliRun.RunAsync(Env(daemon), "repo", "verify");

        Assert.Equal(1, run.ExitCode);
        Assert.Equal(["haven: verify found problems in the repository; 2 backup(s) cannot be fully restored: b1, b2"], run.ErrorLines);
        Assert.Matches(@"(?m)^Missing chunks \(1\):$", run.Out);
        Assert.Matches(@"(?m)^\s+CHUNK ID\s+BACKUP IDS\s+REASON\s*$", run.Out);
        Assert.Matches(@"(?m)^\s+ab12\s+b1, b2\s+missing\s*$", run.Out);

        run = await CliRun.RunAsync(Env(daemon), "repo", "verify", "--json");
        Assert.Equal(1, run.ExitCode);
        using var doc = JsonDocument.Parse(run.Out); // stdout holds havend's answer only
        Assert.False(doc.RootElement.GetProperty("isHealthy").GetBoolean());
    }

    [Fact]
    public async Task RepoPruneSendsTheRulesAndShowsTheLists()
    {
        var body = """
            {"dryRun":true,
             "kept":[{"backup":{"id":"b3","vmName":"web","createdAt":"2025-01-03T03:00:00+00:00","sizeBytes":2147483648},"reasons":["last","daily"]}],
             "removed":[{"id":"b1","vmName":"web","createdAt":"2025-01-01T03:00:00+00:00","sizeBytes":1073741824}]}
            """;
        using var daemon = new FakeHavend(200, body);
        var run = await CliRun.RunAsync(Env(daemon), "repo", "prune", "--keep-last", "1", "--keep-daily", "7", "--dry-run");

        Assert.Equal(0, run.ExitCode);
        Assert.Contains("Dry run on repository /srv/repo: nothing was removed.", run.Out);
        Assert.Matches(@"(?m)^Kept \(1\):$", run.Out);
        Assert.Matches(@"(?m)^\s+ID\s+VM NAME\s+CREATED AT\s+SIZE BYTES\s+REASONS\s*$", run.Out);
        Assert.Matches(@"(?m)^\s+b3\s+web\s+\S+ \S+\s+2 GiB\s+last, daily\s*$", run.Out);
        Assert.Matches(@"(?m)^\s+b1\s+web\s+\S+ \S+\s+1 GiB\s*$", run.Out);
        var request = Assert.Single(daemon.Requests);
        Assert.Equal("POST /v1/repo/prune", $"{request.Method} {request.Target}");
        var sent = JsonSerializer.Deserialize<RepositoryPruneRequest>(request.Body, ApiJson.Options)!;
        Assert.Equal(new RepositoryPruneRequest { Repository = "/srv/repo", Passphrase = "pw", KeepLast = 1, KeepDaily = 7, DryRun = true }, sent);
    }

    [Fact]
    public async Task RepoGcPrintsTheAnswer()
    {
        var body = """{"backupsMarked":3,"chunksReferenced":100,"chunksDeleted":7,"bytesDeleted":7340032,"cutoff":"2025-01-03T03:00:00+00:00","liveWriters":0}""";
        using var daemon = new FakeHavend(200, body);
        var run = await CliRun.RunAsync(Env(daemon), "repo", "gc");

        Assert.Equal(0, run.ExitCode);
        Assert.Contains("Collected garbage in repository /srv/repo:", run.Out);
        Assert.Matches(@"(?m)^Chunks deleted\s+7$", run.Out);
        Assert.Matches(@"(?m)^Bytes deleted\s+7 MiB$", run.Out);
        Assert.Equal("""{"repository":"/srv/repo","passphrase":"pw"}""", daemon.Requests[0].Body);

        run = await CliRun.RunAsync(Env(daemon), "--json", "repo", "gc");
        Assert.Equal(0, run.ExitCode);
        using var doc = JsonDocument.Parse(run.Out);
        Assert.Equal(7, doc.RootElement.GetProperty("chunksDeleted").GetInt32());
    }
}
