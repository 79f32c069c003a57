using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Haven.Repository;

/// <summary>
/// The plain-JSON <c>config</c> object: everything a new host needs, besides the passphrase, to open the
/// repository. The master key is stored wrapped (AES-256-GCM) under a key derived from the passphrase
/// (PBKDF2-HMAC-SHA256); the repository's fixed parameters are the wrap's associated data, so editing
/// any of them makes the passphrase fail rather than silently changing behaviour.
/// </summary>
internal sealed record RepositoryConfig
{
    public const string FormatName = "haven-backup-repository";
    /// <summary>Version 2: summaries and binary chunk indexes. Version 1 (manifests) is read, never written to.</summary>
    public const int CurrentVersion = 2;
    /// <summary>A config is a few hundred bytes; anything much larger is not one (and is not read whole).</summary>
    public const int MaxConfigBytes = 64 * 1024;
    public const string WrapAlgorithm = "aes-256-gcm";

    public required string Format { get; init; }
    public required int Version { get; init; }
    public required string Id { get; init; }
    public required DateTimeOffset CreatedAt { get; init; }
    public required int ChunkSize { get; init; }
    public required long GcGracePeriodSeconds { get; init; }
    public required long LockStaleSeconds { get; init; }
    public required KdfParameters Kdf { get; init; }
    public required WrappedKey MasterKey { get; init; }
    /// <summary>Optional (absent in configs written before it existed): object-lock retention of backups.</summary>
    public ImmutabilityConfig? Immutability { get; init; }

    internal sealed record ImmutabilityConfig
    {
        public const string Governance = "governance";
        public const string Compliance = "compliance";

        public required string Mode { get; init; }
        public required int Days { get; init; }

        public static ImmutabilityConfig Of(RepositoryImmutability p) => new() { Mode = p.Mode == Haven.Storage.RetentionMode.Compliance ? Compliance : Governance, Days = p.Days };

        public RepositoryImmutability ToPolicy() => new() { Mode = Mode == Compliance ? Haven.Storage.RetentionMode.Compliance : Haven.Storage.RetentionMode.Governance, Days = Days };
    }

    /// <summary>
    /// The <c>kdf</c> field. <c>algorithm</c> says which fields follow: "pbkdf2-hmac-sha256" (iterations, salt)
    /// or "argon2id" (version 19, memoryKiB, iterations = passes, parallelism 1, salt of 16 bytes).
    /// </summary>
    internal sealed record KdfParameters
    {
        public required string Algorithm { get; init; }
        public int? Version { get; init; }
        public int? MemoryKiB { get; init; }
        public required int Iterations { get; init; }
        public int? Parallelism { get; init; }
        public required byte[] Salt { get; init; }

        public static KdfParameters New(RepositoryKdf kdf) => kdf.Algorithm == RepositoryKdf.Argon2idAlgorithm
            ? new()
            {
                Algorithm = kdf.Algorithm, Version = RepositoryKdf.Argon2Version, MemoryKiB = kdf.MemoryKiB, Iterations = kdf.Iterations, Parallelism = 1,
                Salt = RandomNumberGenerator.GetBytes(RepositoryKdf.Argon2SaltBytes),
            }
            : new() { Algorithm = kdf.Algorithm, Iterations = kdf.Iterations, Salt = RandomNumberGenerator.GetBytes(32) };

        public string? Problem() => RepositoryKdf.Problem(Algorithm, Iterations, MemoryKiB, Parallelism, Version, Salt.Length);

        public override string ToString() => $"{Algorithm}/{Version}/{MemoryKiB}/{Iterations}/{Parallelism}/{Convert.ToBase64String(Salt)}";
    }

    internal sealed record WrappedKey
    {
        public required string Algorithm { get; init; }
        public required byte[] Nonce { get; init; }
        public required byte[] Ciphertext { get; init; }
        public required byte[] Tag { get; init; }
    }

