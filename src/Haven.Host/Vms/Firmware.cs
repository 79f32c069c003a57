namespace Haven.Host.Vms;

/// <summary>
/// BIOS (SeaBIOS, QEMU's default) or UEFI (OVMF). A UEFI VM runs a read-only OVMF code image shared by every VM
/// and has its own variable store (boot entries, settings): vms/&lt;vm&gt;/uefi-vars.fd, which travels with the VM
/// into checkpoints, backups and replicas. docs/architecture.md "VM hardware" describes it.
/// </summary>
public static class Firmware
{
    public const string Bios = "bios", Uefi = "uefi";
    /// <summary>Debian's ovmf package: the 4 MiB flash build (the one libvirt picks on Debian 12).</summary>
    public const string DefaultCode = "/usr/share/OVMF/OVMF_CODE_4M.fd";
    public const long MinCodeBytes = 1L << 20, MaxCodeBytes = 64L << 20;
    public const long MinVarsBytes = 64L << 10, MaxVarsBytes = 64L << 20;

    /// <summary>The code image to use (full path), checked: it must be a regular readable file of a sane size.</summary>
    public static string ResolveCode(string? code)
    {
        var path = Path.GetFullPath(string.IsNullOrEmpty(code) ? DefaultCode : code);
        CheckFile(path, "UEFI code image", MinCodeBytes, MaxCodeBytes);
        return path;
    }

    /// <summary>
    /// The variable store a new UEFI VM copies as its own: <paramref name="vars"/> when given, else the empty template
    /// that goes with the code image (OVMF_CODE_4M.fd -> OVMF_VARS_4M.fd, OVMF_CODE.fd -> OVMF_VARS.fd, same folder).
    /// </summary>
    public static string ResolveVarsSource(string code, string? vars)
    {
        string path;
        if (!string.IsNullOrEmpty(vars)) path = Path.GetFullPath(vars);
        else
        {
            var name = Path.GetFileName(code);
            if (!name.Contains("_CODE", StringComparison.Ordinal))
                throw HavenException.Invalid($"no variable store template goes with UEFI code image {code} (its name has no _CODE); give one with --uefi-vars");
            path = Path.Combine(Path.GetDirectoryName(code)!, name.Replace("_CODE", "_VARS", StringComparison.Ordinal));
        }
        CheckFile(path, "UEFI variable store", MinVarsBytes, MaxVarsBytes);
        return path;
    }

    /// <summary>
    /// The code image a replica (or an import from another host) uses for <paramref name="primaryCode"/>, a path on
    /// another host: only its file name counts, and only an OVMF_CODE*.fd in this host's OVMF folder is taken; anything
    /// else runs the default (a peer never makes this host load a file of its choice).
    /// </summary>
    public static string LocalCode(string? primaryCode)
    {
        var name = Path.GetFileName(primaryCode ?? "");
        var folder = Path.GetDirectoryName(DefaultCode)!;
        return System.Text.RegularExpressions.Regex.IsMatch(name, "^OVMF_CODE[A-Za-z0-9_.-]{0,40}\\.fd$") && File.Exists(Path.Combine(folder, name))
            ? Path.Combine(folder, name) : DefaultCode;
    }

    /// <summary>A regular file (a link is followed) that can be read, between <paramref name="min"/> and <paramref name="max"/> bytes.</summary>
    public static void CheckFile(string path, string what, long min, long max)
    {
        FileInfo info;
        try
        {
            info = new FileInfo(path);
            if (info.LinkTarget is not null) info = (FileInfo?)info.ResolveLinkTarget(returnFinalTarget: true) ?? info;
        }
        catch (IOException e) { throw HavenException.Invalid($"{what} {path} cannot be read: {e.Message}"); }
        if (Directory.Exists(info.FullName)) throw HavenException.Invalid($"{what} {path} is a folder, not a file");
        if (!info.Exists) throw HavenException.Invalid($"{what} not found: {path}");
        // Devices, pipes and sockets report a length of 0: the size check turns them away.
        if (info.Length < min || info.Length > max)
            throw HavenException.Invalid($"{what} {path} is {info.Length} bytes; a flash image is {min / 1024} KiB to {max >> 20} MiB");
        try { using var _ = File.OpenRead(info.FullName); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw HavenException.Invalid($"{what} {path} cannot be read: {e.Message}"); }
    }

