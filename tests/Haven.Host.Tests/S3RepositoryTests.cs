using System.Collections.Concurrent;
using Haven.Api;
using Haven.Repository;
using Haven.Storage;
using Haven.Storage.S3;
using Haven.TestSupport;
using Xunit;

namespace Haven.Host.Tests;

/// <summary>
/// S3 repositories on a real Ceph RGW beyond the backup suite: many hosts and GC at once, the gateway
/// failing mid-backup, a 503 storm, object lock, and copies between a folder and a bucket.
/// </summary>
[Collection(S3Collection.Name)]
public sealed class S3RepositoryTests
{
    private const long M = 1 << 20;
    private const string Pass = "s3 test passphrase";

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static async Task<CephRgw> RgwAsync()
    {
        var rgw = await CephRgw.GetAsync();
        rgw.ExportAwsEnvironment();
        return rgw;
    }

    private static Task<BackupResult> BackupAsync(TestHost t, string vm, string repo, S3Options? s3 = null) =>
        t.Host.Backups.BackupAsync(vm, new BackupRequest { Repository = repo, Passphrase = Pass, S3 = s3 }, t.Ct);

    private static async Task AssertRestoresToAsync(TestHost t, string repo, string backupId, DiskModel model, S3Options? s3 = null, string passphrase = Pass)
    {
        var target = t.Dir.File($"restore-{Guid.NewGuid():N}.raw");
        await t.Host.Restores.RestoreAsync(new RestoreRequest { Repository = repo, Passphrase = passphrase, S3 = s3, BackupId = backupId, Disk = 0, TargetPath = target, Format = "raw" }, t.Ct);
        Assert.True(await model.EqualsImageAsync(target), $"backup {backupId} does not restore to the expected disk");
        File.Delete(target);
    }

    private static async Task AssertHealthyAsync(TestHost t, string repo, S3Options? s3 = null, string passphrase = Pass)
    {
        var verify = await t.Host.Repositories.VerifyAsync(new RepositoryVerifyRequest { Repository = repo, Passphrase = passphrase, S3 = s3, ReadData = true }, t.Ct);
        Assert.True(verify.IsHealthy, "verify found damage: " + string.Join(", ", verify.DamagedBackups));
        Assert.Equal(verify.ChunksReferenced, verify.ChunksRead);
    }

    [Fact]
    public async Task Two_hosts_back_up_into_one_bucket_while_gc_runs_and_every_backup_restores_exactly()
    {
        var rgw = await RgwAsync();
        var repo = $"s3://{rgw.NewBucketName()}/shared";
        // No grace period: GC deletes every unreferenced chunk it may, so only the writer rules protect the backups.
        using (var store = new S3ObjectStore(S3Location.Parse(repo), rgw.Settings()))
        {
            await store.EnsureBucketAsync(objectLock: false, Ct);
            await using var created = await Repository.Repository.InitAsync(store, Pass, new RepositoryOptions { GcGracePeriod = TimeSpan.Zero }, Ct);
        }
        await using var a = new TestHost();
        await using var b = new TestHost();
        await using var maintenance = new TestHost();
        await a.CreateVmAsync("alpha", size: 64 * M);
        await b.CreateVmAsync("beta", size: 64 * M);
        await a.Host.Vms.StartAsync("alpha", Ct);
        var alpha = new DiskModel(a.Dir.File("alpha.raw"), 64 * M);
        var beta = new DiskModel(b.Dir.File("beta.raw"), 64 * M);

        // Garbage for GC to find: a backup whose data nothing else references, pruned away.
        await a.WriteAsync("alpha", alpha, 0x01, 0, 4 * M);
        await BackupAsync(a, "alpha", repo);
        await a.WriteAsync("alpha", alpha, 0x02, 0, 4 * M);
        await BackupAsync(a, "alpha", repo);
        var pruned = await maintenance.Host.Repositories.PruneAsync(new RepositoryPruneRequest { Repository = repo, Passphrase = Pass, KeepLast = 1 }, Ct);
        Assert.Single(pruned.Removed);

        var taken = new ConcurrentBag<(TestHost Host, string Id, DiskModel Model)>();
        async Task SeriesAsync(TestHost t, string vm, DiskModel model, byte seed)
        {
            for (var i = 0; i < 3; i++)
            {
                await t.WriteAsync(vm, model, (byte)(seed + i), i * 6 * M + M / 2, 3 * M);
                var r = await BackupAsync(t, vm, repo);
                taken.Add((t, r.BackupId, await model.SnapshotAsync(t.Dir.File($"{vm}-{i}.raw"))));
            }
        }
        var writing = Task.WhenAll(SeriesAsync(a, "alpha", alpha, 0x10), SeriesAsync(b, "beta", beta, 0x20));
        long deleted = 0;
        var collections = 0;
        while (!writing.IsCompleted || collections == 0)
        {
            var gc = await maintenance.Host.Repositories.CollectGarbageAsync(new RepositoryRef { Repository = repo, Passphrase = Pass }, Ct);
            deleted += gc.ChunksDeleted;
            collections++;
            await Task.WhenAny(writing, Task.Delay(300, Ct));
        }
        await writing;
        Assert.True(deleted >= 1, $"GC deleted {deleted} chunks in {collections} runs; the pruned backup alone left one");

        Assert.Equal(6, taken.Count);
        var listed = await maintenance.Host.Repositories.ListAsync(new RepositoryRef { Repository = repo, Passphrase = Pass }, Ct);
        Assert.Equal(7, listed.Count); // the six, plus the one prune kept
        foreach (var (host, id, model) in taken) await AssertRestoresToAsync(host, repo, id, model);
        // A last GC with no writer left deletes nothing any backup needs.
        await maintenance.Host.Repositories.CollectGarbageAsync(new RepositoryRef { Repository = repo, Passphrase = Pass }, Ct);
        await AssertHealthyAsync(maintenance, repo);
    }

