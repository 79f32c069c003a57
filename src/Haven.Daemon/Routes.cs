using Haven.Api;
using Haven.Host;
using Haven.Host.Backups;
using Haven.Host.Vms;

namespace Haven.Daemon;

/// <summary>The /v1 HTTP API (docs/api.md). Handlers only translate; the work happens in Haven.Host.</summary>
public static class Routes
{
    public static void Map(WebApplication app)
    {
        var v1 = app.MapGroup("/v1");
        DaemonLogging.LogOperations(v1);
        v1.MapGet("/host", (HavenHost h, CancellationToken ct) => HostInfoAsync(h, ct));

        v1.MapPost("/host/shutdown-vms", (HavenHost h, HostShutdownRequest? req, CancellationToken ct) =>
            h.Vms.ShutdownAllAsync(req ?? new HostShutdownRequest(), ct));

        v1.MapGet("/vms", (HavenHost h, CancellationToken ct) => h.Vms.ListAsync(ct));
        v1.MapPost("/vms", (HavenHost h, VmCreateRequest req, CancellationToken ct) => h.Vms.CreateAsync(req, ct));
        v1.MapPost("/vms/import-libvirt", (HavenHost h, LibvirtImportRequest req, CancellationToken ct) => LibvirtImport.RunAsync(h, req, ct));
        v1.MapGet("/vms/{name}", (HavenHost h, string name, CancellationToken ct) => h.Vms.ShowAsync(name, ct));
        v1.MapPatch("/vms/{name}", (HavenHost h, string name, VmUpdateRequest req, CancellationToken ct) => h.Vms.UpdateAsync(name, req, ct));
        v1.MapDelete("/vms/{name}", async (HavenHost h, string name, CancellationToken ct) =>
        {
            await h.Vms.RemoveAsync(name, ct);
            return Results.NoContent();
        });
        v1.MapPost("/vms/{name}/nics/{nic}/link", (HavenHost h, string name, string nic, NicLinkRequest req, CancellationToken ct) =>
            h.Vms.SetNicLinkAsync(name, nic, req.Up, ct));
        v1.MapPost("/vms/{name}/start", (HavenHost h, string name, CancellationToken ct) => h.Vms.StartAsync(name, ct));
        v1.MapPost("/vms/{name}/stop", (HavenHost h, string name, VmStopRequest? req, CancellationToken ct) => h.Vms.StopAsync(name, req ?? new VmStopRequest(), ct));

        ConsoleRoutes.Map(v1);

        v1.MapGet("/vms/{name}/checkpoints", (HavenHost h, string name) => h.Checkpoints.List(name));
        v1.MapPost("/vms/{name}/checkpoints", (HavenHost h, string name, CheckpointCreateRequest? req, CancellationToken ct) =>
            h.Checkpoints.CreateAsync(name, req?.Name, ct));
        v1.MapPost("/vms/{name}/checkpoints/{cp}/apply", (HavenHost h, string name, string cp, CheckpointApplyRequest? req, CancellationToken ct) =>
            h.Checkpoints.ApplyAsync(name, cp, req ?? new CheckpointApplyRequest(), ct));
        v1.MapPost("/vms/{name}/checkpoints/{cp}/rename", (HavenHost h, string name, string cp, CheckpointRenameRequest req, CancellationToken ct) =>
            h.Checkpoints.RenameAsync(name, cp, req.NewName, ct));
        v1.MapDelete("/vms/{name}/checkpoints/{cp}", (HavenHost h, string name, string cp, bool? subtree, CancellationToken ct) =>
            h.Removal.RemoveAsync(name, cp, subtree ?? false, ct));
        v1.MapPost("/vms/{name}/checkpoints/{cp}/export", (HavenHost h, string name, string cp, CheckpointExportRequest req, CancellationToken ct) =>
            h.Checkpoints.ExportAsync(name, cp, req, ct));

        v1.MapPost("/repo/init", (HavenHost h, RepositoryInitRequest req, CancellationToken ct) => h.Repositories.InitAsync(req, ct));
        v1.MapPost("/repo/backups", (HavenHost h, RepositoryRef req, CancellationToken ct) => h.Repositories.ListAsync(req, ct));
        v1.MapGet("/jobs", (HavenHost h) => h.Jobs.List());
        v1.MapPost("/jobs", (HavenHost h, JobDefinition def) => h.Jobs.Create(def));
        v1.MapDelete("/jobs/{name}", (HavenHost h, string name) => { h.Jobs.Remove(name); return Results.NoContent(); });
        v1.MapPost("/jobs/{name}/run", (HavenHost h, string name, CancellationToken ct) => h.Jobs.RunAsync(name, ct));
        v1.MapPost("/repo/verify", (HavenHost h, RepositoryVerifyRequest req, CancellationToken ct) => h.Repositories.VerifyAsync(req, ct));
        v1.MapPost("/repo/prune", (HavenHost h, RepositoryPruneRequest req, CancellationToken ct) => h.Repositories.PruneAsync(req, ct));
        v1.MapPost("/repo/gc", (HavenHost h, RepositoryRef req, CancellationToken ct) => h.Repositories.CollectGarbageAsync(req, ct));
        v1.MapPost("/repo/upgrade", (HavenHost h, RepositoryRef req, CancellationToken ct) => h.Repositories.UpgradeAsync(req, ct));
        v1.MapPost("/repo/copy", (HttpContext ctx, HavenHost h, RepositoryCopyRequest req) =>
            Streaming.RunAsync(ctx, (progress, ct) => h.Repositories.CopyAsync(req, ct, progress)));
        v1.MapPost("/repo/restore", (HavenHost h, RestoreRequest req, CancellationToken ct) => h.Restores.RestoreAsync(req, ct));
        v1.MapPost("/mounts", (HavenHost h, BackupMountRequest req, CancellationToken ct) => h.Mounts.MountAsync(req, ct));
        v1.MapGet("/mounts", (HavenHost h, CancellationToken ct) => h.Mounts.ListAsync(ct));
        v1.MapDelete("/mounts/{id}", (HavenHost h, string id, CancellationToken ct) => h.Mounts.UnmountAsync(id, ct));
        v1.MapPost("/vms/{name}/backup", (HttpContext ctx, HavenHost h, string name, BackupRequest req) =>
            Streaming.RunAsync(ctx, (progress, ct) => h.Backups.BackupAsync(name, req, ct, progress)));
        ReplicationRoutes.Map(v1);
        VmReplication.Map(v1);

        app.MapFallback((HttpContext ctx) => Results.Json(
            new ErrorResponse($"no such API route: {ctx.Request.Method} {ctx.Request.Path}", "not_found"), ApiJson.Options, statusCode: 404));
    }

    private static async Task<HostInfo> HostInfoAsync(HavenHost h, CancellationToken ct) => new()
    {
        Version = typeof(Routes).Assembly.GetName().Version?.ToString() ?? "0",
        DataDirectory = h.Paths.Root,
        Accelerator = (await h.ResolveAcceleratorAsync(Haven.Qemu.Runtime.AcceleratorSetting.Auto, ct)).ToString().ToLowerInvariant(),
        VmCount = h.Store.ListVms().Count,
    };
}
