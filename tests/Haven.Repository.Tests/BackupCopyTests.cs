using System.Text.Json;
using Haven.Storage;
using Xunit;
using static Haven.Repository.Tests.Backups;
using static Haven.Repository.Tests.RepoFixture;

namespace Haven.Repository.Tests;

/// <summary>Copying backups between repositories with different keys.</summary>
public sealed class BackupCopyTests
{
    [Fact]
    public async Task A_copy_restores_the_same_data_under_the_other_repositorys_keys()
    {
        await using var source = await CreateAsync();
        await using var target = await CreateAsync(passphrase: "another passphrase entirely", clock: source.Clock);
        var (a, b, tail) = (RandomChunk(), TextChunk("copied"), RandomChunk(1234));
        await using var writer = await source.Repo.BeginBackupAsync("host-a", Ct);
        var ids = new List<ChunkId>();
        foreach (var d in new[] { a, b, tail })
        {
            ids.Add(writer.ComputeId(d));
            await writer.PutChunkAsync(ids[^1], d, Ct);
        }
        var definition = JsonSerializer.SerializeToElement(new { name = "web", vcpus = 2 });
        var original = new BackupManifest
        {
            VmName = "web",
            VmDefinition = definition,
            HostName = "host-a",
            CreatedAt = source.Clock.GetUtcNow().AddMinutes(-3),
            ParentBackupId = "20250301-115500-0badc0de",
            Mode = "incremental",
            ModeReason = "bitmap",
            Consistency = "ApplicationConsistent",
            Checkpoint = JsonSerializer.SerializeToElement(new { bitmap = "haven-7" }),
            Disks =
            [
                new DiskManifest { Name = "disk0", SizeBytes = 4L * ChunkSize, ChunkSize = ChunkSize, Chunks = [ids[0], null, ids[1], ids[0]] },
                new DiskManifest { Name = "disk1", SizeBytes = ChunkSize + 1234, ChunkSize = ChunkSize, Chunks = [ids[1], ids[2]] },
            ],
        };
        var sourceId = await writer.CommitAsync(original, Ct);
        await writer.DisposeAsync();

        var progress = new LastProgress();
        var result = await BackupCopy.CopyAsync(source.Repo, sourceId, target.Repo, "copier", progress, Ct);
        Assert.Equal((false, 3L, 3L), (result.AlreadyPresent, result.ChunksRead, result.ChunksUploaded));
        Assert.True(result.BytesUploaded > ChunkSize + 1234);
        Assert.Equal(5L * ChunkSize + 1234, progress.Max); // the disks' size: zeros and repeats count too

        await using var reopened = await target.OpenAgainAsync("another passphrase entirely");
        var copy = await reopened.ReadManifestAsync(result.TargetBackupId, Ct);
        Assert.Equal((original.VmName, original.CreatedAt, original.Mode, original.ModeReason, original.Consistency, original.HostName),
            (copy.VmName, copy.CreatedAt, copy.Mode, copy.ModeReason, copy.Consistency, copy.HostName));
        Assert.Equal(definition.GetRawText(), copy.VmDefinition.GetRawText());
        Assert.Equal(original.Checkpoint!.Value.GetRawText(), copy.Checkpoint!.Value.GetRawText());
        Assert.Null(copy.ParentBackupId);
        Assert.Equal(new BackupOrigin { RepositoryId = source.Repo.Id, BackupId = sourceId, CopiedAt = source.Clock.GetUtcNow() }, copy.CopiedFrom);
        Assert.Equal(original.Disks.Select(d => (d.Name, d.SizeBytes)), copy.Disks.Select(d => (d.Name, d.SizeBytes)));
        Assert.Null(copy.Disks[0].Chunks[1]);
        Assert.Equal(copy.Disks[0].Chunks[0], copy.Disks[0].Chunks[3]);
        Assert.DoesNotContain(copy.Disks.SelectMany(d => d.Chunks), id => id is { } i && ids.Contains(i)); // ids are per repository key
        Assert.Equal(await RestoreAsync(source.Repo, sourceId), await RestoreAsync(reopened, result.TargetBackupId));
        Assert.Equal(Concat(ChunkSize, a, null, b, a), (await RestoreAsync(reopened, result.TargetBackupId))[0]);
        Assert.Equal(3, target.CountChunkFiles());
        var verify = await reopened.VerifyAsync(readData: true, Ct);
        Assert.True(verify.IsHealthy);
        Assert.Equal(3, verify.ChunksRead);
    }

