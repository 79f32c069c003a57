namespace Haven.Cli.Tests;

public class SizeParserTests
{
    [Theory]
    [InlineData("4096", 4096L)]
    [InlineData("512B", 512L)]
    [InlineData("1K", 1024L)]
    [InlineData("64M", 64L * 1024 * 1024)]
    [InlineData("64m", 64L * 1024 * 1024)]
    [InlineData("1G", 1024L * 1024 * 1024)]
    [InlineData("10G", 10L * 1024 * 1024 * 1024)]
    [InlineData("1GiB", 1024L * 1024 * 1024)]
    [InlineData("1GB", 1024L * 1024 * 1024)]
    [InlineData("1.5G", 1536L * 1024 * 1024)]
    [InlineData(" 2T ", 2L * 1024 * 1024 * 1024 * 1024)]
    [InlineData("8 M", 8L * 1024 * 1024)]
    public void Parses(string text, long expected)
    {
        Assert.True(SizeParser.TryParse(text, out var bytes, out var error), error);
        Assert.Equal(expected, bytes);
        Assert.Equal(expected, SizeParser.Parse(text));
    }

    [Theory]
    [InlineData("", "empty")]
    [InlineData("G", "not a size")]
    [InlineData("-1G", "not a size")]
    [InlineData("1.2.3G", "not a size")]
    [InlineData("1X", "unknown unit")]
    [InlineData("1 GBytes", "unknown unit")]
    [InlineData("0", "larger than zero")]
    [InlineData("0M", "larger than zero")]
    [InlineData("0.3", "whole number of bytes")]
    [InlineData("99999999999T", "too large")]
    [InlineData("99999999999999999999999999999999999T", "not a size")]
    public void Rejects(string text, string reason)
    {
        Assert.False(SizeParser.TryParse(text, out _, out var error));
        Assert.Contains(reason, error);
        Assert.Throws<FormatException>(() => SizeParser.Parse(text));
    }

    [Theory]
    [InlineData(0L, "0 B")]
    [InlineData(1023L, "1023 B")]
    [InlineData(1024L, "1 KiB")]
    [InlineData(1536L * 1024 * 1024, "1.5 GiB")]
    [InlineData(10L * 1024 * 1024 * 1024, "10 GiB")]
    public void Formats(long bytes, string expected) => Assert.Equal(expected, SizeParser.Format(bytes));
}
