using System.Globalization;

namespace Haven.Repository;

/// <summary>
/// Which backups to keep, with restic's "forget" semantics, applied to each VM's backups separately:
/// keep the newest N backups (KeepLast), and for each period kind keep the newest backup of each of the
/// last N periods that have a backup (KeepHourly … KeepYearly). A backup is kept if any rule keeps it.
/// 0 turns a rule off; <see cref="Unlimited"/> keeps one per period forever. As in restic 0.17+, when a
/// period rule has fewer periods than it asks for, the oldest backup is kept too. Periods are UTC
/// calendar hours, days, ISO-8601 weeks, months and years of the backup's CreatedAt.
/// </summary>
public sealed record RetentionPolicy
{
    public const int Unlimited = -1;

    public int KeepLast { get; init; }
    public int KeepHourly { get; init; }
    public int KeepDaily { get; init; }
    public int KeepWeekly { get; init; }
    public int KeepMonthly { get; init; }
    public int KeepYearly { get; init; }

    /// <summary>No rule set: such a policy would remove everything, so prune refuses it.</summary>
    public bool IsEmpty => KeepLast == 0 && KeepHourly == 0 && KeepDaily == 0 && KeepWeekly == 0 && KeepMonthly == 0 && KeepYearly == 0;

    /// <summary>
    /// Decides for one group of backups (one VM). Returns one decision per backup, newest first; ties on
    /// time are broken by id so the outcome never depends on input order.
    /// </summary>
    public IReadOnlyList<RetentionDecision<T>> Apply<T>(IEnumerable<T> backups, Func<T, DateTimeOffset> createdAt, Func<T, string> id)
    {
        foreach (var (name, n) in Rules())
            if (n < Unlimited) throw new ArgumentOutOfRangeException(name, n, "a keep count is 0 or more, or Unlimited (-1)");
        var sorted = backups.Select(b => (Item: b, Time: createdAt(b).ToUniversalTime(), Id: id(b))).ToList();
        sorted.Sort((a, b) => a.Time != b.Time ? b.Time.CompareTo(a.Time) : string.CompareOrdinal(b.Id, a.Id));

        var buckets = new[]
        {
            new Bucket("hourly", KeepHourly, t => t.Year * 1_000_000L + t.Month * 10_000 + t.Day * 100 + t.Hour),
            new Bucket("daily", KeepDaily, t => t.Year * 10_000L + t.Month * 100 + t.Day),
            new Bucket("weekly", KeepWeekly, t => ISOWeek.GetYear(t.UtcDateTime) * 100L + ISOWeek.GetWeekOfYear(t.UtcDateTime)),
            new Bucket("monthly", KeepMonthly, t => t.Year * 100L + t.Month),
            new Bucket("yearly", KeepYearly, t => t.Year),
        };
        var last = KeepLast;
        var decisions = new List<RetentionDecision<T>>(sorted.Count);
        for (var i = 0; i < sorted.Count; i++)
        {
            var (item, time, _) = sorted[i];
            var reasons = new List<string>();
            if (last != 0)
            {
                reasons.Add("last");
                if (last > 0) last--;
            }
            foreach (var b in buckets)
            {
                if (b.Remaining == 0) continue;
                var period = b.PeriodOf(time);
                if (period != b.LastPeriod)
                {
                    reasons.Add(b.Name);
                    b.LastPeriod = period;
                    if (b.Remaining > 0) b.Remaining--;
                }
                else if (i == sorted.Count - 1)
                {
                    reasons.Add($"oldest ({b.Name})"); // the rule still has periods to fill: keep the oldest too
                }
            }
            decisions.Add(new RetentionDecision<T>(item, reasons.Count > 0, reasons));
        }
        return decisions;
    }

    private IEnumerable<(string Name, int Value)> Rules() =>
        [(nameof(KeepLast), KeepLast), (nameof(KeepHourly), KeepHourly), (nameof(KeepDaily), KeepDaily),
         (nameof(KeepWeekly), KeepWeekly), (nameof(KeepMonthly), KeepMonthly), (nameof(KeepYearly), KeepYearly)];

    public override string ToString()
    {
        var parts = Rules().Where(r => r.Value != 0).Select(r => $"{r.Name}={(r.Value == Unlimited ? "unlimited" : r.Value.ToString(CultureInfo.InvariantCulture))}");
        return string.Join(", ", parts);
    }

    private sealed class Bucket(string name, int count, Func<DateTimeOffset, long> periodOf)
    {
        public string Name { get; } = name;
        public int Remaining { get; set; } = count;
        public Func<DateTimeOffset, long> PeriodOf { get; } = periodOf;
        public long LastPeriod { get; set; } = long.MinValue;
    }
}

/// <summary>One backup's fate under a <see cref="RetentionPolicy"/>, with the rules that keep it.</summary>
public sealed record RetentionDecision<T>(T Backup, bool Keep, IReadOnlyList<string> Reasons);
