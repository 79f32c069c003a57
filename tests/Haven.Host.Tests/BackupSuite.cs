using Haven.Host.Vms;
using System.Text.Json;
using Haven.Api;
using Haven.Qemu.Images;
using Haven.TestSupport;
using Xunit;

namespace Haven.Host.Tests;

/// <summary>
/// Backups of real QEMU VMs into a repository and restores back: every restored backup equals the
/// disk as it was at that backup; incrementals read only the chunks that changed; the point-in-time
/// view leaves nothing behind. Runs once per backend: <see cref="LocalBackupTests"/> (a folder, plus the
/// tests that tamper with files) and <see cref="S3BackupTests"/> (a bucket on a real Ceph RGW).
/// </summary>
public abstract class BackupSuite
{
    protected const long M = 1 << 20;
    protected const string Pass = "correct horse battery staple";

    /// <summary>A location for a new, not yet initialized repository.</summary>
    protected abstract Task<string> NewRepositoryAsync(TestHost t);

    protected async Task<(TestHost T, string Repo)> SetUpAsync(bool start)
    {
        var t = new TestHost();
        await t.CreateVmAsync("vm1", size: 64 * M);
        if (start) await t.Host.Vms.StartAsync("vm1", t.Ct);
        var repo = await NewRepositoryAsync(t);
        await t.Host.Repositories.InitAsync(new RepositoryInitRequest { Repository = repo, Passphrase = Pass }, t.Ct);
        return (t, repo);
    }

    protected static Task<BackupResult> Backup(TestHost t, string repo) =>
        t.Host.Backups.BackupAsync("vm1", new BackupRequest { Repository = repo, Passphrase = Pass }, t.Ct);

    protected static async Task AssertRestoresToAsync(TestHost t, string repo, string backupId, DiskModel model)
    {
        var target = t.Dir.File($"restore-{Guid.NewGuid():N}.qcow2");
        await t.Host.Restores.RestoreAsync(new RestoreRequest { Repository = repo, Passphrase = Pass, BackupId = backupId, Disk = 0, TargetPath = target }, t.Ct);
        Assert.True(await model.EqualsImageAsync(target), $"backup {backupId} does not restore to the expected disk");
        File.Delete(target);
    }

    protected static Task AssertNoBackupLeftoversAsync(TestHost t) => t.AssertNoBackupLeftoversAsync("vm1");

    [Fact]
    public async Task Live_full_then_incremental_restore_exactly_and_read_only_changed_chunks()
    {
        var (t, repo) = await SetUpAsync(start: true);
        await using var _ = t;
        var now = new DiskModel(t.Dir.File("now.raw"), 64 * M);
        await t.WriteAsync("vm1", now, 0x11, 0, 3 * M);
        await t.WriteAsync("vm1", now, 0x12, 20 * M, M / 2);

        var full = await Backup(t, repo);
        Assert.Equal("full", full.Mode);
        Assert.Equal(4, full.ChunksRead); // 3 chunks + half a chunk; the rest is unallocated and never read
        var m1 = await now.SnapshotAsync(t.Dir.File("m1.raw"));
        await AssertNoBackupLeftoversAsync(t);

        await t.WriteAsync("vm1", now, 0x21, 1 * M + 4096, 4096);   // chunk 1
        await t.WriteAsync("vm1", now, 0x22, 40 * M, 2 * M);        // chunks 40, 41
        var inc = await Backup(t, repo);
        Assert.Equal("incremental", inc.Mode);
        Assert.Null(inc.Reason);
        Assert.Equal(3, inc.ChunksRead);
        Assert.Equal(3 * M, inc.BytesRead);
        var m2 = await now.SnapshotAsync(t.Dir.File("m2.raw"));
        await AssertNoBackupLeftoversAsync(t);

        await AssertRestoresToAsync(t, repo, full.BackupId, m1);
        await AssertRestoresToAsync(t, repo, inc.BackupId, m2);
    }

