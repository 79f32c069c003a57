using Haven.Api;
using Spectre.Console;

namespace Haven.Cli.Commands.Checkpoint;

/// <summary>Human renderings of checkpoints.</summary>
public static class CheckpointView
{
    public const string NowLabel = "Now";

    /// <summary>
    /// The checkpoint tree of <paramref name="vm"/>: children under their parent, oldest first, the current
    /// checkpoint marked and "Now" (the running state) hanging below it.
    /// </summary>
    public static Tree BuildTree(string vm, IReadOnlyList<CheckpointInfo> checkpoints)
    {
        var tree = new Tree(new Text(vm, new Style(decoration: Decoration.Bold)));
        var byName = checkpoints.ToDictionary(c => c.Name, StringComparer.Ordinal);
        var children = checkpoints
            .Where(c => c.Parent is not null && byName.ContainsKey(c.Parent))
            .ToLookup(c => c.Parent!, StringComparer.Ordinal);
        var roots = checkpoints.Where(c => c.Parent is null || !byName.ContainsKey(c.Parent));
        var visited = new HashSet<string>(StringComparer.Ordinal);
        var current = checkpoints.FirstOrDefault(c => c.IsCurrent);

        void AddChildren(IHasTreeNodes parent, IEnumerable<CheckpointInfo> nodes)
        {
            foreach (var cp in Ordered(nodes))
            {
                if (!visited.Add(cp.Name))
                    continue;
                var node = parent.AddNode(Label(cp));
                AddChildren(node, children[cp.Name]);
                if (cp == current)
                    node.AddNode(NowNode());
            }
        }

        AddChildren(tree, roots);
        // A parent cycle (which the daemon should never send) leaves nodes unreached; show them at the top.
        AddChildren(tree, checkpoints.Where(c => !visited.Contains(c.Name)));
        if (current is null)
            tree.AddNode(NowNode());
        return tree;
    }

    public static void RenderList(IAnsiConsole console, string vm, List<CheckpointInfo> checkpoints)
    {
        if (checkpoints.Count == 0)
        {
            console.Line($"VM '{vm}' has no checkpoints.");
            return;
        }
        console.Write(BuildTree(vm, checkpoints));
    }

    public static string Describe(CheckpointInfo cp) =>
        $"{cp.Kind}, {Consistency(cp.Consistency)}{(cp.HasSavedState ? ", with memory" : "")}, {Human.Time(cp.CreatedAt)}";

    public static string Consistency(Consistency c) => c switch
    {
        Api.Consistency.ApplicationConsistent => "application-consistent",
        Api.Consistency.CrashConsistent => "crash-consistent",
        _ => c.ToString(),
    };

    static IEnumerable<CheckpointInfo> Ordered(IEnumerable<CheckpointInfo> nodes) =>
        nodes.OrderBy(c => c.CreatedAt).ThenBy(c => c.Name, StringComparer.Ordinal);

    static Markup Label(CheckpointInfo cp)
    {
        var text = $"{Human.Escape(cp.Name)} [dim]({Human.Escape(Describe(cp))})[/]";
        return new Markup(cp.IsCurrent ? $"[bold]{text}[/] [green]<- current[/]" : text);
    }

    static Markup NowNode() => new($"[green]{NowLabel}[/]");
}