    [Fact]
    public async Task Copying_an_incremental_uploads_only_what_the_target_lacks_and_a_recopy_is_a_no_op()
    {
        await using var source = await CreateAsync();
        await using var target = await CreateAsync(passphrase: "target", clock: source.Clock);
        var chunks = Enumerable.Range(0, 6).Select(i => i % 2 == 0 ? RandomChunk() : TextChunk("c" + i)).ToArray();
        var (full, _) = await source.BackupAsync("vm", chunks);
        source.Clock.Advance(TimeSpan.FromHours(1));
        var changed = (byte[]?[])chunks.Clone();
        changed[2] = RandomChunk();
        changed[5] = TextChunk("changed");
        var (incremental, _) = await source.BackupAsync("vm", changed);

        var first = await BackupCopy.CopyAsync(source.Repo, full, target.Repo, "copier", null, Ct);
        Assert.Equal((6L, 6L), (first.ChunksRead, first.ChunksUploaded));
        var second = await BackupCopy.CopyAsync(source.Repo, incremental, target.Repo, "copier", null, Ct);
        Assert.Equal((false, 6L, 2L), (second.AlreadyPresent, second.ChunksRead, second.ChunksUploaded));
        Assert.Equal(8, target.CountChunkFiles());
        Assert.Equal(second.ChunksUploaded, (await target.Repo.ReadManifestAsync(second.TargetBackupId, Ct)).Stats.ChunksNew);

        var again = await BackupCopy.CopyAsync(source.Repo, full, target.Repo, "copier", null, Ct);
        Assert.Equal((first.TargetBackupId, true, 0L, 0L, 0L), (again.TargetBackupId, again.AlreadyPresent, again.ChunksRead, again.ChunksUploaded, again.BytesUploaded));
        Assert.Equal(2, (await target.Repo.ListBackupsAsync(Ct)).Count);
        Assert.Equal(await RestoreAsync(source.Repo, incremental), await RestoreAsync(target.Repo, second.TargetBackupId));
        Assert.True((await target.Repo.VerifyAsync(readData: true, Ct)).IsHealthy);

        // Back again: a copy of a copy is a new backup in the first repository, recorded as coming from the second.
        var back = await BackupCopy.CopyAsync(target.Repo, second.TargetBackupId, source.Repo, "copier", null, Ct);
        Assert.Equal((6L, 0L), (back.ChunksRead, back.ChunksUploaded)); // the source has all of it
        Assert.Equal(target.Repo.Id, (await source.Repo.ReadManifestAsync(back.TargetBackupId, Ct)).CopiedFrom!.RepositoryId);
    }

    [Fact]
    public async Task Different_chunk_sizes_and_the_same_repository_are_refused()
    {
        await using var source = await CreateAsync();
        await using var other = await CreateAsync(chunkSize: 2 * ChunkSize);
        await using var same = await CreateAsync();
        var (id, _) = await source.BackupAsync("vm", RandomChunk());
        var e = await Assert.ThrowsAsync<RepositoryFormatMismatchException>(() => BackupCopy.CopyAsync(source.Repo, id, other.Repo, "h", null, Ct));
        Assert.Contains("chunk sizes", e.Message);
        await Assert.ThrowsAsync<RepositoryFormatMismatchException>(() => BackupCopy.CopyAsync(source.Repo, id, source.Repo, "h", null, Ct));
        Assert.Empty(await other.Repo.ListBackupsAsync(Ct));
        await Assert.ThrowsAsync<BackupNotFoundException>(() => BackupCopy.CopyAsync(source.Repo, "20250101-000000-00000000", same.Repo, "h", null, Ct));
    }

    [Fact]
    public async Task A_missing_or_corrupt_source_chunk_fails_the_copy_and_leaves_no_manifest()
    {
        await using var source = await CreateAsync();
        await using var target = await CreateAsync(clock: source.Clock);
        var many = Enumerable.Range(0, 20).Select(_ => RandomChunk()).ToArray();
        var (broken, index) = await source.BackupAsync("vm", many);
        File.Delete(source.ChunkPath(index[13]!.Value));
        var missing = await Assert.ThrowsAsync<MissingChunkException>(() => BackupCopy.CopyAsync(source.Repo, broken, target.Repo, "h", null, Ct));
        Assert.Equal(index[13], missing.ChunkId);
        Assert.Empty(await target.Repo.ListBackupsAsync(Ct));

        var (bad, badIndex) = await source.BackupAsync("vm2", TextChunk("ok"), RandomChunk());
        var path = source.ChunkPath(badIndex[1]!.Value);
        var bytes = await File.ReadAllBytesAsync(path, Ct);
        bytes[^5] ^= 1;
        await File.WriteAllBytesAsync(path, bytes, Ct);
        await Assert.ThrowsAsync<CorruptChunkException>(() => BackupCopy.CopyAsync(source.Repo, bad, target.Repo, "h", null, Ct));
        Assert.Empty(await target.Repo.ListBackupsAsync(Ct));
        Assert.Empty(Directory.GetFiles(Path.Combine(target.StorePath, "locks")));
        Assert.True((await target.Repo.VerifyAsync(readData: true, Ct)).IsHealthy); // only unreferenced chunks, for GC
    }

    [Fact]
    public async Task A_copy_into_an_immutable_repository_is_locked_like_any_backup()
    {
        await using var source = await CreateAsync();
        var store = new FakeLockStore(source.Clock);
        var options = new RepositoryOptions { ChunkSize = ChunkSize, Kdf = RepositoryKdf.Cheapest, Immutability = new RepositoryImmutability { Mode = RetentionMode.Governance, Days = 10 } };
        await using var target = await Repository.InitAsync(store, "t", options, source.Clock, Ct);
        var (id, _) = await source.BackupAsync("vm", RandomChunk(), TextChunk("locked"));
        source.Clock.Advance(TimeSpan.FromDays(30)); // an old backup: the copy is locked from when it is written

        var result = await BackupCopy.CopyAsync(source.Repo, id, target, "h", null, Ct);
        var manifestLock = store.RetentionOf("summaries/" + result.TargetBackupId)!;
        Assert.Equal(new ObjectRetention(RetentionMode.Governance, source.Clock.GetUtcNow().AddDays(10)), manifestLock);
        foreach (var key in store.Keys("chunks/")) Assert.True(store.RetentionOf(key)!.RetainUntil >= manifestLock.RetainUntil);
        await Assert.ThrowsAsync<ObjectLockedException>(() => store.DeleteAsync("summaries/" + result.TargetBackupId, Ct));
        Assert.True((await target.VerifyAsync(readData: true, Ct)).IsHealthy);
    }
}
