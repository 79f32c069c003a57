using System.Security.Cryptography;
using Haven.Qemu;

namespace Haven.Daemon;

/// <summary>
/// The bearer token clients present; generated on first start, readable only by the owner. Whoever holds it can
/// make havend (root) read and write any path (imports, exports, restores), so it is worth root.
/// </summary>
public static class ApiToken
{
    public static string LoadOrCreate(string path)
    {
        if (File.Exists(path)) return File.ReadAllText(path).Trim();
        var token = Convert.ToHexString(RandomNumberGenerator.GetBytes(32)).ToLowerInvariant();
        // Owner-only from creation (O_CREAT|O_EXCL with mode 0600), then renamed into place: the token is never
        // readable by others, nor ever seen half-written.
        var tmp = path + ".tmp";
        File.Delete(tmp);
        using (var f = OwnerOnly.CreateFile(tmp))
        {
            f.Write(System.Text.Encoding.ASCII.GetBytes(token));
            f.Flush(flushToDisk: true);
        }
        File.Move(tmp, path, overwrite: true);
        return token;
    }
}