    [Fact]
    public async Task The_gateway_stopped_mid_backup_fails_it_cleanly_and_the_next_run_succeeds()
    {
        var rgw = await RgwAsync();
        if (!rgw.CanRestartGateway) Assert.Skip("the shared RGW was attached without HAVEN_TEST_CEPH_DIR, so its gateway cannot be restarted");
        await using var t = new TestHost();
        await t.CreateVmAsync("vm1", size: 64 * M);
        await t.Host.Vms.StartAsync("vm1", Ct);
        var repo = $"s3://{rgw.NewBucketName()}/repo";
        await t.Host.Repositories.InitAsync(new RepositoryInitRequest { Repository = repo, Passphrase = Pass }, Ct);
        var now = new DiskModel(t.Dir.File("now.raw"), 64 * M);
        await t.WriteAsync("vm1", now, 0x31, 0, 6 * M);
        var full = await BackupAsync(t, "vm1", repo);
        await t.WriteAsync("vm1", now, 0x32, 20 * M, 4 * M);

        t.Host.Backups.AtStep = async step => { if (step == "backup.after-point-in-time") await rgw.StopGatewayAsync(); };
        try
        {
            var e = await Assert.ThrowsAsync<StoreUnavailableException>(() => BackupAsync(t, "vm1", repo));
            Assert.DoesNotContain('\n', e.Message);
        }
        finally
        {
            t.Host.Backups.AtStep = null;
            await rgw.StartGatewayAsync();
        }
        await t.AssertNoBackupLeftoversAsync("vm1");

        Assert.Single(await t.Host.Repositories.ListAsync(new RepositoryRef { Repository = repo, Passphrase = Pass }, Ct));
        await AssertHealthyAsync(t, repo);
        await t.WriteAsync("vm1", now, 0x33, 40 * M, M);
        var next = await BackupAsync(t, "vm1", repo);
        Assert.Equal("incremental", next.Mode);
        Assert.Equal(5, next.ChunksRead); // the 4 chunks written before the failed run, and the one after
        await AssertRestoresToAsync(t, repo, next.BackupId, now);
        await AssertRestoresToAsync(t, repo, full.BackupId, await new DiskModel(t.Dir.File("f.raw"), 64 * M).WriteThenAsync(0x31, 0, 6 * M));
    }

