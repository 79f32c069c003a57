namespace Haven.Host;

/// <summary>
/// Named places inside multi-step operations where tests make the daemon die with SIGKILL
/// (environment HAVEN_CRASH_AT=name), to prove that reconciliation on the next start repairs them.
/// </summary>
public static class CrashPoints
{
    private static readonly string? Armed = Environment.GetEnvironmentVariable("HAVEN_CRASH_AT");

    public static void Hit(string name)
    {
        if (Armed is not null && Armed == name)
            System.Diagnostics.Process.GetCurrentProcess().Kill(); // SIGKILL: no finally blocks, no flush
    }
}
