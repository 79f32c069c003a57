using Haven.TestSupport;
using Xunit;

namespace Haven.Storage.Tests;

public sealed class LocalDirectoryStoreTests : ObjectStoreConformance, IDisposable
{
    private readonly TempDir _dir = new();
    private int _stores;

    protected override IObjectStore CreateStore() => new LocalDirectoryStore(_dir.File($"store{_stores++}"));

    public void Dispose() => _dir.Dispose();

    [Fact]
    public async Task Writes_leave_no_temporary_files_and_stray_files_are_not_listed()
    {
        var store = (LocalDirectoryStore)CreateStore();
        Assert.True(await store.TryCreateAsync("k/one", RandomBytes(10), Ct));
        Assert.False(await store.TryCreateAsync("k/one", RandomBytes(10), Ct));
        await store.PutAsync("k/two", RandomBytes(10), Ct);
        Assert.Equal(["one", "two"], Directory.GetFileSystemEntries(Path.Combine(store.RootPath, "k")).Select(Path.GetFileName).Order());
        // What a crash mid-write leaves (a temp file) and foreign files are not objects.
        File.WriteAllText(Path.Combine(store.RootPath, "k", ".tmp-crashed"), "partial");
        File.WriteAllText(Path.Combine(store.RootPath, "k", "README.TXT"), "not a key");
        var keys = new List<string>();
        await foreach (var o in store.ListAsync("", Ct)) keys.Add(o.Key);
        Assert.Equal(["k/one", "k/two"], keys.Order());
    }

    [Fact]
    public async Task A_full_disk_is_a_StoreFullException_and_leaves_no_partial_object()
    {
        using var fs = SmallTmpfs.TryMount("2m", out var reason);
        if (fs is null) { Assert.Skip(reason); return; }
        var store = new LocalDirectoryStore(Path.Combine(fs.Path, "repo"));
        Assert.True(await store.TryCreateAsync("small/a", RandomBytes(100 * 1024), Ct));
        var full = await Assert.ThrowsAsync<StoreFullException>(() => store.TryCreateAsync("big/b", RandomBytes(4 * 1024 * 1024), Ct));
        Assert.Equal("big/b", full.Key);
        Assert.DoesNotContain('\n', full.Message);
        await Assert.ThrowsAsync<StoreFullException>(() => store.PutAsync("small/a", RandomBytes(4 * 1024 * 1024), Ct));
        Assert.Null(await store.GetAsync("big/b", Ct));
        Assert.Equal(100 * 1024, (await store.StatAsync("small/a", Ct))!.Size);
        Assert.Empty(Directory.GetFiles(fs.Path, ".tmp-*", SearchOption.AllDirectories));
        // Room is back once the failed write is gone: nothing was left holding it.
        Assert.True(await store.TryCreateAsync("big/c", RandomBytes(1024 * 1024), Ct));
    }

    [Fact]
    public async Task A_batch_names_nothing_before_its_flush_and_leaves_no_staging_files()
    {
        // The power-loss rule: a key only ever names bytes that were fsynced first, so nothing staged is visible
        // (to readers, listings or create-only writers) until the flush synced it.
        var store = (LocalDirectoryStore)CreateStore();
        var data = RandomBytes(300_000);
        await using (var batch = store.BeginBatch())
        {
            Assert.True(await batch.TryCreateAsync("chunks/cc/one", data, Ct));
            Assert.Null(await store.StatAsync("chunks/cc/one", Ct));
            Assert.True(await store.TryCreateAsync("chunks/cc/two", data, Ct)); // unaffected by the batch
            await batch.FlushAsync(Ct);
            Assert.Equal(data, await store.GetAsync("chunks/cc/one", Ct));
        }
        Assert.Empty(Directory.GetFileSystemEntries(Path.Combine(store.RootPath, ".staging")));
        Assert.Equal(["one", "two"], Directory.GetFileSystemEntries(Path.Combine(store.RootPath, "chunks", "cc")).Select(Path.GetFileName).Order());
    }

    [Fact]
    public async Task A_killed_writers_staging_folder_is_removed_by_the_next_batch_and_a_live_one_is_kept()
    {
        var store = (LocalDirectoryStore)CreateStore();
        await using var live = store.BeginBatch();
        Assert.True(await live.TryCreateAsync("chunks/dd/live", RandomBytes(1000), Ct));
        // What a kill -9 leaves: a staging folder with files and a lock file nobody holds.
        var dead = Path.Combine(store.RootPath, ".staging", "deadbeef");
        Directory.CreateDirectory(dead);
        File.WriteAllText(Path.Combine(dead, ".lock"), "");
        File.WriteAllBytes(Path.Combine(dead, "1"), RandomBytes(1000));

        await using (var next = store.BeginBatch()) { }
        Assert.False(Directory.Exists(dead));
        await live.FlushAsync(Ct); // the live batch's staging folder survived the clean-up
        Assert.NotNull(await store.StatAsync("chunks/dd/live", Ct));
    }
}
