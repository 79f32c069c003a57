using System.Globalization;
using Xunit;

namespace Haven.Repository.Tests;

/// <summary>restic "forget" semantics on synthetic timestamps; expected sets worked out by hand.</summary>
public sealed class RetentionPolicyTests
{
    private static DateTimeOffset T(string s) => DateTimeOffset.Parse(s, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal);

    private static string[] Kept(RetentionPolicy policy, params string[] times)
        => [.. policy.Apply(times.Select(T), t => t, t => t.ToString("O")).Where(d => d.Keep).Select(d => d.Backup.ToString("yyyy-MM-dd HH:mm"))];

    [Fact]
    public void Keep_last_keeps_the_newest_n()
    {
        var times = Enumerable.Range(0, 10).Select(i => $"2025-01-01T{i:00}:00:00Z").ToArray();
        Assert.Equal(["2025-01-01 09:00", "2025-01-01 08:00", "2025-01-01 07:00"], Kept(new RetentionPolicy { KeepLast = 3 }, times));
    }

    [Fact]
    public void Keep_daily_keeps_the_newest_backup_of_each_of_the_last_n_days_that_have_one()
    {
        string[] times =
        [
            "2025-01-10T23:00:00Z", "2025-01-10T08:00:00Z", // day 10: keep 23:00
            "2025-01-09T12:00:00Z",                         // day 9
            // no backup on the 8th: days without backups do not count
            "2025-01-07T18:00:00Z", "2025-01-07T06:00:00Z", // day 7: keep 18:00
            "2025-01-06T10:00:00Z",                         // a fourth day: removed
        ];
        Assert.Equal(["2025-01-10 23:00", "2025-01-09 12:00", "2025-01-07 18:00"], Kept(new RetentionPolicy { KeepDaily = 3 }, times));
    }

    [Fact]
    public void Keep_hourly_uses_calendar_hours()
    {
        string[] times = ["2025-01-01T10:59:00Z", "2025-01-01T10:01:00Z", "2025-01-01T09:30:00Z", "2025-01-01T08:45:00Z"];
        Assert.Equal(["2025-01-01 10:59", "2025-01-01 09:30"], Kept(new RetentionPolicy { KeepHourly = 2 }, times));
    }

    [Fact]
    public void Keep_weekly_uses_iso_weeks_across_the_new_year()
    {
        // Mon 2024-12-30 .. Sun 2025-01-05 is ISO week 2025-W01; 2024-12-29 (Sunday) is 2024-W52.
        string[] times = ["2025-01-05T10:00:00Z", "2024-12-30T10:00:00Z", "2024-12-29T10:00:00Z", "2024-12-23T10:00:00Z", "2024-12-16T10:00:00Z"];
        Assert.Equal(["2025-01-05 10:00", "2024-12-29 10:00"], Kept(new RetentionPolicy { KeepWeekly = 2 }, times));
    }

    [Fact]
    public void Rules_combine_and_each_backup_says_why_it_is_kept()
    {
        string[] times = ["2025-03-15T00:00:00Z", "2025-03-01T00:00:00Z", "2025-02-20T00:00:00Z", "2025-02-01T00:00:00Z", "2024-12-31T00:00:00Z", "2024-06-01T00:00:00Z", "2023-05-01T00:00:00Z"];
        var policy = new RetentionPolicy { KeepLast = 1, KeepMonthly = 2, KeepYearly = 2 };
        var decisions = policy.Apply(times.Select(T), t => t, t => t.ToString("O"));
        var kept = decisions.Where(d => d.Keep).ToDictionary(d => d.Backup.ToString("yyyy-MM-dd"), d => string.Join(",", d.Reasons));
        Assert.Equal(new Dictionary<string, string>
        {
            ["2025-03-15"] = "last,monthly,yearly",
            ["2025-02-20"] = "monthly",
            ["2024-12-31"] = "yearly",
        }, kept);
        Assert.Equal(times.Length, decisions.Count);
    }

    [Fact]
    public void With_fewer_periods_than_asked_the_oldest_backup_is_kept_too()
    {
        // keep-daily 7 but only two days of backups: newest of each day, plus the oldest (restic 0.17+).
        string[] times = ["2025-01-02T20:00:00Z", "2025-01-02T10:00:00Z", "2025-01-01T20:00:00Z", "2025-01-01T09:00:00Z"];
        Assert.Equal(["2025-01-02 20:00", "2025-01-01 20:00", "2025-01-01 09:00"], Kept(new RetentionPolicy { KeepDaily = 7 }, times));
        // Once the rule is satisfied the oldest goes.
        Assert.Equal(["2025-01-02 20:00"], Kept(new RetentionPolicy { KeepDaily = 1 }, times));
        // keep-last has no such extra.
        Assert.Equal(["2025-01-02 20:00", "2025-01-02 10:00"], Kept(new RetentionPolicy { KeepLast = 2 }, times));
    }

    [Fact]
    public void Unlimited_keeps_one_per_period_forever_and_input_order_does_not_matter()
    {
        string[] times = ["2020-01-01T10:00:00Z", "2025-01-01T10:00:00Z", "2025-01-01T11:00:00Z", "2022-07-07T07:00:00Z"];
        var kept = Kept(new RetentionPolicy { KeepYearly = RetentionPolicy.Unlimited }, times);
        Assert.Equal(["2025-01-01 11:00", "2022-07-07 07:00", "2020-01-01 10:00"], kept);
        Assert.Equal(kept, Kept(new RetentionPolicy { KeepYearly = RetentionPolicy.Unlimited }, [.. times.Reverse()]));
        Assert.Throws<ArgumentOutOfRangeException>(() => Kept(new RetentionPolicy { KeepDaily = -2 }, times));
        Assert.True(new RetentionPolicy().IsEmpty);
    }

    [Fact]
    public void Equal_times_are_ordered_by_id()
    {
        var items = new[] { ("b", T("2025-01-01T00:00:00Z")), ("a", T("2025-01-01T00:00:00Z")), ("c", T("2025-01-01T00:00:00Z")) };
        var decisions = new RetentionPolicy { KeepLast = 1 }.Apply(items, i => i.Item2, i => i.Item1);
        Assert.Equal("c", decisions.Single(d => d.Keep).Backup.Item1);
    }
}