    [Fact]
    public async Task A_backup_taken_while_the_guest_writes_holds_exactly_the_point_in_time()
    {
        var (t, repo) = await SetUpAsync(start: true);
        await using var _ = t;
        var now = new DiskModel(t.Dir.File("now.raw"), 64 * M);
        await t.WriteAsync("vm1", now, 0x31, 0, 8 * M);
        var atBackup = await now.SnapshotAsync(t.Dir.File("at.raw"));
        // Overwrite what the backup is about to read, after its point in time.
        t.Host.Backups.AtStep = async step =>
        {
            if (step != "backup.after-point-in-time") return;
            await t.WriteAsync("vm1", now, 0x99, 0, 8 * M);
            await t.WriteAsync("vm1", now, 0x98, 30 * M, M);
        };
        var r = await Backup(t, repo);
        t.Host.Backups.AtStep = null;
        await AssertRestoresToAsync(t, repo, r.BackupId, atBackup);
        await AssertNoBackupLeftoversAsync(t);

        // The writes after the point in time are the next incremental's changes.
        var next = await Backup(t, repo);
        Assert.Equal("incremental", next.Mode);
        Assert.Equal(9, next.ChunksRead);
        await AssertRestoresToAsync(t, repo, next.BackupId, now);
    }

    [Theory]
    [InlineData("backup.after-point-in-time", true)]
    [InlineData("backup.after-disk", true)]
    [InlineData("backup.after-manifest", true)]
    [InlineData("backup.after-point-in-time", false)]
    [InlineData("backup.after-disk", false)]
    public async Task A_backup_failing_at_any_step_cleans_up_and_loses_no_change_for_the_next_one(string step, bool live)
    {
        var (t, repo) = await SetUpAsync(start: live);
        await using var _ = t;
        var now = new DiskModel(t.Dir.File("now.raw"), 64 * M);
        await t.WriteAsync("vm1", now, 0x41, 0, 2 * M);
        await Backup(t, repo);
        if (!live) await t.Host.Vms.StartAsync("vm1", t.Ct);
        await t.WriteAsync("vm1", now, 0x42, 10 * M, M);
        if (!live) await t.Host.Vms.StopAsync("vm1", new VmStopRequest { Force = true }, t.Ct);
        t.Host.Backups.AtStep = s => s == step ? throw new IOException("injected failure at " + s) : Task.CompletedTask;
        var e = await Assert.ThrowsAsync<IOException>(() => Backup(t, repo));
        Assert.Contains(step, e.Message);
        t.Host.Backups.AtStep = null;
        await AssertNoBackupLeftoversAsync(t);
        Assert.Empty(Directory.GetFiles(t.Host.Paths.RunDir, "*.nbd"));

        if (!live) await t.Host.Vms.StartAsync("vm1", t.Ct);
        await t.WriteAsync("vm1", now, 0x43, 20 * M, M);
        if (!live) await t.Host.Vms.StopAsync("vm1", new VmStopRequest { Force = true }, t.Ct);
        var r = await Backup(t, repo);
        Assert.Equal("incremental", r.Mode);
        Assert.Equal(2, r.ChunksRead); // the change before the failed run and the one after
        await AssertRestoresToAsync(t, repo, r.BackupId, now);
    }

    [Fact]
    public async Task ProductionOnly_without_a_guest_agent_refuses_to_back_up_and_leaves_nothing()
    {
        var (t, repo) = await SetUpAsync(start: true);
        await using var _ = t;
        await t.Host.Vms.UpdateAsync("vm1", new VmUpdateRequest { CheckpointType = CheckpointType.ProductionOnly }, t.Ct);
        var e = await Assert.ThrowsAsync<HavenException>(() => Backup(t, repo));
        Assert.Equal(ErrorCode.Conflict, e.Code);
        Assert.Contains("ProductionOnly", e.Message);
        await AssertNoBackupLeftoversAsync(t);
        Assert.Empty(await t.Host.Repositories.ListAsync(new RepositoryRef { Repository = repo, Passphrase = Pass }, t.Ct));
    }

