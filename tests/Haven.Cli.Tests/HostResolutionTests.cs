namespace Haven.Cli.Tests;

public class HostResolutionTests
{
    static Func<string, string?> Env(params (string Name, string Value)[] vars) =>
        name => vars.FirstOrDefault(v => v.Name == name).Value;

    [Fact]
    public void FolderGivesSocketAndTokenFileInside()
    {
        var e = HavenEndpoint.Resolve("/srv/haven", null, Env());
        Assert.Equal("/srv/haven/havend.sock", e.SocketPath);
        Assert.Equal("/srv/haven/token", e.TokenFile);
        Assert.Null(e.Token);
        Assert.Equal(new Uri("http://localhost/"), e.BaseAddress);
        Assert.Equal("/srv/haven/havend.sock", e.Display);
    }

    [Fact]
    public void RelativeFolderIsMadeAbsolute()
    {
        var e = HavenEndpoint.Resolve("data", null, Env());
        Assert.Equal(Path.Combine(Path.GetFullPath("data"), "havend.sock"), e.SocketPath);
    }

    [Fact]
    public void UnixSocketTakesTokenFromItsFolder()
    {
        var e = HavenEndpoint.Resolve("unix:/run/haven/havend.sock", null, Env());
        Assert.Equal("/run/haven/havend.sock", e.SocketPath);
        Assert.Equal("/run/haven/token", e.TokenFile);
        Assert.Equal(new Uri("http://localhost/"), e.BaseAddress);
    }

    [Fact]
    public void UnixSocketWithTripleSlashAndExplicitToken()
    {
        var e = HavenEndpoint.Resolve("unix:///run/h.sock", "abc", Env());
        Assert.Equal("/run/h.sock", e.SocketPath);
        Assert.Equal("abc", e.Token);
        Assert.Null(e.TokenFile);
    }

    [Fact]
    public void HttpUsesTheUrlAndTheGivenTokenOnly()
    {
        var e = HavenEndpoint.Resolve("http://127.0.0.1:8123", "t0k", Env());
        Assert.Null(e.SocketPath);
        Assert.Null(e.TokenFile);
        Assert.Equal("t0k", e.Token);
        Assert.Equal(new Uri("http://127.0.0.1:8123/"), e.BaseAddress);
        Assert.Equal("http://127.0.0.1:8123", e.Display);
    }

    [Fact]
    public void HttpTokenFromEnvironment()
    {
        var e = HavenEndpoint.Resolve("http://127.0.0.1:8123/", null, Env(("HAVEN_TOKEN", "from-env")));
        Assert.Equal("from-env", e.Token);
    }

    [Fact]
    public void TokenOptionBeatsEnvironment()
    {
        var e = HavenEndpoint.Resolve("/srv/haven", "from-option", Env(("HAVEN_TOKEN", "from-env")));
        Assert.Equal("from-option", e.Token);
        Assert.Null(e.TokenFile);
    }

    [Fact]
    public void HostOptionBeatsEnvironment()
    {
        var e = HavenEndpoint.Resolve("/a", null, Env(("HAVEN_HOST", "/b"), ("HAVEN_HOME", "/c")));
        Assert.Equal("/a/havend.sock", e.SocketPath);
    }

    [Fact]
    public void HavenHostBeatsHavenHome()
    {
        var e = HavenEndpoint.Resolve(null, null, Env(("HAVEN_HOST", "unix:/b/s.sock"), ("HAVEN_HOME", "/c")));
        Assert.Equal("/b/s.sock", e.SocketPath);
    }

    [Fact]
    public void DefaultIsHavenHome()
    {
        var e = HavenEndpoint.Resolve(null, null, Env(("HAVEN_HOME", "/c"), ("HOME", "/home/u")));
        Assert.Equal("/c/havend.sock", e.SocketPath);
        Assert.Equal("/c/token", e.TokenFile);
    }

    [Fact]
    public void DefaultWithoutHavenHomeIsUnderHome()
    {
        var e = HavenEndpoint.Resolve(null, null, Env(("HOME", "/home/u"), ("HAVEN_HOST", "")));
        Assert.Equal("/home/u/.local/share/haven/havend.sock", e.SocketPath);
    }

    [Fact]
    public void WithoutHavenHomeTheSystemServiceIsUsedOnlyWhenNoPerUserDaemonListens()
    {
        var env = Env(("HOME", "/home/u"));
        Assert.Equal("/var/lib/haven", HavenEndpoint.DefaultFolder(env, p => p == "/var/lib/haven/havend.sock"));
        Assert.Equal("/home/u/.local/share/haven", HavenEndpoint.DefaultFolder(env, p => p is "/var/lib/haven/havend.sock" or "/home/u/.local/share/haven/havend.sock"));
        Assert.Equal("/home/u/.local/share/haven", HavenEndpoint.DefaultFolder(env, _ => false));
        Assert.Equal("/c", HavenEndpoint.DefaultFolder(Env(("HAVEN_HOME", "/c"), ("HOME", "/home/u")), _ => true));
    }

    [Fact]
    public void ExistingFileIsTakenAsTheSocketItself()
    {
        var dir = Directory.CreateTempSubdirectory("haven-cli-");
        try
        {
            var socket = Path.Combine(dir.FullName, "custom.sock");
            File.WriteAllText(socket, "");
            var e = HavenEndpoint.Resolve(socket, null, Env());
            Assert.Equal(socket, e.SocketPath);
            Assert.Equal(Path.Combine(dir.FullName, "token"), e.TokenFile);
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [Theory]
    [InlineData("ftp://example.com")]
    [InlineData("unix:")]
    [InlineData("http://")]
    public void BadHostsAreRejected(string host) =>
        Assert.Throws<ArgumentException>(() => HavenEndpoint.Resolve(host, null, Env()));

    [Fact]
    public async Task BadHostIsExitCode2()
    {
        var run = await CliRun.RunAsync("--host", "ftp://x", "vm", "list");
        Assert.Equal(2, run.ExitCode);
        Assert.StartsWith("haven: --host: ", run.Error);
        Assert.Equal("", run.Out);
    }
}
