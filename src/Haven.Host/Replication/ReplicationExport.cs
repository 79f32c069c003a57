using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using Haven.Api;

namespace Haven.Host.Replication;

/// <summary>
/// Initial replication by external media (Hyper-V's "send initial copy using external media"): the first cycle
/// is written to a folder instead of the network, carried to the replica host, and imported there; from then on
/// cycles go over the network as usual. The folder (made owner-only, 0700; every file 0600) holds
/// <c>cycle.bin</c> (the extents), the VM's <c>kernel</c> and <c>initrd</c> when it boots from them (their bytes: a
/// replica never takes a path on its own host from a primary), <c>replica.json</c> (the replica's definition, the cycle
/// header, each file's length and SHA-256, the primary's certificate) and <c>replica.sig</c> (the primary's host key's
/// signature of replica.json). Format: docs/replication.md, "Initial replication".
/// </summary>
public sealed class FolderReplicaTarget(string folder, X509Certificate2 signer) : IReplicaTarget
{
    public const string DefinitionFile = ExportMedia.DefinitionFile;
    public const string ExtentsFile = ExportMedia.ExtentsFile;
    private ReplicaCreateSpec? _spec;

    public Task<long> EnsureReplicaAsync(ReplicaCreateSpec spec, CancellationToken ct)
    {
        if (!Directory.Exists(folder)) throw HavenException.Invalid($"export folder does not exist: {folder}");
        if (File.Exists(Path.Combine(folder, DefinitionFile))) throw HavenException.Conflict($"{folder} already holds an exported replica");
        _spec = spec;
        return Task.FromResult(0L);
    }

    public Task<long?> LastCycleAsync(string primaryVmId, CancellationToken ct) => Task.FromResult<long?>(0);

    public Task<byte[][]> HashBlocksAsync(string primaryVmId, IReadOnlyList<long> diskSizes, CancellationToken ct)
        => throw HavenException.Invalid("an export folder cannot be compared block by block");

