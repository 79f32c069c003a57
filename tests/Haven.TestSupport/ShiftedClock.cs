namespace Haven.TestSupport;

/// <summary>
/// The system clock, moved so that it reads <paramref name="start"/> when made. Timers and delays run in real
/// time; only the reading moves. For tests whose outcome depends on where "now" falls (an hour boundary).
/// </summary>
public sealed class ShiftedClock(DateTimeOffset start) : TimeProvider
{
    private readonly TimeSpan _shift = start - System.GetUtcNow();

    public override DateTimeOffset GetUtcNow() => base.GetUtcNow() + _shift;
}