    [Fact]
    public async Task A_brand_new_host_reattaches_the_repository_with_only_its_path_and_passphrase()
    {
        var (t, repo) = await SetUpAsync(start: false);
        await using var _ = t;
        var now = new DiskModel(t.Dir.File("now.raw"), 64 * M);
        await t.WriteAsync("vm1", now, 0x91, M, 5 * M);
        var b = await Backup(t, repo);
        await using var other = new TestHost();
        var list = await other.Host.Repositories.ListAsync(new RepositoryRef { Repository = repo, Passphrase = Pass }, other.Ct);
        Assert.Equal(b.BackupId, Assert.Single(list).Id);
        await other.Host.Restores.RestoreAsync(new RestoreRequest { Repository = repo, Passphrase = Pass, BackupId = b.BackupId, NewName = "vm1" }, other.Ct);
        Assert.True(await now.EqualsImageAsync(other.TopLayer("vm1")));
    }

    [Fact]
    public async Task Offline_backups_track_changes_and_distrust_writes_made_outside_haven()
    {
        var (t, repo) = await SetUpAsync(start: false);
        await using var _ = t;
        var now = new DiskModel(t.Dir.File("now.raw"), 64 * M);
        await t.WriteAsync("vm1", now, 0x51, 0, 2 * M);
        var first = await Backup(t, repo);
        Assert.Equal("full", first.Mode);
        Assert.Equal(Consistency.ApplicationConsistent, first.Consistency);
        await AssertNoBackupLeftoversAsync(t);

        await t.Host.Vms.StartAsync("vm1", t.Ct);
        await t.WriteAsync("vm1", now, 0x52, 5 * M, M);
        await t.Host.Vms.StopAsync("vm1", new VmStopRequest { Force = true }, t.Ct);
        var second = await Backup(t, repo);
        Assert.Equal("incremental", second.Mode);
        Assert.Equal(1, second.ChunksRead);
        await AssertRestoresToAsync(t, repo, second.BackupId, now);

        // qemu-io on the image while the VM is off: Haven cannot know what a foreign tool did.
        await t.WriteAsync("vm1", now, 0x53, 9 * M, M);
        var third = await Backup(t, repo);
        Assert.Equal("full", third.Mode);
        Assert.Contains("outside Haven", third.Reason);
        await AssertRestoresToAsync(t, repo, third.BackupId, now);
        await AssertRestoresToAsync(t, repo, first.BackupId, await new DiskModel(t.Dir.File("e.raw"), 64 * M).WriteThenAsync(0x51, 0, 2 * M));
    }

    [Fact]
    public async Task A_checkpoint_since_the_last_backup_means_a_full_backup_with_the_reason()
    {
        var (t, repo) = await SetUpAsync(start: true);
        await using var _ = t;
        var now = new DiskModel(t.Dir.File("now.raw"), 64 * M);
        await t.WriteAsync("vm1", now, 0x61, 0, M);
        await Backup(t, repo);
        await t.Host.Checkpoints.CreateAsync("vm1", "cp", t.Ct);
        var r = await Backup(t, repo);
        Assert.Equal("full", r.Mode);
        Assert.Contains("layer chain changed", r.Reason);
        await AssertRestoresToAsync(t, repo, r.BackupId, now);
    }