    public async Task<long> SendCycleAsync(string primaryVmId, ReplicaCycleHeader header, IAsyncEnumerable<ReplicaExtent> extents, CancellationToken ct)
    {
        var spec = _spec ?? throw new InvalidOperationException("EnsureReplicaAsync comes first");
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(folder, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var files = new Dictionary<string, ExportedFile>();
        files[ExtentsFile] = await ExportMedia.WriteAsync(folder, ExtentsFile, async file =>
        {
            var head = new byte[21];
            await foreach (var e in extents.WithCancellation(ct))
            {
                BinaryPrimitives.WriteInt32LittleEndian(head, e.Disk);
                BinaryPrimitives.WriteInt64LittleEndian(head.AsSpan(4), e.Offset);
                BinaryPrimitives.WriteInt32LittleEndian(head.AsSpan(12), e.Length);
                head[16] = e.Data is null ? (byte)1 : (byte)0;
                BinaryPrimitives.WriteInt32LittleEndian(head.AsSpan(17), e.Data?.Length ?? 0);
                await file.WriteAsync(head, ct);
                if (e.Data is { } data) await file.WriteAsync(data, ct);
            }
        }, ct);
        foreach (var (name, source) in new[] { (ExportMedia.KernelFile, spec.Kernel), (ExportMedia.InitrdFile, spec.Initrd) })
        {
            if (source is null) continue;
            files[name] = await ExportMedia.WriteAsync(folder, name, async file =>
            {
                await using var from = File.OpenRead(source);
                if (from.Length > ReplicaService.MaxBootFileBytes) throw HavenException.Invalid($"{source} is larger than {ReplicaService.MaxBootFileBytes} bytes");
                await from.CopyToAsync(file, ct);
            }, ct);
        }
        var name0 = signer.GetNameInfo(X509NameType.SimpleName, false);
        var definition = new ExportedReplica
        {
            PrimaryHost = name0,
            Spec = spec with { PrimaryHost = name0, Kernel = null, Initrd = null },
            // An export folder carries no variable store: the first network cycle sends it (docs/replication.md).
            Header = header with { UefiVars = null },
            Files = files,
            Certificate = signer.ExportCertificatePem(),
        };
        var json = JsonSerializer.SerializeToUtf8Bytes(definition, ApiJson.Options);
        await ExportMedia.WriteAsync(folder, ExportMedia.SignatureFile, f => f.WriteAsync(ExportMedia.Sign(signer, json), ct).AsTask(), ct);
        await ExportMedia.WriteAsync(folder, DefinitionFile, f => f.WriteAsync(json, ct).AsTask(), ct); // last: its presence means complete
        return header.Cycle;
    }

    public Task FailoverAsync(string primaryVmId, bool start, CancellationToken ct) => throw HavenException.Invalid("an export folder cannot fail over");

    public Task CheckFailoverAsync(string primaryVmId, IReadOnlyDictionary<string, string>? failoverNetwork, CancellationToken ct)
        => throw HavenException.Invalid("an export folder cannot fail over");

    public Task<string> ReverseAsync(string primaryVmId, string newReplicaHost, ReplicationSettings settings, CancellationToken ct)
        => throw HavenException.Invalid("an export folder cannot replicate back");

    /// <summary>Reads an exported folder's extents (replica side, <see cref="ReplicaService.ImportAsync"/>) from <paramref name="source"/>, which it disposes.</summary>
    public static async IAsyncEnumerable<ReplicaExtent> ReadExtentsAsync(Stream source, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct)
    {
        await using var file = source;
        var head = new byte[21];
        var data = new byte[ReplicaService.MaxExtentBytes];
        while (true)
        {
            var n = await file.ReadAtLeastAsync(head, head.Length, throwOnEndOfStream: false, ct);
            if (n == 0) yield break;
            if (n != head.Length) throw HavenException.Invalid($"{ExtentsFile} is truncated");
            var disk = BinaryPrimitives.ReadInt32LittleEndian(head);
            var offset = BinaryPrimitives.ReadInt64LittleEndian(head.AsSpan(4));
            var length = BinaryPrimitives.ReadInt32LittleEndian(head.AsSpan(12));
            var dataLength = BinaryPrimitives.ReadInt32LittleEndian(head.AsSpan(17));
            if (head[16] == 1) { yield return new ReplicaExtent(disk, offset, length, null); continue; }
            if (head[16] != 0 || dataLength != length || length <= 0 || length > data.Length) throw HavenException.Invalid($"{ExtentsFile} holds a malformed extent at {offset}");
            if (await file.ReadAtLeastAsync(data.AsMemory(0, length), length, throwOnEndOfStream: false, ct) != length) throw HavenException.Invalid($"{ExtentsFile} is truncated");
            yield return new ReplicaExtent(disk, offset, length, data.AsMemory(0, length));
        }
    }
}

/// <summary>A file of an export folder, as its signed definition describes it.</summary>
public sealed record ExportedFile(long Length, string Sha256);

/// <summary>The definition an export folder carries (replica.json), signed in replica.sig.</summary>
public sealed record ExportedReplica
{
    public required string PrimaryHost { get; init; }
    public required ReplicaCreateSpec Spec { get; init; }
    public required ReplicaCycleHeader Header { get; init; }
    /// <summary>Every other file of the folder: cycle.bin, and kernel / initrd when the VM has them.</summary>
    public Dictionary<string, ExportedFile> Files { get; init; } = [];
    /// <summary>The primary's host certificate (PEM): its key signed replica.json.</summary>
    public string Certificate { get; init; } = "";
}

/// <summary>
/// An export folder opened for import: its signature checked against the certificate it carries (whether that
/// certificate is trusted and authorized is the caller's decision), its files checked against the signed lengths and
/// hashes, before and again while they are read.
/// </summary>
public sealed class ExportMedia
{
    public const string DefinitionFile = "replica.json";
    public const string SignatureFile = "replica.sig";
    public const string ExtentsFile = "cycle.bin";
    public const string KernelFile = "kernel";
    public const string InitrdFile = "initrd";
    private const int MaxDefinitionBytes = 1 << 20;

    private readonly string _folder;

    private ExportMedia(string folder, ExportedReplica definition, X509Certificate2 signer)
    {
        _folder = folder;
        Definition = definition;
        Signer = signer;
    }

