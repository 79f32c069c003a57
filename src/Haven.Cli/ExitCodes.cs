namespace Haven.Cli;

/// <summary>Process exit codes of haven; docs/cli.md lists them too.</summary>
public static class ExitCodes
{
    public const int Ok = 0;
    /// <summary>havend reported an error whose code has no exit code of its own, or its answer made no sense.</summary>
    public const int Error = 1;
    /// <summary>Bad command line, or havend answered "invalid_argument".</summary>
    public const int InvalidArgument = 2;
    /// <summary>havend answered "not_found".</summary>
    public const int NotFound = 3;
    /// <summary>havend answered "conflict" (e.g. the VM is in the wrong state, the name is taken).</summary>
    public const int Conflict = 4;
    /// <summary>havend could not be reached.</summary>
    public const int Unreachable = 5;
    /// <summary>Interrupted (Ctrl-C).</summary>
    public const int Cancelled = 130;

    public static int ForErrorCode(string code) => code switch
    {
        "invalid_argument" => InvalidArgument,
        "not_found" => NotFound,
        "conflict" => Conflict,
        _ => Error,
    };

    public const string HelpText =
        """
        Exit codes:
          0    success
          1    error reported by havend (other than the ones below), or an unexpected answer
          2    invalid command line, or havend answered invalid_argument
          3    not found (havend answered not_found)
          4    conflict (havend answered conflict, e.g. wrong VM state or name taken)
          5    havend cannot be reached
          130  interrupted
        """;
}
