using System.Text.Json;
using Haven.Api;
using Haven.Host.State;

namespace Haven.Host.Replication;

/// <summary>
/// When each replicated VM's next cycle is due, on the host's clock. Cycles are due on a grid: the initial one at
/// its start time, later ones one frequency after the last success (as havend found it at start), then every
/// frequency. A due time that passes without a cycle starting is a missed cycle: the previous one still ran, or
/// nothing looked (havend down, a stalled host). A resynchronization waiting for its UTC window is not retried,
/// nor counted missed, before the window opens. havend's scheduler calls <see cref="Tick"/> every second.
/// </summary>
public sealed class CycleSchedule(HavenHost host)
{
    private readonly Dictionary<string, Entry> _entries = [];

    private sealed class Entry
    {
        public DateTimeOffset Due;
        public Task? Running;
    }

    /// <summary>The next time a cycle of the VM is due, as of the last tick; null when not scheduled.</summary>
    public DateTimeOffset? NextDue(string vmId)
    {
        lock (_entries) return _entries.TryGetValue(vmId, out var e) ? e.Due : null;
    }

    /// <summary>Starts the cycles that are due (through <paramref name="start"/>) and counts the missed ones.</summary>
    public void Tick(Func<VmRecord, Task> start)
    {
        var now = host.Time.GetUtcNow();
        lock (_entries)
        {
            var seen = new HashSet<string>();
            foreach (var record in host.Store.ListReplications())
            {
                seen.Add(record.VmId);
                if (host.Replications.InterruptedPlannedFailover(record.VmId) is not null) continue; // no cycle until it is finished
                var settings = JsonSerializer.Deserialize<ReplicationSettings>(record.Settings, ApiJson.Options)!;
                var frequency = TimeSpan.FromSeconds(settings.FrequencySeconds);
                if (!_entries.TryGetValue(record.VmId, out var e))
                {
                    e = new Entry
                    {
                        Due = record.LastCycle == 0 ? settings.StartAt ?? now
                            : record.Statistics.LastSuccess is { } last ? last + frequency : now,
                    };
                    _entries[record.VmId] = e;
                }
                // The initial copy travels on media: nothing to do until the replica server has imported it.
                if (record.LastCycle == 0 && settings.InitialByExport) continue;
                if (e.Running is not { IsCompleted: false } && record.Statistics.LastOutcome == CycleOutcome.WaitingForResyncWindow)
                {
                    var opens = settings.ResyncWindowOpensAt(now);
                    if (opens > now)
                    {
                        e.Due = opens > e.Due ? opens : e.Due;
                        continue;
                    }
                }
                if (now < e.Due) continue;
                // Due times in [Due, now]: the latest of them starts a cycle now (if none runs); the others were missed.
                var passed = 1 + (now - e.Due).Ticks / frequency.Ticks;
                e.Due += frequency * passed;
                if (e.Running is { IsCompleted: false })
                {
                    host.Replications.CountMissed(record.VmId, passed);
                    continue;
                }
                host.Replications.CountMissed(record.VmId, passed - 1);
                if (host.Store.FindVm(record.VmId) is not { } vm) continue;
                e.Running = start(vm);
            }
            foreach (var gone in _entries.Keys.Where(k => !seen.Contains(k)).ToList()) _entries.Remove(gone);
        }
    }
}
