using Haven.Api;
using Microsoft.Extensions.Logging;

namespace Haven.Host.Vms;

/// <summary>
/// <c>haven vm import --libvirt</c>: the domain XML parsed (<see cref="LibvirtDomain"/>), refused as a whole when any
/// device cannot be imported, else created like <c>vm create</c> (disks copied, every file and bridge checked before
/// anything is written), so a refused or failed import leaves nothing behind.
/// </summary>
public static class LibvirtImport
{
    public static async Task<VmInfo> RunAsync(HavenHost host, LibvirtImportRequest req, CancellationToken ct)
    {
        if (req.Xml is null) throw HavenException.Invalid("the import request has no domain XML");
        var parsed = LibvirtDomain.Parse(req.Xml, req.NetworkMap);
        var name = req.Name ?? parsed.Request.Name;
        if (parsed.Unsupported.Count > 0)
            throw HavenException.Invalid($"cannot import '{name}': unsupported devices: {string.Join(", ", parsed.Unsupported)}");
        host.Log.LogInformation("importing libvirt domain {Domain} as VM {Vm}; left to Haven: {Ignored}; changed: {Notes}", parsed.Request.Name, name,
            parsed.Ignored.Count == 0 ? "nothing" : string.Join(", ", parsed.Ignored), parsed.Notes.Count == 0 ? "nothing" : string.Join("; ", parsed.Notes));
        try
        {
            return await host.Vms.CreateAsync(parsed.Request with { Name = name, Accelerator = req.Accelerator }, ct);
        }
        catch (HavenException e)
        {
            throw new HavenException(e.Code, $"cannot import '{name}': {e.Message}", e);
        }
    }
}
