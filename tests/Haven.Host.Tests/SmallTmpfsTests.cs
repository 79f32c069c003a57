using Haven.TestSupport;
using Xunit;

namespace Haven.Host.Tests;

/// <summary>The disk-full tests' tmpfs: where it must mount (root, CI) a mount that fails is a test failure, not a silent skip.</summary>
public sealed class SmallTmpfsTests
{
    [Fact]
    public void A_tmpfs_that_cannot_mount_fails_under_root_or_CI_and_gives_the_reason_elsewhere()
    {
        if (SmallTmpfs.MustMount)
        {
            var e = Assert.Throws<InvalidOperationException>(() => SmallTmpfs.TryMount("not-a-size", out _));
            Assert.StartsWith("cannot mount a tmpfs (exit ", e.Message);
            Assert.EndsWith("(running as root or under CI, where this test must run)", e.Message);
        }
        else
        {
            Assert.Null(SmallTmpfs.TryMount("not-a-size", out var reason));
            Assert.StartsWith("cannot mount a tmpfs (exit ", reason);
        }
    }
}