    [Fact]
    public async Task A_503_storm_is_retried_through_and_a_storm_that_does_not_end_fails_the_backup_cleanly()
    {
        var rgw = await RgwAsync();
        await using var proxy = new FaultyS3Proxy(rgw.Endpoint);
        var s3 = new S3Options { Endpoint = proxy.Endpoint, Region = "us-east-1", AccessKeyId = rgw.AccessKey, SecretAccessKey = rgw.SecretKey };
        await using var t = new TestHost();
        await t.CreateVmAsync("vm1", size: 64 * M);
        var repo = $"s3://{rgw.NewBucketName()}/repo";
        await t.Host.Repositories.InitAsync(new RepositoryInitRequest { Repository = repo, Passphrase = Pass, S3 = s3 }, Ct);
        var now = new DiskModel(t.Dir.File("now.raw"), 64 * M);
        await t.WriteAsync("vm1", now, 0x41, 0, 8 * M);

        // A short storm in the middle of the backup: retried, and the backup is whole.
        t.Host.Backups.AtStep = step => { if (step == "backup.after-point-in-time") proxy.FailNext(3); return Task.CompletedTask; };
        var first = await BackupAsync(t, "vm1", repo, s3);
        Assert.Equal(3, proxy.Failed);
        await AssertRestoresToAsync(t, repo, first.BackupId, now, s3);

        // A storm that outlasts every retry: one clear error, no leftovers, the repository still valid.
        await t.WriteAsync("vm1", now, 0x42, 16 * M, 2 * M);
        proxy.ResetCounts();
        t.Host.Backups.AtStep = step => { if (step == "backup.after-point-in-time") proxy.FailAll = true; return Task.CompletedTask; };
        var e = await Assert.ThrowsAsync<StoreUnavailableException>(() => BackupAsync(t, "vm1", repo, s3));
        Assert.Contains("503", e.Message);
        Assert.Contains("attempts", e.Message);
        Assert.True(proxy.Failed >= 5, $"only {proxy.Failed} requests were answered 503");
        proxy.FailAll = false;
        t.Host.Backups.AtStep = null;
        await t.AssertNoBackupLeftoversAsync("vm1");
        Assert.Single(await t.Host.Repositories.ListAsync(new RepositoryRef { Repository = repo, Passphrase = Pass, S3 = s3 }, Ct));
        await AssertHealthyAsync(t, repo, s3);
        var next = await BackupAsync(t, "vm1", repo, s3);
        await AssertRestoresToAsync(t, repo, next.BackupId, now, s3);
    }

    [Fact]
    public async Task Wrong_credentials_are_one_clear_error_and_nothing_is_written()
    {
        var rgw = await RgwAsync();
        await using var t = new TestHost();
        var repo = $"s3://{rgw.NewBucketName()}/repo";
        var wrong = new S3Options { Endpoint = rgw.Endpoint, AccessKeyId = rgw.AccessKey, SecretAccessKey = "not-the-secret-key-000000000000000000000" };
        var e = await Assert.ThrowsAsync<StoreAccessDeniedException>(() => t.Host.Repositories.InitAsync(new RepositoryInitRequest { Repository = repo, Passphrase = Pass, S3 = wrong }, Ct));
        Assert.DoesNotContain('\n', e.Message);
        Assert.DoesNotContain("not-the-secret", e.Message);
        Assert.Contains("credentials", e.Message);
        // Nothing was created: the bucket does not exist for the right credentials either.
        var list = await Assert.ThrowsAnyAsync<Exception>(() => t.Host.Repositories.ListAsync(new RepositoryRef { Repository = repo, Passphrase = Pass }, Ct));
        Assert.Contains("does not exist", list.Message);
    }

    [Fact]
    public async Task Locked_backups_cannot_be_deleted_and_prune_and_gc_report_them()
    {
        var rgw = await RgwAsync();
        await using var t = new TestHost();
        await t.CreateVmAsync("vm1", size: 64 * M);
        var repo = $"s3://{rgw.NewBucketName()}/locked";
        var info = await t.Host.Repositories.InitAsync(new RepositoryInitRequest { Repository = repo, Passphrase = Pass, ImmutableDays = 1 }, Ct);
        Assert.Equal("governance 1d", info.Immutability);
        var now = new DiskModel(t.Dir.File("now.raw"), 64 * M);
        await t.WriteAsync("vm1", now, 0x51, 0, 3 * M);
        var first = await BackupAsync(t, "vm1", repo);
        var m1 = await now.SnapshotAsync(t.Dir.File("m1.raw"));
        await t.WriteAsync("vm1", now, 0x52, 0, 3 * M);
        var second = await BackupAsync(t, "vm1", repo);

        // The store itself refuses: a compromised host with the same credentials cannot delete it either.
        using (var store = new S3ObjectStore(S3Location.Parse(repo), rgw.Settings()))
        {
            var refused = await Assert.ThrowsAsync<ObjectLockedException>(() => store.DeleteAsync("summaries/" + first.BackupId, Ct));
            Assert.NotNull(refused.RetainUntil);
            Assert.NotNull(await store.StatAsync("summaries/" + first.BackupId, Ct));
        }

        var prune = await t.Host.Repositories.PruneAsync(new RepositoryPruneRequest { Repository = repo, Passphrase = Pass, KeepLast = 1 }, Ct);
        Assert.Empty(prune.Removed);
        var locked = Assert.Single(prune.Locked);
        Assert.Equal(first.BackupId, locked.Backup.Id);
        Assert.True(locked.RetainUntil > DateTimeOffset.UtcNow.AddHours(23));
        var gc = await t.Host.Repositories.CollectGarbageAsync(new RepositoryRef { Repository = repo, Passphrase = Pass }, Ct);
        Assert.Equal(0, gc.ChunksDeleted);

        Assert.Equal(2, (await t.Host.Repositories.ListAsync(new RepositoryRef { Repository = repo, Passphrase = Pass }, Ct)).Count);
        await AssertHealthyAsync(t, repo);
        await AssertRestoresToAsync(t, repo, first.BackupId, m1);
        await AssertRestoresToAsync(t, repo, second.BackupId, now);
    }