    [Fact]
    public async Task Restore_as_a_new_vm_and_in_place()
    {
        var (t, repo) = await SetUpAsync(start: false);
        await using var _ = t;
        var now = new DiskModel(t.Dir.File("now.raw"), 64 * M);
        await t.WriteAsync("vm1", now, 0x71, 3 * M, 3 * M);
        var original = (await t.Host.Vms.UpdateAsync("vm1", new VmUpdateRequest { SetNics = [new NicSpec { Mode = "user", Model = "e1000" }] }, t.Ct)).Hardware!;
        var b = await Backup(t, repo);
        var copy = await t.Host.Restores.RestoreAsync(new RestoreRequest { Repository = repo, Passphrase = Pass, BackupId = b.BackupId, NewName = "vm1-copy" }, t.Ct);
        Assert.Equal("vm1-copy", copy.Vm);
        Assert.True(await now.EqualsImageAsync(t.TopLayer("vm1-copy")));
        var copied = await t.Host.Vms.ShowAsync("vm1-copy", t.Ct);
        Assert.Equal(64, copied.MemoryMiB);
        // The backup carries the hardware; a new VM gets its own MAC (it may share a network with the original).
        var nic = Assert.Single(copied.Hardware!.Nics);
        Assert.Equal(("nic0", "user", "e1000"), (nic.Name, nic.Mode, nic.Model));
        Assert.NotEqual(original.Nics[0].Mac, nic.Mac);
        await t.Host.Vms.UpdateAsync("vm1", new VmUpdateRequest { RemoveNics = ["nic0"], Vcpus = 2 }, t.Ct);

        await t.Host.Checkpoints.CreateAsync("vm1", "cp", t.Ct);
        await GuestWrites.WriteOfflineAsync(t.TopLayer("vm1"), 0x72, 0, 8 * M);
        await t.Host.Restores.RestoreAsync(new RestoreRequest { Repository = repo, Passphrase = Pass, BackupId = b.BackupId, InPlace = true }, t.Ct);
        Assert.True(await now.EqualsImageAsync(t.TopLayer("vm1")));
        Assert.Empty(t.Host.Checkpoints.List("vm1"));
        // In place the VM comes back as backed up, its MAC included.
        Assert.Equal(Hardware.Write(original), Hardware.Write((await t.Host.Vms.ShowAsync("vm1", t.Ct)).Hardware!));
        await t.AssertConsistentAsync("vm1");
    }

    [Fact]
    public async Task Prune_gc_and_verify_keep_exactly_what_the_retention_needs()
    {
        var (t, repo) = await SetUpAsync(start: false);
        await using var _ = t;
        var now = new DiskModel(t.Dir.File("now.raw"), 64 * M);
        var models = new List<(string Id, DiskModel Model)>();
        for (var i = 0; i < 3; i++)
        {
            await t.WriteAsync("vm1", now, (byte)(0xA1 + i), i * 4 * M, 2 * M);
            var b = await Backup(t, repo);
            models.Add((b.BackupId, await now.SnapshotAsync(t.Dir.File($"b{i}.raw"))));
        }
        var pruned = await t.Host.Repositories.PruneAsync(new RepositoryPruneRequest { Repository = repo, Passphrase = Pass, KeepLast = 1 }, t.Ct);
        Assert.Equal(2, pruned.Removed.Count);
        var gc = await t.Host.Repositories.CollectGarbageAsync(new RepositoryRef { Repository = repo, Passphrase = Pass }, t.Ct);
        Assert.Equal(1, gc.BackupsMarked);
        var verify = await t.Host.Repositories.VerifyAsync(new RepositoryVerifyRequest { Repository = repo, Passphrase = Pass, ReadData = true }, t.Ct);
        Assert.True(verify.IsHealthy);
        Assert.Equal(verify.ChunksReferenced, verify.ChunksRead);
        var left = Assert.Single(await t.Host.Repositories.ListAsync(new RepositoryRef { Repository = repo, Passphrase = Pass }, t.Ct));
        Assert.Equal(models[2].Id, left.Id);
        await AssertRestoresToAsync(t, repo, left.Id, models[2].Model);
    }
}

/// <summary>The backup suite on a local folder, plus tests that tamper with the repository's files or fill its disk.</summary>
public sealed class LocalBackupTests : BackupSuite
{
    protected override Task<string> NewRepositoryAsync(TestHost t) => Task.FromResult(t.Dir.File("repo"));

