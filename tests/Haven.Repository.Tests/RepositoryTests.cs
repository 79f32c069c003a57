using System.Text;
using System.Text.Json;
using Haven.Storage;
using Haven.TestSupport;
using Xunit;
using static Haven.Repository.Tests.RepoFixture;

namespace Haven.Repository.Tests;

/// <summary>Format, round trips, refusals and corruption detection.</summary>
public sealed class RepositoryTests
{
    [Fact]
    public async Task Chunks_and_manifests_round_trip_through_a_fresh_open()
    {
        await using var f = await CreateAsync();
        var random = RandomChunk();
        var text = TextChunk("round trip");
        var tail = RandomChunk(1000);
        await using var writer = await f.Repo.BeginBackupAsync("host-a", Ct);
        var ids = new List<ChunkId>();
        foreach (var data in new[] { random, text, tail })
        {
            var id = writer.ComputeId(data);
            Assert.True(await writer.PutChunkAsync(id, data, Ct));
            ids.Add(id);
        }
        var definition = JsonSerializer.SerializeToElement(new { name = "web", memoryMiB = 512, disks = new[] { "a", "b" } });
        var checkpoint = JsonSerializer.SerializeToElement(new { bitmap = "haven-1" });
        var manifest = new BackupManifest
        {
            VmName = "web",
            VmDefinition = definition,
            HostName = "host-a",
            CreatedAt = f.Clock.GetUtcNow(),
            ParentBackupId = null,
            Mode = "full",
            ModeReason = "first backup of this VM to this repository",
            Consistency = "ApplicationConsistent",
            Checkpoint = checkpoint,
            Disks =
            [
                new DiskManifest { Name = "disk0", SizeBytes = 3L * ChunkSize, ChunkSize = ChunkSize, Chunks = [ids[0], null, ids[1]] },
                new DiskManifest { Name = "disk1", SizeBytes = ChunkSize + 1000, ChunkSize = ChunkSize, Chunks = [ids[0], ids[2]] },
            ],
        };
        var backupId = await writer.CommitAsync(manifest, Ct);
        Assert.Matches("^[0-9]{8}-[0-9]{6}-[0-9a-f]{8}$", backupId);

        // A new host: store location and passphrase only.
        await using var other = await f.OpenAgainAsync();
        Assert.Equal(f.Repo.Id, other.Id);
        Assert.Equal(ChunkSize, other.ChunkSize);
        var list = await other.ListBackupsAsync(Ct);
        var summary = Assert.Single(list);
        Assert.Equal((backupId, "web", "host-a", "full", 2, 4L * ChunkSize + 1000), (summary.Id, summary.VmName, summary.HostName, summary.Mode, summary.DiskCount, summary.SizeBytes));
        var read = await other.ReadManifestAsync(backupId, Ct);
        Assert.Equal(backupId, read.Id);
        Assert.Equal(definition.GetRawText(), read.VmDefinition.GetRawText());
        Assert.Equal(checkpoint.GetRawText(), read.Checkpoint!.Value.GetRawText());
        Assert.Equal((manifest.ModeReason, manifest.Consistency, manifest.CreatedAt), (read.ModeReason, read.Consistency, read.CreatedAt));
        Assert.Equal(manifest.Disks[0].Chunks, read.Disks[0].Chunks);
        Assert.Equal(manifest.Disks[1].Chunks, read.Disks[1].Chunks);
        Assert.Equal(new ManifestStats { SizeBytes = 4L * ChunkSize + 1000, ChunksReferenced = 4, ChunksZero = 1, ChunksNew = 3, BytesNew = 2L * ChunkSize + 1000, StoredBytesNew = read.Stats.StoredBytesNew }, read.Stats);
        Assert.InRange(read.Stats.StoredBytesNew, ChunkSize + 1000, 2L * ChunkSize + 1000 + 3 * 34); // the text chunk compressed

        var buffer = new byte[ChunkSize];
        foreach (var (id, data) in ids.Zip([random, text, tail]))
        {
            Assert.Equal(data.Length, await other.ReadChunkAsync(id, buffer, Ct));
            Assert.True(data.AsSpan().SequenceEqual(buffer.AsSpan(0, data.Length)));
        }
        Assert.True((await other.VerifyAsync(readData: true, Ct)).IsHealthy);
    }