    [Fact]
    public async Task Immutability_on_a_folder_is_refused_and_writes_nothing()
    {
        await using var t = new TestHost();
        var repo = t.Dir.File("repo");
        var e = await Assert.ThrowsAsync<HavenException>(() => t.Host.Repositories.InitAsync(new RepositoryInitRequest { Repository = repo, Passphrase = Pass, ImmutableDays = 7 }, Ct));
        Assert.Equal(ErrorCode.InvalidArgument, e.Code);
        Assert.Contains("object lock", e.Message);
        Assert.Empty(Directory.Exists(repo) ? Directory.GetFileSystemEntries(repo) : []);
    }

    [Fact]
    public async Task Copies_go_from_a_folder_to_a_bucket_and_back_uploading_only_what_the_target_lacks()
    {
        var rgw = await RgwAsync();
        await using var t = new TestHost();
        await t.CreateVmAsync("vm1", size: 64 * M);
        var local = t.Dir.File("local");
        var bucket = $"s3://{rgw.NewBucketName()}/copy";
        var back = t.Dir.File("back");
        await t.Host.Repositories.InitAsync(new RepositoryInitRequest { Repository = local, Passphrase = Pass }, Ct);
        await t.Host.Repositories.InitAsync(new RepositoryInitRequest { Repository = bucket, Passphrase = "bucket passphrase" }, Ct);
        await t.Host.Repositories.InitAsync(new RepositoryInitRequest { Repository = back, Passphrase = "back passphrase" }, Ct);

        var now = new DiskModel(t.Dir.File("now.raw"), 64 * M);
        for (var i = 0; i < 6; i++) await t.WriteAsync("vm1", now, (byte)(0x61 + i), i * M, M); // six distinct chunks
        var full = await BackupAsync(t, "vm1", local);
        var m1 = await now.SnapshotAsync(t.Dir.File("m1.raw"));
        var toBucket = new RepositoryCopyRequest { Repository = local, Passphrase = Pass, Target = bucket, TargetPassphrase = "bucket passphrase", Vm = "vm1" };
        var c1 = Assert.Single((await t.Host.Repositories.CopyAsync(toBucket, Ct)).Backups);
        Assert.Equal((6L, 6L, false), (c1.ChunksRead, c1.ChunksUploaded, c1.AlreadyPresent));

        await t.Host.Vms.StartAsync("vm1", Ct);
        await t.WriteAsync("vm1", now, 0x70, 2 * M, M);
        var inc = await BackupAsync(t, "vm1", local);
        var copies = (await t.Host.Repositories.CopyAsync(toBucket, Ct)).Backups;
        Assert.Equal(2, copies.Count);
        Assert.True(copies[0].AlreadyPresent);
        Assert.Equal(c1.TargetId, copies[0].TargetId);
        Assert.Equal((6L, 1L), (copies[1].ChunksRead, copies[1].ChunksUploaded)); // only the changed chunk moves

        await AssertHealthyAsync(t, bucket, passphrase: "bucket passphrase");
        await AssertRestoresToAsync(t, bucket, copies[0].TargetId, m1, passphrase: "bucket passphrase");
        await AssertRestoresToAsync(t, bucket, copies[1].TargetId, now, passphrase: "bucket passphrase");

        // And back from the bucket to another folder.
        var home = await t.Host.Repositories.CopyAsync(new RepositoryCopyRequest
        {
            Repository = bucket, Passphrase = "bucket passphrase", Target = back, TargetPassphrase = "back passphrase", All = true,
        }, Ct);
        Assert.Equal(2, home.Backups.Count);
        await AssertHealthyAsync(t, back, passphrase: "back passphrase");
        await AssertRestoresToAsync(t, back, home.Backups[1].TargetId, now, passphrase: "back passphrase");
        Assert.Equal(full.BackupId, copies[0].SourceId);
        Assert.Equal(inc.BackupId, copies[1].SourceId);
    }
}
