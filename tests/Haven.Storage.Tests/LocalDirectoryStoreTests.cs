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
}