    [Fact]
    public async Task Stored_objects_reveal_no_plaintext_and_ids_depend_on_the_repository_key()
    {
        await using var f = await CreateAsync();
        await using var g = await CreateAsync();
        var text = TextChunk("SECRET-MARKER");
        var (backupId, index) = await f.BackupAsync("secret-vm-name", text);
        var id = index[0]!.Value;
        await using (var w = await g.Repo.BeginBackupAsync("h", Ct)) Assert.NotEqual(id, w.ComputeId(text));
        await using (var w = await f.Repo.BeginBackupAsync("h", Ct)) Assert.Equal(id, w.ComputeId(text));
        foreach (var file in Directory.GetFiles(f.StorePath, "*", SearchOption.AllDirectories))
        {
            var bytes = Encoding.ASCII.GetString(await File.ReadAllBytesAsync(file, Ct));
            Assert.DoesNotContain("SECRET-MARKER", bytes);
            Assert.DoesNotContain("secret-vm-name", bytes);
        }
        var config = JsonDocument.Parse(await File.ReadAllBytesAsync(Path.Combine(f.StorePath, "config"), Ct)).RootElement;
        Assert.Equal("haven-backup-repository", config.GetProperty("format").GetString());
        var kdf = config.GetProperty("kdf");
        Assert.Equal(("argon2id", 19, RepositoryKdf.MinArgon2MemoryKiB, 2, 1, 16), (kdf.GetProperty("algorithm").GetString(), kdf.GetProperty("version").GetInt32(),
            kdf.GetProperty("memoryKiB").GetInt32(), kdf.GetProperty("iterations").GetInt32(), kdf.GetProperty("parallelism").GetInt32(), kdf.GetProperty("salt").GetBytesFromBase64().Length));
        Assert.Equal(ChunkSize, config.GetProperty("chunkSize").GetInt32());
        Assert.True(File.Exists(f.ManifestPath(backupId)));
    }

    [Fact]
    public async Task Wrong_passphrase_not_a_repository_and_double_init_are_refused()
    {
        await using var f = await CreateAsync();
        var wrong = await Assert.ThrowsAsync<WrongPassphraseException>(() => f.OpenAgainAsync("Correct horse battery staple"));
        Assert.Contains(f.Repo.Id, wrong.Message);
        Assert.DoesNotContain('\n', wrong.Message);

        var empty = new LocalDirectoryStore(f.Dir.File("empty"));
        var none = await Assert.ThrowsAsync<NotARepositoryException>(() => Repository.OpenAsync(empty, "x", Ct));
        Assert.Contains("no config", none.Message);
        Assert.Contains(f.Dir.File("empty"), none.Message);
        await empty.PutAsync("config", "{\"hello\":1}"u8.ToArray(), Ct);
        await Assert.ThrowsAsync<NotARepositoryException>(() => Repository.OpenAsync(empty, "x", Ct));
        await empty.PutAsync("config", "not json"u8.ToArray(), Ct);
        await Assert.ThrowsAsync<NotARepositoryException>(() => Repository.OpenAsync(empty, "x", Ct));

        await Assert.ThrowsAsync<RepositoryExistsException>(() => Repository.InitAsync(f.Store, "other", new RepositoryOptions { Kdf = RepositoryKdf.Cheapest }, Ct));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => Repository.InitAsync(empty, "x", new RepositoryOptions { ChunkSize = 100_000 }, Ct));