    [Fact]
    public async Task Bad_passphrase_non_repository_and_corrupt_chunk_are_refused_without_writing_bad_data()
    {
        var (t, repo) = await SetUpAsync(start: false);
        await using var _ = t;
        var now = new DiskModel(t.Dir.File("now.raw"), 64 * M);
        await t.WriteAsync("vm1", now, 0x81, 0, 4 * M);
        var b = await Backup(t, repo);

        var wrong = await Assert.ThrowsAsync<HavenException>(() => t.Host.Backups.BackupAsync("vm1", new BackupRequest { Repository = repo, Passphrase = "nope" }, t.Ct));
        Assert.Contains("passphrase", wrong.Message);
        var notRepo = await Assert.ThrowsAsync<HavenException>(() => t.Host.Backups.BackupAsync("vm1", new BackupRequest { Repository = t.Dir.Path, Passphrase = Pass }, t.Ct));
        Assert.Equal(ErrorCode.InvalidArgument, notRepo.Code);

        // Flip one bit in one stored chunk: restore must refuse and leave no file behind.
        var chunk = Directory.GetFiles(Path.Combine(repo, "chunks"), "*", SearchOption.AllDirectories).First(f => !f.EndsWith(".tmp"));
        var bytes = await File.ReadAllBytesAsync(chunk, t.Ct);
        bytes[bytes.Length / 2] ^= 0x01;
        await File.WriteAllBytesAsync(chunk, bytes, t.Ct);
        var target = t.Dir.File("bad.qcow2");
        var bad = await Assert.ThrowsAsync<Haven.Repository.CorruptChunkException>(() => t.Host.Restores.RestoreAsync(new RestoreRequest { Repository = repo, Passphrase = Pass, BackupId = b.BackupId, Disk = 0, TargetPath = target }, t.Ct));
        Assert.DoesNotContain('\n', bad.Message);
        Assert.False(File.Exists(target));
        Assert.False(File.Exists(target + ".partial"));
        var verify = await t.Host.Repositories.VerifyAsync(new RepositoryVerifyRequest { Repository = repo, Passphrase = Pass, ReadData = true }, t.Ct);
        Assert.Contains(b.BackupId, verify.CorruptChunks.SelectMany(c => c.BackupIds));

        // A truncated backup summary is refused, not half-read.
        var manifest = Directory.GetFiles(Path.Combine(repo, "summaries")).Single();
        var mbytes = await File.ReadAllBytesAsync(manifest, t.Ct);
        await File.WriteAllBytesAsync(manifest, mbytes[..(mbytes.Length - 7)], t.Ct);
        await Assert.ThrowsAsync<Haven.Repository.CorruptManifestException>(() => t.Host.Restores.RestoreAsync(new RestoreRequest { Repository = repo, Passphrase = Pass, BackupId = b.BackupId, NewName = "x" }, t.Ct));
        Assert.Null(t.Host.Store.FindVmByName("x"));
    }
}

