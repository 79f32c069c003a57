using System.Security.Cryptography;

namespace Haven.Daemon;

/// <summary>The bearer token clients present; generated on first start, readable only by the owner.</summary>
public static class ApiToken
{
    public static string LoadOrCreate(string path)
    {
        if (File.Exists(path)) return File.ReadAllText(path).Trim();
        var token = Convert.ToHexString(RandomNumberGenerator.GetBytes(32)).ToLowerInvariant();
        var tmp = path + ".tmp";
        File.WriteAllText(tmp, token);
        File.SetUnixFileMode(tmp, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        File.Move(tmp, path, overwrite: true);
        return token;
    }
}