    public ExportedReplica Definition { get; }
    /// <summary>The certificate whose key signed the folder (not yet checked against any trust store).</summary>
    public X509Certificate2 Signer { get; }

    public bool Has(string file) => Definition.Files.ContainsKey(file);
    public long Length(string file) => Definition.Files[file].Length;

    /// <summary>Reads and checks the definition and its signature; throws <see cref="HavenException"/> (invalid) with one line.</summary>
    public static async Task<ExportMedia> OpenAsync(string folder, CancellationToken ct)
    {
        var definitionPath = Path.Combine(folder, DefinitionFile);
        var signaturePath = Path.Combine(folder, SignatureFile);
        if (!File.Exists(definitionPath)) throw HavenException.Invalid($"{folder} holds no exported replica ({DefinitionFile} is missing)");
        if (!File.Exists(signaturePath)) throw HavenException.Invalid($"{folder} is not signed ({SignatureFile} is missing); export it again with this version");
        if (new FileInfo(definitionPath).Length > MaxDefinitionBytes) throw HavenException.Invalid($"{definitionPath} is too large to be an exported replica");
        var json = await File.ReadAllBytesAsync(definitionPath, ct);
        var signature = await File.ReadAllBytesAsync(signaturePath, ct);
        ExportedReplica exported;
        try { exported = JsonSerializer.Deserialize<ExportedReplica>(json, ApiJson.Options) ?? throw new JsonException("null"); }
        catch (JsonException e) { throw HavenException.Invalid($"{definitionPath} is not an exported replica: {e.Message.Split('\n')[0]}"); }
        X509Certificate2 signer;
        try { signer = X509Certificate2.CreateFromPem(exported.Certificate); }
        catch (Exception e) when (e is CryptographicException or ArgumentException)
        {
            throw HavenException.Invalid($"{definitionPath} does not carry a readable primary certificate");
        }
        if (!Verify(signer, json, signature))
        {
            signer.Dispose();
            throw HavenException.Invalid($"the signature of {folder} does not match: the folder was changed after the primary signed it, or not signed by the certificate it carries");
        }
        if (!exported.Files.ContainsKey(ExtentsFile) || exported.Files.Keys.Any(k => k is not (ExtentsFile or KernelFile or InitrdFile))
            || exported.Files.ContainsKey(InitrdFile) && !exported.Files.ContainsKey(KernelFile)
            || exported.Files.Values.Any(f => f is null || f.Length < 0 || f.Sha256 is not { Length: 64 })
            || exported.Spec.Kernel is not null || exported.Spec.Initrd is not null)
        {
            signer.Dispose();
            throw HavenException.Invalid($"{definitionPath} lists unexpected files");
        }
        return new ExportMedia(folder, exported, signer);
    }

    /// <summary>Hashes every file and compares with the signed definition; throws on the first difference.</summary>
    public async Task VerifyFilesAsync(CancellationToken ct)
    {
        foreach (var name in Definition.Files.Keys)
        {
            await using var s = Open(name);
            await s.CopyToAsync(Stream.Null, ct);
        }
    }

    /// <summary>A file of the folder that throws, at its end, when its length or SHA-256 is not the signed one.</summary>
    public Stream Open(string name)
    {
        var expected = Definition.Files[name];
        var path = Path.Combine(_folder, name);
        if (!File.Exists(path)) throw HavenException.Invalid($"{_folder} lacks {name}");
        return new CheckedStream(File.OpenRead(path), expected, path);
    }

    /// <summary>A stream's bytes in 1 MiB chunks (disposes it).</summary>
    public static async IAsyncEnumerable<ReadOnlyMemory<byte>> Chunks(Stream source, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct)
    {
        await using var _ = source;
        var buffer = new byte[1 << 20];
        int n;
        while ((n = await source.ReadAsync(buffer, ct)) > 0) yield return buffer.AsMemory(0, n);
    }

    /// <summary>Writes <paramref name="name"/> owner-only (0600) through a temporary file, fsynced; returns its length and hash.</summary>
    internal static async Task<ExportedFile> WriteAsync(string folder, string name, Func<Stream, Task> write, CancellationToken ct)
    {
        var path = Path.Combine(folder, name);
        var partial = path + ".partial";
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        long length;
        await using (var file = CreateOwnerOnly(partial))
        {
            await using var hashing = new HashingStream(file, sha);
            await write(hashing);
            await hashing.FlushAsync(ct);
            file.Flush(flushToDisk: true);
            length = file.Length;
        }
        File.Move(partial, path, overwrite: true);
        return new ExportedFile(length, Convert.ToHexString(sha.GetHashAndReset()));
    }

