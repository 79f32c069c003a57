using System.CommandLine;

namespace Haven.Cli.Commands.Host;

public static class HostCommand
{
    public static Command Create(CliContext ctx)
    {
        var host = new Command("host", "The host havend runs on: info, its certificate, the certificates it trusts, shutting its VMs down")
        {
            new HostInfoCommand(ctx),
            HostCertificateCommand.Create(ctx),
            HostTrustCommand.Create(ctx),
            new HostShutdownVmsCommand(ctx),
        };
        HavenCli.ShowHelpWhenBare(host);
        return host;
    }
}
