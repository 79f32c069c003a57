using System.Text.Json;
using Cronos;
using Haven.Api;
using Haven.Repository;

namespace Haven.Host.Backups;

/// <summary>
/// Backup jobs (Veeam's job = VMs + repository + schedule + retention). A run backs up each VM in turn
/// (one VM's failure does not stop the others), then prunes by the job's retention when every backup
/// succeeded. The daemon's scheduler calls <see cref="RunDueAsync"/> every few seconds.
/// </summary>
public sealed class JobService(HavenHost host)
{
    private readonly SemaphoreSlim _running = new(1, 1);

    public JobInfo Create(JobDefinition def)
    {
        Names.Validate(def.Name, "job");
        if (def.Vms.Count == 0) throw HavenException.Invalid("a job needs at least one VM");
        foreach (var vm in def.Vms) host.Vms.Find(vm);
        if (string.IsNullOrWhiteSpace(def.Repository)) throw HavenException.Invalid("a job needs a repository");
        if (!File.Exists(def.PassphraseFile)) throw HavenException.Invalid($"passphrase file not found: {def.PassphraseFile}");
        if (def.Schedule is not null) ParseSchedule(def.Schedule);
        if (host.Store.ListJobs().Exists(j => j.Name == def.Name)) throw HavenException.Conflict($"a job named '{def.Name}' already exists");
        var stored = def with { Repository = RepositoryAccess.Describe(def.Repository), PassphraseFile = Path.GetFullPath(def.PassphraseFile), S3 = def.S3?.WithoutSecrets() };
        host.Store.Write(w => w.InsertJob(def.Name, JsonSerializer.Serialize(stored, ApiJson.Options)));
        return List().Find(j => j.Definition.Name == def.Name)!;
    }

    public List<JobInfo> List() => host.Store.ListJobs().ConvertAll(j =>
    {
        var def = Definition(j);
        return new JobInfo
        {
            Definition = def,
            NextRun = def.Schedule is null ? null : ParseSchedule(def.Schedule).GetNextOccurrence(host.Time.GetUtcNow(), TimeZoneInfo.Utc),
            LastRun = j.LastRun,
            LastStatus = j.LastStatus,
            LastError = j.LastError,
        };
    });

    public void Remove(string name)
    {
        Names.Validate(name, "job");
        if (!host.Store.ListJobs().Exists(j => j.Name == name)) throw HavenException.NotFound($"no job named '{name}'");
        host.Store.Write(w => w.DeleteJob(name));
    }

    private static JobDefinition Definition(State.JobRecord j) => JsonSerializer.Deserialize<JobDefinition>(j.Definition, ApiJson.Options)!;

    private static CronExpression ParseSchedule(string s)
    {
        try { return CronExpression.Parse(s); }
        catch (CronFormatException e) { throw HavenException.Invalid($"schedule '{s}' is not a cron expression: {e.Message}"); }
    }

    public async Task<JobRunResult> RunAsync(string name, CancellationToken ct)
    {
        var job = host.Store.ListJobs().Find(j => j.Name == name) ?? throw HavenException.NotFound($"no job named '{name}'");
        var def = Definition(job);
        await _running.WaitAsync(ct);
        try
        {
            var started = host.Time.GetUtcNow();
            var backups = new List<BackupResult>();
            var errors = new List<string>();
            var pruned = 0;
            string passphrase;
            try { passphrase = (await File.ReadAllLinesAsync(def.PassphraseFile, ct)).FirstOrDefault() ?? ""; }
            catch (IOException e) { passphrase = ""; errors.Add($"cannot read passphrase file: {e.Message}"); }
            if (errors.Count == 0)
            {
                foreach (var vm in def.Vms)
                {
                    try
                    {
                        backups.Add(await host.RunOperationAsync($"backup (job {name})", vm,
                            () => host.Backups.BackupAsync(vm, new BackupRequest { Repository = def.Repository, Passphrase = passphrase, S3 = def.S3 }, ct)));
                    }
                    catch (Exception e) when (e is not OperationCanceledException) { errors.Add($"{vm}: {e.Message}"); }
                }
                var prune = new RepositoryPruneRequest
                {
                    Repository = def.Repository, Passphrase = passphrase, S3 = def.S3, KeepLast = def.KeepLast, KeepHourly = def.KeepHourly,
                    KeepDaily = def.KeepDaily, KeepWeekly = def.KeepWeekly, KeepMonthly = def.KeepMonthly, KeepYearly = def.KeepYearly,
                };
                // Retention runs only after a fully successful run: never prune the last good backups because new ones failed.
                if (errors.Count == 0 && !RepositoryAccess.ToPolicy(prune).IsEmpty)
                {
                    try { pruned = (await host.Repositories.PruneAsync(prune, ct)).Removed.Count; }
                    catch (Exception e) when (e is not OperationCanceledException) { errors.Add($"prune: {e.Message}"); }
                }
            }
            host.Store.Write(w => w.SetJobOutcome(name, started, errors.Count == 0 ? "success" : "failed", errors.Count == 0 ? null : string.Join("; ", errors)));
            return new JobRunResult { Job = name, Backups = backups, Errors = errors, PrunedBackups = pruned };
        }
        finally { _running.Release(); }
    }

    /// <summary>Runs every scheduled job whose next occurrence after its last run (or creation) has come.</summary>
    public async Task RunDueAsync(DateTimeOffset now, DateTimeOffset daemonStart, CancellationToken ct)
    {
        foreach (var job in host.Store.ListJobs())
        {
            var def = Definition(job);
            if (def.Schedule is null) continue;
            var since = job.LastRun ?? daemonStart;
            var next = ParseSchedule(def.Schedule).GetNextOccurrence(since, TimeZoneInfo.Utc);
            if (next is { } due && due <= now) await RunAsync(def.Name, ct);
        }
    }
}