        // Editing a fixed parameter breaks the key wrap: it cannot silently change how the repository behaves.
        var configPath = Path.Combine(f.StorePath, "config");
        var edited = File.ReadAllText(configPath).Replace($"\"chunkSize\": {ChunkSize}", "\"chunkSize\": 131072");
        Assert.NotEqual(File.ReadAllText(configPath), edited);
        File.WriteAllText(configPath, edited);
        await Assert.ThrowsAsync<WrongPassphraseException>(() => f.OpenAgainAsync());
    }

    [Fact]
    public async Task A_flipped_bit_in_a_chunk_is_caught_on_read_and_verify_names_exactly_the_backups_using_it()
    {
        await using var f = await CreateAsync();
        var shared = TextChunk("shared");
        var (a, ia) = await f.BackupAsync("vm1", shared, RandomChunk());
        var (b, _) = await f.BackupAsync("vm2", RandomChunk(), shared);
        var (c, _) = await f.BackupAsync("vm3", RandomChunk());
        var bad = ia[0]!.Value;
        var path = f.ChunkPath(bad);
        var bytes = await File.ReadAllBytesAsync(path, Ct);
        bytes[bytes.Length / 2] ^= 0x10;
        await File.WriteAllBytesAsync(path, bytes, Ct);

        var e = await Assert.ThrowsAsync<CorruptChunkException>(() => f.Repo.ReadChunkAsync(bad, new byte[ChunkSize], Ct));
        Assert.Equal(bad, e.ChunkId);
        Assert.True((await f.Repo.VerifyAsync(readData: false, Ct)).IsHealthy); // structure alone cannot see it

        var result = await f.Repo.VerifyAsync(readData: true, Ct);
        var problem = Assert.Single(result.CorruptChunks);
        Assert.Equal(bad, problem.ChunkId);
        Assert.Equal(new[] { a, b }.Order(StringComparer.Ordinal), problem.BackupIds);
        Assert.Equal(new[] { a, b }.Order(StringComparer.Ordinal), result.DamagedBackups);
        Assert.DoesNotContain(c, result.DamagedBackups);
        Assert.False(File.Exists(path));
        Assert.Equal(bytes, await File.ReadAllBytesAsync(path + ".bad", Ct)); // set aside, not deleted
        Assert.EndsWith(".bad", problem.MovedTo);
        await Assert.ThrowsAsync<MissingChunkException>(() => f.Repo.ReadChunkAsync(bad, new byte[ChunkSize], Ct));
        var missing = Assert.Single((await f.Repo.VerifyAsync(readData: false, Ct)).MissingChunks);
        Assert.Equal(bad, missing.ChunkId);

        // The next backup holding that data stores it again, and the old backups are whole again.
        await f.BackupAsync("vm1", shared);
        Assert.True((await f.Repo.VerifyAsync(readData: true, Ct)).IsHealthy);
    }

    /// <summary>Reads <paramref name="id"/> into a buffer filled with a marker; asserts the read fails and leaves no plaintext in it.</summary>
    private static async Task<CorruptChunkException> AssertReadRefusedAsync(RepoFixture f, ChunkId id)
    {
        var buffer = new byte[ChunkSize];
        Array.Fill(buffer, (byte)0xA5);
        var read = -1;
        var e = await Assert.ThrowsAsync<CorruptChunkException>(async () => read = await f.Repo.ReadChunkAsync(id, buffer, Ct));
        Assert.Equal(-1, read); // nothing was returned...
        Assert.True(buffer.AsSpan().IndexOfAnyExcept((byte)0) < 0, "the caller's buffer holds bytes of a refused chunk"); // ...nor left in the buffer
        Assert.Equal(id, e.ChunkId);
        Assert.Contains(id.ToString(), e.Message);
        Assert.DoesNotContain('\n', e.Message);
        return e;
    }

    [Fact]
    public async Task A_changed_gcm_tag_or_a_swapped_chunk_file_fails_authentication_and_returns_nothing()
    {
        await using var f = await CreateAsync();
        var (_, index) = await f.BackupAsync("vm", TextChunk("one"), TextChunk("two"), RandomChunk());
        var (one, two, random) = (index[0]!.Value, index[1]!.Value, index[2]!.Value);

        // Another chunk's intact object under this id: it is bound to the other id, so the tag fails.
        File.Copy(f.ChunkPath(two), f.ChunkPath(one), overwrite: true);
        Assert.Equal("authentication failed (AES-GCM tag mismatch)", (await AssertReadRefusedAsync(f, one)).Reason);

        // Only the tag changes: the ciphertext and so the plaintext are intact (the id would still match), so
        // the GCM tag check alone must refuse it — for a compressed (text) and a raw (random) payload.
        foreach (var id in new[] { two, random })
        {
            var bytes = await File.ReadAllBytesAsync(f.ChunkPath(id), Ct);
            bytes[^1] ^= 0x01;
            await File.WriteAllBytesAsync(f.ChunkPath(id), bytes, Ct);
            Assert.Equal("authentication failed (AES-GCM tag mismatch)", (await AssertReadRefusedAsync(f, id)).Reason);
        }
        File.WriteAllBytes(f.ChunkPath(two), new byte[10]);
        await AssertReadRefusedAsync(f, two);
    }

    [Fact]
    public async Task A_chunk_that_authenticates_but_holds_other_data_is_refused_by_read_restore_and_verify()
    {
        await using var f = await CreateAsync();
        var planted = TextChunk("PLANTED-B");
        var (backupId, index) = await f.BackupAsync("vm", RandomChunk(), TextChunk("chunk A"), RandomChunk(500));
        var a = index[1]!.Value;
        // Plaintext B sealed under chunk id A with the repository's own key: the object authenticates as chunk A
        // (tag, binding and envelope are all right); only the id check can tell it is not A's data.
        var sealedB = new byte[SealedObject.Overhead + planted.Length];
        var length = f.Repo.SealChunk(a, planted, sealedB);
        await File.WriteAllBytesAsync(f.ChunkPath(a), sealedB[..length], Ct);

        // Read.
        Assert.Equal("plaintext does not hash to the chunk id", (await AssertReadRefusedAsync(f, a)).Reason);

        // Restore, through the restore data path (DiskRestore, as havend runs it) into a raw file.
        var manifest = await f.Repo.ReadManifestAsync(backupId, Ct);
        var disk = manifest.Disks[0];
        var target = f.Dir.File("restored.raw");
        using (var handle = File.OpenHandle(target, FileMode.CreateNew, FileAccess.ReadWrite))
        {
            var e = await Assert.ThrowsAsync<CorruptChunkException>(() => Haven.Backup.DiskRestore.RunAsync(
                f.Repo, disk.Chunks, disk.ChunkSize, disk.SizeBytes, new Haven.Backup.RawFileBlockTarget(handle), targetIsZeroed: true, progress: null, Ct));
            Assert.Equal(a, e.ChunkId);
        }
        Assert.DoesNotContain("PLANTED-B", Encoding.ASCII.GetString(await File.ReadAllBytesAsync(target, Ct)));

        // verify --read-data: names the chunk and the backup, and sets the object aside.
        var verify = await f.Repo.VerifyAsync(readData: true, Ct);
        var problem = Assert.Single(verify.CorruptChunks);
        Assert.Equal((a, "plaintext does not hash to the chunk id"), (problem.ChunkId, problem.Reason));
        Assert.Equal([backupId], problem.BackupIds);
        Assert.Equal([backupId], verify.DamagedBackups);
        Assert.False(File.Exists(f.ChunkPath(a)));
        Assert.Equal(sealedB[..length], await File.ReadAllBytesAsync(f.ChunkPath(a) + ".bad", Ct));
    }

    [Fact]
    public async Task Truncated_edited_and_swapped_manifests_are_refused()
    {
        await using var f = await CreateAsync();
        var (a, _) = await f.BackupAsync("vm1", RandomChunk());
        var (b, _) = await f.BackupAsync("vm2", RandomChunk());
        var (c, _) = await f.BackupAsync("vm3", RandomChunk());
        var (d, _) = await f.BackupAsync("vm4", RandomChunk());
        var pa = f.ManifestPath(a);
        var pb = f.ManifestPath(b);
        var bytesA = await File.ReadAllBytesAsync(pa, Ct);
        var bytesB = await File.ReadAllBytesAsync(pb, Ct);
        // Swap two manifests' files: each is authenticated with its own id.
        await File.WriteAllBytesAsync(pa, bytesB, Ct);
        await File.WriteAllBytesAsync(pb, bytesA, Ct);
        // Truncate one, flip one byte of another.
        var bytesC = await File.ReadAllBytesAsync(f.ManifestPath(c), Ct);
        await File.WriteAllBytesAsync(f.ManifestPath(c), bytesC[..^1], Ct);
        var bytesD = await File.ReadAllBytesAsync(f.ManifestPath(d), Ct);
        bytesD[30] ^= 1;
        await File.WriteAllBytesAsync(f.ManifestPath(d), bytesD, Ct);

        foreach (var id in new[] { a, b, c, d })
        {
            var e = await Assert.ThrowsAsync<CorruptManifestException>(() => f.Repo.ReadManifestAsync(id, Ct));
            Assert.Equal(id, e.BackupId);
            Assert.DoesNotContain('\n', e.Message);
        }
        var list = await f.Repo.ListBackupsAsync(Ct);
        Assert.Empty(list);
        Assert.Equal(new[] { a, b, c, d }.Order(StringComparer.Ordinal), list.Unreadable.Select(m => m.BackupId));
        var gc = await f.Repo.CollectGarbageAsync(Ct); // GC cannot know what they reference: it deletes nothing
        Assert.Equal((true, 0L), (gc.SweepSkipped, gc.ChunksDeleted));
        var verify = await f.Repo.VerifyAsync(readData: false, Ct);
        Assert.Equal(new[] { a, b, c, d }.Order(StringComparer.Ordinal), verify.CorruptManifests.Select(m => m.BackupId));
        Assert.False(verify.IsHealthy);

        await Assert.ThrowsAsync<BackupNotFoundException>(() => f.Repo.ReadManifestAsync("20250101-000000-00000000", Ct));
        await Assert.ThrowsAsync<BackupNotFoundException>(() => f.Repo.ReadManifestAsync("../config", Ct));
    }

    [Fact]
    public async Task The_same_data_is_stored_once()
    {
        await using var f = await CreateAsync();
        var data = RandomChunk();
        await using (var w = await f.Repo.BeginBackupAsync("h", Ct))
        {
            var id = w.ComputeId(data);
            Assert.True(await w.PutChunkAsync(id, data, Ct));
            Assert.Equal(1, f.CountChunkFiles());
            Assert.False(await w.PutChunkAsync(id, data, Ct));
            Assert.Equal(1, f.CountChunkFiles());
            await w.CommitAsync(f.Manifest("vm", [id, id], 2L * ChunkSize), Ct);
        }
        var before = Directory.GetLastWriteTimeUtc(f.ChunkPath(f.Repo.ComputeId(data)));
        await using (var w = await f.Repo.BeginBackupAsync("h", Ct))
        {
            Assert.Equal(1, w.KnownChunkCount);
            Assert.False(await w.PutChunkAsync(w.ComputeId(data), data, Ct)); // known from the listing: no store call
            var other = RandomChunk();
            Assert.True(await w.PutChunkAsync(w.ComputeId(other), other, Ct));
            var id = await w.CommitAsync(f.Manifest("vm", [w.ComputeId(data), w.ComputeId(other)], 2L * ChunkSize), Ct);
            var stats = (await f.Repo.ReadManifestAsync(id, Ct)).Stats;
            Assert.Equal((1L, 2L), (stats.ChunksNew, stats.ChunksReferenced));
        }
        Assert.Equal(2, f.CountChunkFiles());
        Assert.Equal(before, Directory.GetLastWriteTimeUtc(f.ChunkPath(f.Repo.ComputeId(data))));
    }

    [Fact]
    public async Task Four_concurrent_writers_with_overlapping_data_store_each_chunk_once()
    {
        await using var f = await CreateAsync();
        var pool = Enumerable.Range(0, 48).Select(i => i % 3 == 0 ? TextChunk("pool" + i) : RandomChunk()).ToArray();
        var poolIds = pool.Select(p => f.Repo.ComputeId(p)).ToArray();
        var news = new long[4];
        var backups = await Task.WhenAll(Enumerable.Range(0, 4).Select(w => Task.Run(async () =>
        {
            // Writer w backs up pool entries w*8 .. w*8+23: each overlaps its neighbours by 16 chunks.
            await using var writer = await f.Repo.BeginBackupAsync($"host-{w}", Ct);
            var index = Enumerable.Range(w * 8, 24).Select(i => (ChunkId?)poolIds[i]).ToArray();
            await Parallel.ForEachAsync(Enumerable.Range(w * 8, 24), new ParallelOptions { MaxDegreeOfParallelism = 4, CancellationToken = Ct }, async (i, ct) =>
            {
                if (await writer.PutChunkAsync(writer.ComputeId(pool[i]), pool[i], ct)) Interlocked.Increment(ref news[w]);
                Assert.False(await writer.PutChunkAsync(poolIds[i], pool[i], ct)); // same writer, again: never new
            });
            return (Id: await writer.CommitAsync(f.Manifest($"vm{w}", index, 24L * ChunkSize), Ct), First: w * 8);
        }, Ct)));
        Assert.Equal(48, f.CountChunkFiles());
        Assert.Equal(48, news.Sum()); // each chunk reported new by exactly one writer
        var buffer = new byte[ChunkSize];
        foreach (var (id, first) in backups)
        {
            var m = await f.Repo.ReadManifestAsync(id, Ct);
            for (var i = 0; i < 24; i++)
            {
                await f.Repo.ReadChunkAsync(m.Disks[0].Chunks[i]!.Value, buffer, Ct);
                Assert.Equal(pool[first + i], buffer);
            }
        }
        Assert.True((await f.Repo.VerifyAsync(readData: true, Ct)).IsHealthy);
        Assert.Empty(Directory.GetFiles(Path.Combine(f.StorePath, "locks")));
    }

    [Fact]
    public async Task Bad_chunks_and_manifests_are_refused_by_the_writer()
    {
        await using var f = await CreateAsync();
        await using var w = await f.Repo.BeginBackupAsync("h", Ct);
        var zero = new byte[ChunkSize];
        await Assert.ThrowsAsync<ArgumentException>(() => w.PutChunkAsync(w.ComputeId(zero), zero, Ct));
        var data = RandomChunk();
        var other = RandomChunk();
        await Assert.ThrowsAsync<ArgumentException>(() => w.PutChunkAsync(w.ComputeId(other), data, Ct));
        await Assert.ThrowsAsync<ArgumentException>(() => w.PutChunkAsync(w.ComputeId(data), new byte[ChunkSize + 1], Ct));
        Assert.Equal(0, f.CountChunkFiles());

        var id = w.ComputeId(data);
        Assert.True(await w.PutChunkAsync(id, data, Ct));
        await Assert.ThrowsAsync<ArgumentException>(() => w.CommitAsync(f.Manifest("vm", [id], 2L * ChunkSize), Ct)); // index too short
        await Assert.ThrowsAsync<ArgumentException>(() => w.CommitAsync(f.Manifest("vm", [id], ChunkSize) with
        {
            Disks = [new DiskManifest { Name = "d", SizeBytes = ChunkSize, ChunkSize = 2 * ChunkSize, Chunks = [id] }],
        }, Ct));
        var e = await Assert.ThrowsAsync<ChunksMissingException>(() => w.CommitAsync(f.Manifest("vm", [id, w.ComputeId(other)], 2L * ChunkSize), Ct));
        Assert.Equal([w.ComputeId(other)], e.ChunkIds);
        Assert.Empty(await f.Repo.ListBackupsAsync(Ct));
        await w.CommitAsync(f.Manifest("vm", [id], ChunkSize), Ct);
        await Assert.ThrowsAsync<InvalidOperationException>(() => w.CommitAsync(f.Manifest("vm", [id], ChunkSize), Ct));
    }

    [Fact]
    public async Task A_full_store_fails_cleanly_and_the_repository_still_verifies()
    {
        using var tmpfs = SmallTmpfs.TryMount("2m", out var reason);
        if (tmpfs is null) { Assert.Skip(reason); return; }
        using var dir = new TempDir();
        await using var f = await CreateAsync(path: Path.Combine(tmpfs.Path, "repo"), dir: dir);
        var (first, _) = await f.BackupAsync("vm", RandomChunk(), TextChunk("fits"));
        StoreFullException? full = null;
        await using (var w = await f.Repo.BeginBackupAsync("h", Ct))
        {
            for (var i = 0; i < 100 && full is null; i++)
            {
                var data = RandomChunk();
                try { await w.PutChunkAsync(w.ComputeId(data), data, Ct); }
                catch (StoreFullException e) { full = e; }
            }
        }
        Assert.NotNull(full);
        Assert.StartsWith("object store is full", full.Message);
        Assert.Empty(Directory.GetFiles(tmpfs.Path, ".tmp-*", SearchOption.AllDirectories));
        var verify = await f.Repo.VerifyAsync(readData: true, Ct);
        Assert.True(verify.IsHealthy, string.Join("; ", verify.CorruptChunks.Select(c => c.Reason)));
        Assert.Equal(verify.ChunksPresent, verify.ChunksRead);
        Assert.Single(await f.Repo.ListBackupsAsync(Ct), b => b.Id == first);
        // GC makes room again (the abandoned writer's chunks are garbage once old enough).
        f.Clock.Advance(TimeSpan.FromHours(1));
        Assert.True((await f.Repo.CollectGarbageAsync(Ct)).ChunksDeleted > 0);
        await f.BackupAsync("vm", RandomChunk());
    }
}
