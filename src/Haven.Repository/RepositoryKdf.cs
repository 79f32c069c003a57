using System.Security.Cryptography;
using System.Text;
using NSec.Cryptography;

namespace Haven.Repository;

/// <summary>
/// How a repository's passphrase is stretched into the key that wraps its master key (the <c>kdf</c> field of
/// the config). New repositories use Argon2id (memory-hard); PBKDF2-HMAC-SHA256, what Haven used first, stays
/// readable. The cost is read from an unauthenticated object, so both algorithms have bounds: outside them a
/// config is refused before any derivation runs (a hostile config can neither make opening take minutes and
/// gigabytes nor make the passphrase cheap to guess). docs/repository-format.md, "config and keys".
/// </summary>
public sealed record RepositoryKdf
{
    public const string Argon2idAlgorithm = "argon2id";
    public const string Pbkdf2Algorithm = "pbkdf2-hmac-sha256";

    /// <summary>The Argon2 version (1.3, 0x13) — the only one libsodium and RFC 9106 define for Argon2id.</summary>
    public const int Argon2Version = 0x13;

    /// <summary>OWASP's smallest Argon2id memory (19 MiB with 2 passes); less is refused.</summary>
    public const int MinArgon2MemoryKiB = 19 * 1024;
    /// <summary>1 GiB: the most memory a config may make a host spend on opening.</summary>
    public const int MaxArgon2MemoryKiB = 1024 * 1024;
    public const int MinArgon2Passes = 2;
    public const int MaxArgon2Passes = 10;
    /// <summary>PBKDF2-HMAC-SHA256 floor (readable, never written now) and ceiling (about 3.5 s on the development VM).</summary>
    public const int MinPbkdf2Iterations = 100_000;
    public const int MaxPbkdf2Iterations = 10_000_000;
    public const int Argon2SaltBytes = 16;

    private RepositoryKdf(string algorithm, int iterations, int memoryKiB)
    {
        Algorithm = algorithm;
        Iterations = iterations;
        MemoryKiB = memoryKiB;
    }

    /// <summary><see cref="Argon2idAlgorithm"/> or <see cref="Pbkdf2Algorithm"/>.</summary>
    public string Algorithm { get; }

    /// <summary>Argon2id passes (time cost), or PBKDF2 iterations.</summary>
    public int Iterations { get; }

    /// <summary>Argon2id memory in KiB; 0 for PBKDF2.</summary>
    public int MemoryKiB { get; }

    /// <summary>Argon2id, one lane (libsodium's only choice). 64 MiB and 3 passes (RFC 9106's second recommendation) take about 0.15 s here.</summary>
    public static RepositoryKdf Argon2id(int memoryKiB = 64 * 1024, int passes = 3) => new(Argon2idAlgorithm, passes, memoryKiB);

    /// <summary>PBKDF2-HMAC-SHA256 as repositories made before Argon2id use it (600 000 iterations, OWASP 2023).</summary>
    public static RepositoryKdf Pbkdf2(int iterations = 600_000) => new(Pbkdf2Algorithm, iterations, 0);

    /// <summary>What new repositories use.</summary>
    public static RepositoryKdf Default { get; } = Argon2id();

    /// <summary>The cheapest setting the bounds allow (about 30 ms): for tests, which create many repositories.</summary>
    public static RepositoryKdf Cheapest { get; } = Argon2id(MinArgon2MemoryKiB, MinArgon2Passes);

    public override string ToString() => Algorithm == Argon2idAlgorithm ? $"argon2id (memory {MemoryKiB} KiB, {Iterations} passes)" : $"{Algorithm} ({Iterations} iterations)";

    /// <summary>Why these parameters are refused (outside the bounds, unknown algorithm), or null. Checked before any derivation.</summary>
    internal static string? Problem(string algorithm, int iterations, int? memoryKiB, int? parallelism, int? version, int saltLength) => algorithm switch
    {
        Argon2idAlgorithm when version != Argon2Version => $"argon2id version {version?.ToString() ?? "missing"} is not {Argon2Version} (Argon2 1.3)",
        Argon2idAlgorithm when parallelism != 1 => $"argon2id parallelism {parallelism?.ToString() ?? "missing"} is not 1",
        Argon2idAlgorithm when memoryKiB is not (>= MinArgon2MemoryKiB and <= MaxArgon2MemoryKiB)
            => $"argon2id memory {memoryKiB?.ToString() ?? "missing"} KiB is outside {MinArgon2MemoryKiB}..{MaxArgon2MemoryKiB} KiB",
        Argon2idAlgorithm when iterations is < MinArgon2Passes or > MaxArgon2Passes
            => $"argon2id passes {iterations} are outside {MinArgon2Passes}..{MaxArgon2Passes}",
        Argon2idAlgorithm when saltLength != Argon2SaltBytes => $"argon2id salt is {saltLength} bytes, not {Argon2SaltBytes}",
        Argon2idAlgorithm => null,
        Pbkdf2Algorithm when memoryKiB is not null || parallelism is not null || version is not null => "pbkdf2-hmac-sha256 takes no memory, parallelism or version",
        Pbkdf2Algorithm when iterations is < MinPbkdf2Iterations or > MaxPbkdf2Iterations
            => $"pbkdf2-hmac-sha256 iterations {iterations} are outside {MinPbkdf2Iterations}..{MaxPbkdf2Iterations}",
        Pbkdf2Algorithm when saltLength is < 16 or > 64 => $"pbkdf2-hmac-sha256 salt is {saltLength} bytes, not 16..64",
        Pbkdf2Algorithm => null,
        _ => $"unknown key derivation \"{algorithm}\"",
    };

    internal void Validate()
    {
        var problem = Algorithm == Argon2idAlgorithm
            ? Problem(Algorithm, Iterations, MemoryKiB, 1, Argon2Version, Argon2SaltBytes)
            : Problem(Algorithm, Iterations, null, null, null, 32);
        if (problem is not null) throw new ArgumentOutOfRangeException("Kdf", this, $"key derivation out of bounds: {problem}");
    }

    /// <summary>The 32-byte key of <paramref name="passphrase"/> (UTF-8, not normalised); the parameters must have passed <see cref="Problem"/>.</summary>
    internal static byte[] Derive(string algorithm, string passphrase, byte[] salt, int iterations, int memoryKiB)
    {
        var password = Encoding.UTF8.GetBytes(passphrase);
        try
        {
            if (algorithm == Pbkdf2Algorithm) return Rfc2898DeriveBytes.Pbkdf2(password, salt, iterations, HashAlgorithmName.SHA256, 32);
            var argon2 = PasswordBasedKeyDerivationAlgorithm.Argon2id(new Argon2Parameters { DegreeOfParallelism = 1, MemorySize = memoryKiB, NumberOfPasses = iterations });
            return argon2.DeriveBytes(password, salt, 32);
        }
        finally { CryptographicOperations.ZeroMemory(password); }
    }
}
