using Haven.Host;

namespace Haven.Daemon;

/// <summary>Checks the backup jobs' cron schedules every 15 s and runs what is due.</summary>
public sealed class JobScheduler(HavenHost host, ILogger<JobScheduler> log) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var started = DateTimeOffset.UtcNow;
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(15));
        while (await timer.WaitForNextTickAsync(stoppingToken))
        {
            try { await host.Jobs.RunDueAsync(DateTimeOffset.UtcNow, started, stoppingToken); }
            catch (Exception e) when (e is not OperationCanceledException) { log.LogError(e, "scheduled job run failed"); }
        }
    }
}
