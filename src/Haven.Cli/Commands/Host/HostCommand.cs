using System.CommandLine;

namespace Haven.Cli.Commands.Host;

public static class HostCommand
{
    public static Command Create(CliContext ctx)
    {
        var host = new Command("host", "Inspect the host havend runs on") { new HostInfoCommand(ctx) };
        HavenCli.ShowHelpWhenBare(host);
        return host;
    }
}
