using Haven.Host;

namespace Haven.Daemon;

/// <summary>Checks the backup jobs' cron schedules every 15 s and runs what is due.</summary>
public sealed class JobScheduler(HavenHost host, ILogger<JobScheduler> log) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var started = host.Time.GetUtcNow();
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(15), host.Time);
        while (await timer.WaitForNextTickAsync(stoppingToken))
        {
            try { await host.Jobs.RunDueAsync(host.Time.GetUtcNow(), started, stoppingToken); }
            catch (Exception e) when (e is not OperationCanceledException) { log.LogError(e, "scheduled job run failed"); }
        }
    }
}
