using Haven.Api;
using Haven.Cli.Commands.Backup;
using Spectre.Console;

namespace Haven.Cli.Tests;

/// <summary>Progress lines to per-disk bars.</summary>
public class BackupProgressTests
{
    static BackupProgress New()
    {
        var id = 0;
        return new BackupProgress(description => new ProgressTask(id++, description, 1));
    }

    static OperationEvent Progress(int disk, int count, long done, long total) =>
        new() { Type = "progress", Phase = "reading", Disk = disk, DiskCount = count, BytesDone = done, BytesTotal = total };

    [Fact]
    public void OneBarPerDiskWithBytesDoneOfTotal()
    {
        var progress = New();
        progress.Report(Progress(0, 3, 100, 1000));

        Assert.Equal(["disk0", "disk1", "disk2"], progress.Bars.Select(b => b.Description));
        Assert.Equal((100.0, 1000.0, false), (progress.Bars[0].Value, progress.Bars[0].MaxValue, progress.Bars[0].IsIndeterminate));
        Assert.True(progress.Bars[1].IsIndeterminate); // not started yet
    }

    [Fact]
    public void ALaterDiskCompletesTheEarlierOnes()
    {
        var progress = New();
        progress.Report(Progress(0, 3, 100, 1000));
        progress.Report(Progress(2, 3, 5, 50)); // the last line of disk0 and every line of disk1 were dropped

        Assert.Equal(1000, progress.Bars[0].Value);
        Assert.True(progress.Bars[0].IsFinished);
        Assert.True(progress.Bars[1].IsFinished);
        Assert.False(progress.Bars[1].IsIndeterminate);
        Assert.Equal((5.0, 50.0), (progress.Bars[2].Value, progress.Bars[2].MaxValue));
    }

    [Fact]
    public void NothingToReadIsComplete()
    {
        var progress = New();
        progress.Report(Progress(0, 1, 0, 0));
        Assert.True(progress.Bars[0].IsFinished);
        Assert.False(double.IsNaN(progress.Bars[0].Percentage));
    }

    [Fact]
    public void OtherPhasesAndBadLinesAreHarmless()
    {
        var progress = New();
        progress.Report(new OperationEvent { Type = "progress", Phase = "freezing" }); // no disk
        progress.Report(new OperationEvent { Type = "progress", Disk = -1 });
        Assert.Empty(progress.Bars);

        progress.Report(new OperationEvent { Type = "progress", Phase = "committing", Disk = 0, DiskCount = 1 });
        Assert.Equal("disk0 committing", Assert.Single(progress.Bars).Description);

        progress.Report(Progress(0, 1, 5000, 1000)); // more than the total: clamped
        Assert.Equal(1000, progress.Bars[0].Value);
    }
}