public sealed class BackupFullDiskTests
{
    [Fact]
    public async Task A_full_repository_disk_fails_the_backup_cleanly_and_the_repository_stays_valid()
    {
        await using var t = new TestHost();
        // Incompressible data, so the repository really needs the space.
        var source = t.Dir.File("random.raw");
        await using (var f = File.Create(source))
        {
            var buf = new byte[1 << 20];
            for (var i = 0; i < 24; i++) { Random.Shared.NextBytes(buf); await f.WriteAsync(buf, t.Ct); }
        }
        await t.Host.Vms.CreateAsync(new VmCreateRequest { Name = "vm1", Disks = [new DiskSpec { ImportPath = source }], Accelerator = "tcg", MemoryMiB = 64 }, t.Ct);
        await t.Host.Vms.StartAsync("vm1", t.Ct);
        var repo = t.Dir.File("repo");
        Directory.CreateDirectory(repo);
        var mount = await ProcessRunner.RunAsync("mount", ["-t", "tmpfs", "-o", "size=8m", "tmpfs", repo], t.Ct, throwOnError: false);
        if (mount.ExitCode != 0) Assert.Skip("cannot mount a small tmpfs to fill (needs root): " + mount.StandardError.Trim());
        try
        {
            var r = new RepositoryRef { Repository = repo, Passphrase = "p" };
            await t.Host.Repositories.InitAsync(new RepositoryInitRequest { Repository = repo, Passphrase = "p" }, t.Ct);
            var e = await Assert.ThrowsAnyAsync<Exception>(() => t.Host.Backups.BackupAsync("vm1", new BackupRequest { Repository = repo, Passphrase = "p" }, t.Ct));
            Assert.True(e.Message.Contains("full", StringComparison.OrdinalIgnoreCase), $"{e.GetType().Name}: {e.Message}");
            Assert.Empty(Directory.GetFiles(t.Host.Paths.RunDir, "*.fleece.qcow2"));
            Assert.Empty(t.Host.Store.ListOperations());
            var verify = await t.Host.Repositories.VerifyAsync(new RepositoryVerifyRequest { Repository = repo, Passphrase = "p" }, t.Ct);
            Assert.Null(verify.ConfigProblem);
            Assert.Empty(verify.CorruptManifests);
            Assert.Empty(await t.Host.Repositories.ListAsync(r, t.Ct));

            // Room again: the next backup works and restores exactly.
            await ProcessRunner.RunAsync("mount", ["-o", "remount,size=128m", repo], t.Ct);
            var ok = await t.Host.Backups.BackupAsync("vm1", new BackupRequest { Repository = repo, Passphrase = "p" }, t.Ct);
            var target = t.Dir.File("back.raw");
            await t.Host.Restores.RestoreAsync(new RestoreRequest { Repository = repo, Passphrase = "p", BackupId = ok.BackupId, Disk = 0, TargetPath = target, Format = "raw" }, t.Ct);
            Assert.True(await QemuImg.CompareAsync(source, target, ct: t.Ct));
        }
        finally
        {
            await ProcessRunner.RunAsync("umount", ["-l", repo], CancellationToken.None, throwOnError: false);
        }
    }
}

public sealed class BackupJobTests
{
    [Fact]
    public async Task A_scheduled_job_backs_up_when_due_and_applies_its_retention()
    {
        await using var t = new TestHost();
        await t.CreateVmAsync("vm1", size: 16 << 20);
        var repo = t.Dir.File("repo");
        var pass = t.Dir.File("pass");
        await File.WriteAllTextAsync(pass, "job passphrase\n", t.Ct);
        await t.Host.Repositories.InitAsync(new RepositoryInitRequest { Repository = repo, Passphrase = "job passphrase" }, t.Ct);
        Assert.Throws<HavenException>(() => t.Host.Jobs.Create(new JobDefinition { Name = "bad", Vms = ["vm1"], Repository = repo, PassphraseFile = pass, Schedule = "not cron" }));
        var job = t.Host.Jobs.Create(new JobDefinition { Name = "nightly", Vms = ["vm1"], Repository = repo, PassphraseFile = pass, Schedule = "0 2 * * *", KeepLast = 1 });
        Assert.NotNull(job.NextRun);

        var start = DateTimeOffset.UtcNow;
        await t.Host.Jobs.RunDueAsync(start.AddMinutes(1), start, t.Ct);       // not due yet
        Assert.Empty(await t.Host.Repositories.ListAsync(new RepositoryRef { Repository = repo, Passphrase = "job passphrase" }, t.Ct));
        await t.Host.Jobs.RunDueAsync(start.AddDays(1.1), start, t.Ct);        // due
        var r = await t.Host.Jobs.RunAsync("nightly", t.Ct);                    // and once more on demand
        Assert.Empty(r.Errors);
        Assert.Equal(1, r.PrunedBackups);
        var left = await t.Host.Repositories.ListAsync(new RepositoryRef { Repository = repo, Passphrase = "job passphrase" }, t.Ct);
        Assert.Equal(r.Backups[0].BackupId, Assert.Single(left).Id);
        Assert.Equal("success", t.Host.Jobs.List().Single().LastStatus);
    }
}

internal static class DiskModelExtensions
{
    public static async Task<DiskModel> WriteThenAsync(this DiskModel m, byte pattern, long offset, long length)
    {
        await m.WriteAsync(pattern, offset, length);
        return m;
    }
}
