using Haven.Storage;

namespace Haven.Storage.S3;

/// <summary>
/// Where a store lives in S3: "s3://bucket" or "s3://bucket/some/prefix". The prefix follows
/// <see cref="ObjectKey"/>'s rule; object key k is stored at "prefix/k" (or "k" without a prefix).
/// </summary>
public sealed record S3Location(string Bucket, string Prefix)
{
    public const string Scheme = "s3://";

    public static bool IsS3(string text) => text.StartsWith(Scheme, StringComparison.Ordinal);

    public static bool TryParse(string text, out S3Location? location, out string error)
    {
        location = null;
        if (text is null || !IsS3(text)) { error = "an S3 location starts with s3://"; return false; }
        var rest = text[Scheme.Length..];
        var slash = rest.IndexOf('/');
        var bucket = slash < 0 ? rest : rest[..slash];
        var prefix = slash < 0 ? "" : rest[(slash + 1)..];
        if (prefix.EndsWith('/')) prefix = prefix[..^1];
        if (CheckBucket(bucket) is { } why) { error = $"invalid bucket name \"{bucket}\": {why}"; return false; }
        if (prefix.Length > 0 && !ObjectKey.IsValid(prefix))
        {
            error = $"invalid prefix \"{prefix}\": segments of a-z, 0-9, '.', '_', '-' separated by single '/', none starting with '.'";
            return false;
        }
        location = new S3Location(bucket, prefix);
        error = "";
        return true;
    }

    public static S3Location Parse(string text)
        => TryParse(text, out var location, out var error) ? location! : throw new FormatException(error);

    public override string ToString() => Prefix.Length == 0 ? Scheme + Bucket : $"{Scheme}{Bucket}/{Prefix}";

    /// <summary>S3's bucket naming rules (general purpose buckets); null when valid.</summary>
    private static string? CheckBucket(string bucket)
    {
        if (bucket.Length is < 3 or > 63) return "must be 3 to 63 characters long";
        foreach (var c in bucket)
            if (!(c is >= 'a' and <= 'z' or >= '0' and <= '9' or '.' or '-')) return "only a-z, 0-9, '.' and '-' are allowed";
        if (!char.IsAsciiLetterOrDigit(bucket[0]) || !char.IsAsciiLetterOrDigit(bucket[^1])) return "must start and end with a letter or digit";
        if (bucket.Contains("..", StringComparison.Ordinal)) return "must not contain \"..\"";
        if (System.Net.IPAddress.TryParse(bucket, out _) && bucket.Split('.').Length == 4) return "must not look like an IP address";
        if (bucket.StartsWith("xn--", StringComparison.Ordinal) || bucket.StartsWith("sthree-", StringComparison.Ordinal)) return "reserved prefix";
        if (bucket.EndsWith("-s3alias", StringComparison.Ordinal) || bucket.EndsWith("--ol-s3", StringComparison.Ordinal)) return "reserved suffix";
        return null;
    }
}
