using System.CommandLine;
using System.Globalization;
using System.Net;
using Haven.Api;
using Spectre.Console;

namespace Haven.Cli.Commands.Host;

/// <summary>haven host certificate [--out FILE] | set --cert FILE --key FILE: this host's TLS certificate for host-to-host traffic.</summary>
public static class HostCertificateCommand
{
    public static Command Create(CliContext ctx)
    {
        var outFile = new Option<string?>("--out") { Description = "Also write the certificate (PEM, no key) to FILE, to add it to another host's trust store", HelpName = "FILE" };
        var cmd = new Command("certificate", "Show this host's certificate (its identity to other hosts)") { outFile, SetCommand(ctx) };
        ctx.SetAction(cmd, async (parseResult, client, output, ct) =>
        {
            var info = await client.GetHostCertificateAsync(ct);
            var path = parseResult.GetValue(outFile) is { } f ? Path.GetFullPath(f) : null;
            if (path is not null)
            {
                try { await File.WriteAllTextAsync(path, info.Pem, ct); }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    throw new HavenApiException($"--out: cannot write {path}: {e.Message}", "invalid_argument", HttpStatusCode.BadRequest);
                }
            }
            output.Result(info, console =>
            {
                Render(console, info);
                if (path is not null) console.Line($"Wrote the certificate to {path}.");
                else console.Write(new Text(info.Pem));
            });
        });
        return cmd;
    }

    static Command SetCommand(CliContext ctx)
    {
        var cert = new Option<string>("--cert") { Description = "PEM file with the certificate (the first one is this host's)", Required = true, HelpName = "FILE" };
        var key = new Option<string>("--key") { Description = "PEM file with its private key", Required = true, HelpName = "FILE" };
        var cmd = new Command("set", "Replace this host's certificate with one you supply (peers must then trust the new one)") { cert, key };
        ctx.SetAction(cmd, async (parseResult, client, output, ct) =>
        {
            var request = new HostCertificateSetRequest
            {
                CertificatePem = await ReadFileAsync("--cert", parseResult.GetRequiredValue(cert), ct),
                KeyPem = await ReadFileAsync("--key", parseResult.GetRequiredValue(key), ct),
            };
            var info = await client.SetHostCertificateAsync(request, ct);
            output.Result(info, console =>
            {
                console.Line("Replaced this host's certificate.");
                Render(console, info);
            });
        });
        return cmd;
    }

    /// <summary>Reads a small text file given on the command line; a file that cannot be read is a command-line error (exit 2).</summary>
    public static async Task<string> ReadFileAsync(string option, string file, CancellationToken ct)
    {
        var path = Path.GetFullPath(file);
        try
        {
            if (new FileInfo(path).Length > 1 << 20)
                throw new IOException("larger than 1 MiB: not a PEM file");
            return await File.ReadAllTextAsync(path, ct);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new HavenApiException($"{option}: cannot read {path}: {e.Message}", "invalid_argument", HttpStatusCode.BadRequest);
        }
    }

    public static void Render(IAnsiConsole console, HostCertificateInfo info) =>
        console.WriteProperties(
            ("Name", info.Name),
            ("Thumbprint", info.Thumbprint),
            ("Subject", info.Subject),
            ("Issuer", info.Issuer == info.Subject ? "(self-signed)" : info.Issuer),
            ("Valid", $"{Human.Time(info.NotBefore)} to {Human.Time(info.NotAfter)}"));
}

/// <summary>haven host trust add FILE | list | remove THUMBPRINT: the certificates this host trusts for host-to-host TLS.</summary>
public static class HostTrustCommand
{
    public static Command Create(CliContext ctx)
    {
        var trust = new Command("trust", "Certificates of other hosts (or CAs) this host trusts") { AddCommand(ctx), ListCommand(ctx), RemoveCommand(ctx) };
        HavenCli.ShowHelpWhenBare(trust);
        return trust;
    }

    static Command AddCommand(CliContext ctx)
    {
        var file = new Argument<string>("FILE") { Description = "PEM certificate of the other host (haven host certificate --out FILE there) or of a CA" };
        var ca = new Option<bool>("--ca") { Description = "The certificate is a CA: trust every certificate it issues (a CA certificate is refused without it)" };
        var cmd = new Command("add", "Trust a certificate") { file, ca };
        ctx.SetAction(cmd, async (parseResult, client, output, ct) =>
        {
            var pem = await HostCertificateCommand.ReadFileAsync("FILE", parseResult.GetRequiredValue(file), ct);
            var added = await client.AddTrustedAsync(new TrustAddRequest { Pem = pem, CertificateAuthority = parseResult.GetValue(ca) }, ct);
            output.Result(added, console => console.Line($"Trusted {(added.IsCertificateAuthority ? "CA" : "certificate")} CN={added.Name} (thumbprint {added.Thumbprint})."));
        });
        return cmd;
    }

    static Command ListCommand(CliContext ctx)
    {
        var cmd = new Command("list", "List trusted certificates");
        cmd.Aliases.Add("ls");
        ctx.SetAction(cmd, async (_, client, output, ct) =>
        {
            var list = await client.ListTrustedAsync(ct);
            output.Result(list, console =>
            {
                var table = Human.Table("NAME", "THUMBPRINT", "KIND", "EXPIRES", "SUBJECT");
                foreach (var c in list)
                    table.AddTextRow(c.Name, c.Thumbprint, c.IsCertificateAuthority ? "CA" : "host", c.NotAfter.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture), c.Subject);
                console.Write(table);
            });
        });
        return cmd;
    }

    static Command RemoveCommand(CliContext ctx)
    {
        var thumbprint = new Argument<string>("THUMBPRINT") { Description = "Thumbprint (SHA-256, hex) as 'haven host trust list' shows it" };
        var cmd = new Command("remove", "Stop trusting a certificate") { thumbprint };
        cmd.Aliases.Add("rm");
        ctx.SetAction(cmd, async (parseResult, client, output, ct) =>
        {
            var t = parseResult.GetRequiredValue(thumbprint);
            await client.RemoveTrustedAsync(t, ct);
            output.NoContent(console => console.Line($"No longer trusting {t}."));
        });
        return cmd;
    }
}