    /// <summary>A new (or truncated) file only its owner may read or write (0600, also when it existed before).</summary>
    internal static FileStream CreateOwnerOnly(string path)
    {
        const UnixFileMode OwnerOnly = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        var options = new FileStreamOptions { Mode = FileMode.Create, Access = FileAccess.Write, Options = FileOptions.Asynchronous, BufferSize = 1 << 20 };
        if (!OperatingSystem.IsWindows()) options.UnixCreateMode = OwnerOnly;
        var file = new FileStream(path, options);
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(file.SafeFileHandle, OwnerOnly);
        return file;
    }

    internal static byte[] Sign(X509Certificate2 cert, byte[] data)
    {
        if (cert.GetECDsaPrivateKey() is { } ec) using (ec) return ec.SignData(data, HashAlgorithmName.SHA256);
        if (cert.GetRSAPrivateKey() is { } rsa) using (rsa) return rsa.SignData(data, HashAlgorithmName.SHA256, RSASignaturePadding.Pss);
        throw HavenException.Invalid("this host's key cannot sign (neither ECDSA nor RSA)");
    }

    private static bool Verify(X509Certificate2 cert, byte[] data, byte[] signature)
    {
        try
        {
            if (cert.GetECDsaPublicKey() is { } ec) using (ec) return ec.VerifyData(data, signature, HashAlgorithmName.SHA256);
            if (cert.GetRSAPublicKey() is { } rsa) using (rsa) return rsa.VerifyData(data, signature, HashAlgorithmName.SHA256, RSASignaturePadding.Pss);
        }
        catch (CryptographicException) { }
        return false;
    }

    /// <summary>Write-through stream that hashes what passes.</summary>
    private sealed class HashingStream(Stream inner, IncrementalHash hash) : Stream
    {
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => inner.Length;
        public override long Position { get => inner.Position; set => throw new NotSupportedException(); }
        public override void Flush() => inner.Flush();
        public override Task FlushAsync(CancellationToken ct) => inner.FlushAsync(ct);
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count)
        {
            hash.AppendData(buffer, offset, count);
            inner.Write(buffer, offset, count);
        }
        public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken ct = default)
        {
            hash.AppendData(buffer.Span);
            await inner.WriteAsync(buffer, ct);
        }
        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken ct) => WriteAsync(buffer.AsMemory(offset, count), ct).AsTask();
        protected override void Dispose(bool disposing) { } // the caller owns inner
        public override ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }

    /// <summary>Read stream that checks length and SHA-256 against the signed values when it reaches the end.</summary>
    private sealed class CheckedStream(FileStream inner, ExportedFile expected, string path) : Stream
    {
        private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        private long _read;
        private bool _checked;

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => _read; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override int Read(byte[] buffer, int offset, int count) => Check(inner.Read(buffer, offset, count), buffer.AsSpan(offset));
        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken ct = default)
            => Check(await inner.ReadAsync(buffer, ct), buffer.Span);
        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken ct) => ReadAsync(buffer.AsMemory(offset, count), ct).AsTask();

        private int Check(int n, ReadOnlySpan<byte> data)
        {
            _read += n;
            if (_read > expected.Length) throw Tampered();
            _hash.AppendData(data[..n]);
            if (n == 0 && !_checked && (_checked = true) && (_read != expected.Length || !string.Equals(Convert.ToHexString(_hash.GetHashAndReset()), expected.Sha256, StringComparison.OrdinalIgnoreCase)))
                throw Tampered();
            return n;
        }

        private HavenException Tampered() => HavenException.Invalid($"{path} is not the file the primary signed (its length or SHA-256 differs)");

        protected override void Dispose(bool disposing)
        {
            if (disposing) { inner.Dispose(); _hash.Dispose(); }
            base.Dispose(disposing);
        }
    }
}