    [JsonIgnore] public TimeSpan GcGracePeriod => TimeSpan.FromSeconds(GcGracePeriodSeconds);
    [JsonIgnore] public TimeSpan LockStaleAfter => TimeSpan.FromSeconds(LockStaleSeconds);

    /// <summary>A new repository's config with a fresh random id, salt and master key; returns the master key too.</summary>
    public static (RepositoryConfig Config, byte[] MasterKey) Create(string passphrase, RepositoryOptions options, DateTimeOffset now)
    {
        var masterKey = RandomNumberGenerator.GetBytes(32);
        var config = new RepositoryConfig
        {
            Format = FormatName,
            Version = options.FormatVersion,
            Id = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(32)),
            CreatedAt = now,
            ChunkSize = options.ChunkSize,
            GcGracePeriodSeconds = (long)options.GcGracePeriod.TotalSeconds,
            LockStaleSeconds = (long)options.LockStaleAfter.TotalSeconds,
            Kdf = KdfParameters.New(options.Kdf),
            MasterKey = new WrappedKey { Algorithm = WrapAlgorithm, Nonce = [], Ciphertext = [], Tag = [] },
            Immutability = options.Immutability is { } imm ? ImmutabilityConfig.Of(imm) : null,
        };
        var nonce = RandomNumberGenerator.GetBytes(12);
        var ciphertext = new byte[32];
        var tag = new byte[16];
        var kek = config.DeriveKek(passphrase);
        try
        {
            using var aes = new AesGcm(kek, 16);
            aes.Encrypt(nonce, masterKey, ciphertext, tag, config.AssociatedData());
        }
        finally { CryptographicOperations.ZeroMemory(kek); }
        return (config with { MasterKey = new WrappedKey { Algorithm = WrapAlgorithm, Nonce = nonce, Ciphertext = ciphertext, Tag = tag } }, masterKey);
    }

    /// <summary>
    /// This config at <paramref name="version"/>: the same master key unwrapped with <paramref name="passphrase"/> and
    /// wrapped again under the same KEK (fresh nonce), with the new version in the associated data.
    /// </summary>
    public RepositoryConfig WithVersion(int version, string passphrase)
    {
        var masterKey = UnwrapMasterKey(passphrase);
        var next = this with { Version = version };
        var nonce = RandomNumberGenerator.GetBytes(12);
        var ciphertext = new byte[32];
        var tag = new byte[16];
        var kek = DeriveKek(passphrase);
        try
        {
            using var aes = new AesGcm(kek, 16);
            aes.Encrypt(nonce, masterKey, ciphertext, tag, next.AssociatedData());
        }
        finally
        {
            CryptographicOperations.ZeroMemory(kek);
            CryptographicOperations.ZeroMemory(masterKey);
        }
        return next with { MasterKey = new WrappedKey { Algorithm = WrapAlgorithm, Nonce = nonce, Ciphertext = ciphertext, Tag = tag } };
    }

    public static RepositoryConfig Parse(byte[] json, string location)
    {
        RepositoryConfig? config;
        try { config = JsonSerializer.Deserialize<RepositoryConfig>(json, RepositoryJson.Options); }
        catch (JsonException e) { throw new NotARepositoryException($"{location}: the config object is not a Haven repository config ({e.Message.Split('\n')[0]})", e); }
        if (config is null || config.Format != FormatName)
            throw new NotARepositoryException($"{location}: the config object is not a Haven repository config");
        if (config.Version > CurrentVersion || config.Version < 1)
            throw new UnsupportedFormatException($"{location}: repository format version {config.Version} is not supported (this Haven reads version {CurrentVersion})");
        var why = config.Problem();
        if (why is not null) throw new NotARepositoryException($"{location}: the repository config is malformed: {why}");
        // Before any derivation: the cost comes from an object anyone with write access to the store can edit.
        if (config.Kdf.Problem() is { } kdf) throw new NotARepositoryException($"{location}: refusing the repository config's key derivation: {kdf}");
        return config;
    }

    private string? Problem()
    {
        if (Id.Length != 64 || !Id.All(char.IsAsciiHexDigitLower)) return "id is not 64 lower-case hex digits";
        if (ChunkSize < RepositoryOptions.MinChunkSize || ChunkSize > RepositoryOptions.MaxChunkSize || (ChunkSize & (ChunkSize - 1)) != 0) return $"chunk size {ChunkSize} is not a power of two from 64 KiB to 16 MiB";
        if (GcGracePeriodSeconds < 0 || LockStaleSeconds < 1) return "GC grace period or lock staleness out of range";
        if (MasterKey.Algorithm != WrapAlgorithm) return $"unknown key wrap \"{MasterKey.Algorithm}\"";
        if (Immutability is { } imm && (imm.Mode is not (ImmutabilityConfig.Governance or ImmutabilityConfig.Compliance) || imm.Days < 1 || imm.Days > RepositoryImmutability.MaxDays))
            return $"immutability {imm.Mode}/{imm.Days} days is not valid";
        if (MasterKey.Nonce.Length != 12 || MasterKey.Ciphertext.Length != 32 || MasterKey.Tag.Length != 16) return "wrapped master key has the wrong size";
        return null;
    }

    /// <summary>Unwraps the master key; a wrong passphrase (or an edited config) fails the GCM tag.</summary>
    public byte[] UnwrapMasterKey(string passphrase)
    {
        var kek = DeriveKek(passphrase);
        var masterKey = new byte[32];
        try
        {
            using var aes = new AesGcm(kek, 16);
            aes.Decrypt(MasterKey.Nonce, MasterKey.Ciphertext, MasterKey.Tag, masterKey, AssociatedData());
            return masterKey;
        }
        catch (AuthenticationTagMismatchException) { throw new WrongPassphraseException(Id); }
        finally { CryptographicOperations.ZeroMemory(kek); }
    }

    /// <summary>
    /// Key derivation is slow on purpose (hundreds of milliseconds), which a daemon running a backup every few
    /// minutes would pay each time. A process keeps the derived key of each (repository, KDF parameters,
    /// passphrase) it has opened, in memory only; a wrong passphrase derives a key that
    /// cannot unwrap the master key, so the cache never changes what is accepted.
    /// </summary>
    private byte[] DeriveKek(string passphrase)
    {
        var cacheKey = Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes($"{Id}\n{Kdf}\n{passphrase}")));
        lock (KekCache)
        {
            if (KekCache.TryGetValue(cacheKey, out var cached)) return (byte[])cached.Clone();
        }
        var kek = RepositoryKdf.Derive(Kdf.Algorithm, passphrase, Kdf.Salt, Kdf.Iterations, Kdf.MemoryKiB ?? 0);
        lock (KekCache)
        {
            if (KekCache.Count >= 64) KekCache.Clear();
            KekCache[cacheKey] = (byte[])kek.Clone();
        }
        return kek;
    }

    private static readonly Dictionary<string, byte[]> KekCache = [];

    /// <summary>
    /// "haven-backup-repository/1/&lt;id&gt;/&lt;chunkSize&gt;/&lt;grace s&gt;/&lt;stale s&gt;" in ASCII, followed by
    /// "/immutability/&lt;mode&gt;/&lt;days&gt;" when set: removing or weakening it breaks the key wrap.
    /// </summary>
    public byte[] AssociatedData() => Encoding.ASCII.GetBytes($"{FormatName}/{Version}/{Id}/{ChunkSize}/{GcGracePeriodSeconds}/{LockStaleSeconds}"
        + (Immutability is { } imm ? $"/immutability/{imm.Mode}/{imm.Days}" : ""));

    public byte[] ToJson() => JsonSerializer.SerializeToUtf8Bytes(this, RepositoryJson.Indented);
}
