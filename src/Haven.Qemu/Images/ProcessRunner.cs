using System.Diagnostics;

namespace Haven.Qemu.Images;

public sealed record ProcessResult(int ExitCode, string StandardOutput, string StandardError);

/// <summary>Runs a tool to completion, capturing its output; a non-zero exit becomes <see cref="ToolFailedException"/>.</summary>
public static class ProcessRunner
{
    public static async Task<ProcessResult> RunAsync(string fileName, IEnumerable<string> arguments, CancellationToken ct = default, bool throwOnError = true)
    {
        var psi = new ProcessStartInfo(fileName)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in arguments) psi.ArgumentList.Add(a);
        using var process = new Process { StartInfo = psi };
        try { process.Start(); }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new ToolFailedException(fileName, -1, $"{fileName} is not installed ({e.Message})");
        }
        var stdout = process.StandardOutput.ReadToEndAsync(ct);
        var stderr = process.StandardError.ReadToEndAsync(ct);
        try { await process.WaitForExitAsync(ct); }
        catch (OperationCanceledException)
        {
            try { process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            throw;
        }
        var result = new ProcessResult(process.ExitCode, await stdout, await stderr);
        if (throwOnError && result.ExitCode != 0)
            throw new ToolFailedException(fileName, result.ExitCode, FirstLine(result.StandardError) ?? FirstLine(result.StandardOutput) ?? $"exit code {result.ExitCode}");
        return result;
    }

    private static string? FirstLine(string text)
    {
        foreach (var line in text.Split('\n'))
            if (!string.IsNullOrWhiteSpace(line)) return line.Trim();
        return null;
    }
}

/// <summary>An external tool (qemu-img, qemu-system) exited with an error; Message is its first error line.</summary>
public sealed class ToolFailedException(string tool, int exitCode, string message) : Exception(message)
{
    public string Tool { get; } = tool;
    public int ExitCode { get; } = exitCode;
}
