using System.Text.RegularExpressions;
using Xunit;

namespace Haven.Host.Tests;

/// <summary>
/// The crash points named in the code, CrashPoints.All, the table in docs/architecture.md and the crash tests
/// name the same steps: a step added in code without a doc row and a kill test (or the other way) fails here.
/// </summary>
public sealed partial class CrashPointListTests
{
    /// <summary>Steps no kill -9 test reaches yet, each with why.</summary>
    private static readonly Dictionary<string, string> Untested = new()
    {
        ["create.while-frozen"] = "needs a guest with qemu-ga (a Production checkpoint); the test guest runs without one in the end-to-end tests",
    };

    private static string Root()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Haven.slnx"))) return dir.FullName;
        throw new DirectoryNotFoundException("Haven.slnx not found above " + AppContext.BaseDirectory);
    }

    // CrashPoints.Hit("x"), StepAsync("x"), Step("x"), target.Step("x").
    [GeneratedRegex("""(?:\bHit|\bStepAsync|\bStep)\("([a-z0-9-]+\.[a-z0-9-]+)"\)""")]
    private static partial Regex Literal();

    // The point-in-time steps shared by backups and replication cycles: StepAsync(operationKind + ".x").
    [GeneratedRegex("""StepAsync\(operationKind \+ "(\.[a-z0-9-]+)"\)""")]
    private static partial Regex PerKind();

    [GeneratedRegex(@"^\| `([a-z0-9-]+\.[a-z0-9-]+)` \|", RegexOptions.Multiline)]
    private static partial Regex DocRow();

    [Fact]
    public void Code_list_doc_and_tests_name_the_same_steps()
    {
        var root = Root();
        var inCode = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var file in Directory.EnumerateFiles(Path.Combine(root, "src"), "*.cs", SearchOption.AllDirectories))
        {
            if (file.Contains("/obj/", StringComparison.Ordinal) || file.EndsWith("CrashPoints.cs", StringComparison.Ordinal)) continue;
            var text = File.ReadAllText(file);
            foreach (Match m in Literal().Matches(text)) inCode.Add(m.Groups[1].Value);
            foreach (Match m in PerKind().Matches(text))
                foreach (var kind in new[] { Backups.BackupService.OperationKind, Replication.ReplicationService.OperationKind })
                    inCode.Add(kind + m.Groups[1].Value);
        }
        Assert.Equal(inCode, new SortedSet<string>(CrashPoints.All, StringComparer.Ordinal));
        Assert.Equal(CrashPoints.All.Count, CrashPoints.All.Distinct().Count());

        var doc = File.ReadAllText(Path.Combine(root, "docs", "architecture.md"));
        doc = doc[doc.IndexOf("### Named steps", StringComparison.Ordinal)..];
        Assert.Equal(CrashPoints.All, DocRow().Matches(doc).Select(m => m.Groups[1].Value).ToList());

        var tests = string.Concat(Directory.EnumerateFiles(Path.Combine(root, "tests", "Haven.EndToEnd.Tests"), "*.cs").Select(File.ReadAllText));
        var untested = CrashPoints.All.Where(n => !tests.Contains('"' + n + '"', StringComparison.Ordinal)).ToList();
        Assert.Equal(Untested.Keys.Order(StringComparer.Ordinal), untested.Order(StringComparer.Ordinal));
    }
}
