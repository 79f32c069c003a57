namespace Haven.Api;

/// <summary>
/// POST /v1/vms/import-libvirt: a libvirt domain (the XML of <c>virsh dumpxml</c>) made into a Haven VM; its disks
/// are copied into the data folder. The XML is untrusted: havend parses it (no DTD, at most 1 MiB) and refuses the
/// whole import, naming every device it cannot give the VM (docs/architecture.md "Importing from libvirt").
/// </summary>
public sealed record LibvirtImportRequest
{
    public required string Xml { get; init; }
    /// <summary>The new VM's name; null: the domain's &lt;name&gt;.</summary>
    public string? Name { get; init; }
    /// <summary>libvirt network name to the Linux bridge its interfaces go on (&lt;interface type='network'&gt;).</summary>
    public Dictionary<string, string>? NetworkMap { get; init; }
    /// <summary>"auto", "kvm" or "tcg".</summary>
    public string Accelerator { get; init; } = "auto";
}