    /// <summary>Reads a variable store (at most <see cref="MaxVarsBytes"/>).</summary>
    public static byte[] ReadVars(string path)
    {
        using var f = File.OpenRead(path);
        if (f.Length > MaxVarsBytes) throw new InvalidDataException($"variable store {path} is larger than {MaxVarsBytes >> 20} MiB");
        var bytes = new byte[f.Length];
        f.ReadExactly(bytes);
        return bytes;
    }

    /// <summary>
    /// Writes a variable store owner-only (0600) and atomically: a .partial file renamed over <paramref name="target"/>,
    /// so a crash leaves the old store or the new one, never half of one. Safe to repeat.
    /// </summary>
    public static void WriteVars(string target, ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length < MinVarsBytes || bytes.Length > MaxVarsBytes)
            throw new InvalidDataException($"a variable store is {MinVarsBytes / 1024} KiB to {MaxVarsBytes >> 20} MiB, not {bytes.Length} bytes");
        var partial = target + ".partial";
        File.Delete(partial);
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows()) options.UnixCreateMode = Qemu.OwnerOnly.FileMode;
        using (var f = new FileStream(partial, options))
        {
            f.Write(bytes);
            f.Flush(flushToDisk: true);
        }
        File.Move(partial, target, overwrite: true);
    }

    /// <summary><see cref="WriteVars"/> of another file's bytes.</summary>
    public static void CopyVars(string source, string target) => WriteVars(target, ReadVars(source));
}

/// <summary>
/// A variable store inside a JSON document (a backup's VM definition): gzip, base64, its length and SHA-256. The
/// document may come from anywhere (a repository anyone with the passphrase wrote), so unpacking limits the size
/// and checks the hash.
/// </summary>
public static class PackedVars
{
    public const string Property = "uefiVars";

    public static System.Text.Json.Nodes.JsonObject Pack(byte[] vars) => new()
    {
        ["size"] = vars.Length,
        ["sha256"] = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(vars)),
        ["gzip"] = Convert.ToBase64String(VarsWire.Pack(vars)),
    };

    /// <summary>The store packed under <see cref="Property"/> of <paramref name="document"/>, or null when it has none (a BIOS VM, an older backup).</summary>
    public static byte[]? Unpack(System.Text.Json.JsonElement document)
    {
        if (document.ValueKind != System.Text.Json.JsonValueKind.Object || !document.TryGetProperty(Property, out var p) || p.ValueKind == System.Text.Json.JsonValueKind.Null) return null;
        try
        {
            var size = p.GetProperty("size").GetInt64();
            var sha = p.GetProperty("sha256").GetString();
            if (size < Firmware.MinVarsBytes || size > Firmware.MaxVarsBytes) throw new InvalidDataException($"a variable store of {size} bytes");
            var bytes = VarsWire.Unpack(p.GetProperty("gzip").GetBytesFromBase64());
            if (bytes.Length != size) throw new InvalidDataException($"{bytes.Length} bytes where its size says {size}");
            if (!string.Equals(Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(bytes)), sha, StringComparison.Ordinal))
                throw new InvalidDataException("SHA-256 does not match");
            return bytes;
        }
        catch (Exception e) when (e is InvalidDataException or FormatException or InvalidOperationException or KeyNotFoundException or IOException)
        {
            throw HavenException.Invalid($"the UEFI variable store in the backup is damaged: {e.Message}");
        }
    }
}

/// <summary>A variable store on the replication wire: gzip; unpacking stops past <see cref="Firmware.MaxVarsBytes"/> (a peer's bytes).</summary>
public static class VarsWire
{
    public static byte[] Pack(byte[] vars)
    {
        using var packed = new MemoryStream();
        using (var gz = new System.IO.Compression.GZipStream(packed, System.IO.Compression.CompressionLevel.Fastest, leaveOpen: true)) gz.Write(vars);
        return packed.ToArray();
    }

    public static byte[] Unpack(ReadOnlySpan<byte> packed)
    {
        using var gz = new System.IO.Compression.GZipStream(new MemoryStream(packed.ToArray()), System.IO.Compression.CompressionMode.Decompress);
        using var output = new MemoryStream();
        var buffer = new byte[81920];
        int n;
        while ((n = gz.Read(buffer)) > 0)
        {
            if (output.Length + n > Firmware.MaxVarsBytes) throw new InvalidDataException($"larger than {Firmware.MaxVarsBytes >> 20} MiB");
            output.Write(buffer, 0, n);
        }
        return output.ToArray();
    }
}
