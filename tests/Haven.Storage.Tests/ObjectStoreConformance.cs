using System.Security.Cryptography;
using Xunit;

namespace Haven.Storage.Tests;

/// <summary>
/// The <see cref="IObjectStore"/> contract, run against every backend: derive, return a fresh empty store
/// from <see cref="CreateStore"/>, and every test here runs on it.
/// </summary>
public abstract class ObjectStoreConformance
{
    /// <summary>A new, empty store; called once per test.</summary>
    protected abstract IObjectStore CreateStore();

    protected static CancellationToken Ct => TestContext.Current.CancellationToken;

    protected static byte[] RandomBytes(int length)
    {
        var data = new byte[length];
        Random.Shared.NextBytes(data);
        return data;
    }

    [Fact]
    public async Task Create_is_create_only_and_the_first_content_stays()
    {
        var store = CreateStore();
        var first = RandomBytes(1000);
        Assert.True(await store.TryCreateAsync("a/b/obj", first, Ct));
        Assert.False(await store.TryCreateAsync("a/b/obj", RandomBytes(2000), Ct));
        Assert.Equal(first, await store.GetAsync("a/b/obj", Ct));
        var info = await store.StatAsync("a/b/obj", Ct);
        Assert.NotNull(info);
        Assert.Equal("a/b/obj", info.Key);
        Assert.Equal(1000, info.Size);
        Assert.InRange(info.LastModified, DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddMinutes(5));
    }

    [Fact]
    public async Task Of_eight_concurrent_creators_exactly_one_wins_and_its_content_is_intact()
    {
        var store = CreateStore();
        for (var round = 0; round < 10; round++)
        {
            var key = $"race/{round}";
            var contents = Enumerable.Range(0, 8).Select(_ => RandomBytes(256 * 1024 + round)).ToArray();
            var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var creators = contents.Select(c => Task.Run(async () => { await gate.Task; return await store.TryCreateAsync(key, c, Ct); }, Ct)).ToArray();
            gate.SetResult();
            var results = await Task.WhenAll(creators);
            Assert.Equal(1, results.Count(r => r));
            var winner = contents[Array.IndexOf(results, true)];
            Assert.Equal(winner, await store.GetAsync(key, Ct));
        }
        var listed = new List<ObjectInfo>();
        await foreach (var o in store.ListAsync("", Ct)) listed.Add(o);
        Assert.Equal(10, listed.Count);
    }

    [Fact]
    public async Task Overwrite_is_atomic_for_concurrent_readers()
    {
        var store = CreateStore();
        var a = new byte[2 * 1024 * 1024];
        var b = new byte[3 * 1024 * 1024];
        a.AsSpan().Fill(0xAA);
        b.AsSpan().Fill(0xBB);
        await store.PutAsync("lock/x", a, Ct);
        using var stop = new CancellationTokenSource();
        var torn = 0;
        var reads = 0;
        var readers = Enumerable.Range(0, 3).Select(_ => Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                var seen = await store.GetAsync("lock/x", Ct);
                Interlocked.Increment(ref reads);
                if (seen is null || !(seen.AsSpan().SequenceEqual(a) || seen.AsSpan().SequenceEqual(b))) Interlocked.Increment(ref torn);
            }
        }, Ct)).ToArray();
        for (var i = 0; i < 60; i++) await store.PutAsync("lock/x", i % 2 == 0 ? b : a, Ct);
        stop.Cancel();
        await Task.WhenAll(readers);
        Assert.True(reads > 0);
        Assert.Equal(0, torn);
        Assert.Equal(a, await store.GetAsync("lock/x", Ct));
        Assert.True(await store.TryCreateAsync("lock/y", a, Ct));
        await store.PutAsync("lock/y", b, Ct); // overwrite also works on an object made by create
        Assert.Equal(b, await store.GetAsync("lock/y", Ct));
    }

    [Fact]
    public async Task List_returns_exactly_the_keys_under_a_prefix_with_sizes()
    {
        var store = CreateStore();
        string[] keys = ["a/b/1", "a/b/2", "a/c/3", "ab/4", "x", "a/b/22"];
        for (var i = 0; i < keys.Length; i++) Assert.True(await store.TryCreateAsync(keys[i], new byte[i * 10], Ct));

        async Task<string[]> List(string prefix)
        {
            var found = new List<string>();
            await foreach (var o in store.ListAsync(prefix, Ct))
            {
                Assert.Equal(Array.IndexOf(keys, o.Key) * 10, o.Size);
                found.Add(o.Key);
            }
            return [.. found.Order(StringComparer.Ordinal)];
        }

        Assert.Equal(["a/b/1", "a/b/2", "a/b/22"], await List("a/b/"));
        Assert.Equal(["a/b/2", "a/b/22"], await List("a/b/2"));
        Assert.Equal(["a/b/1", "a/b/2", "a/b/22", "a/c/3"], await List("a/"));
        Assert.Equal(["a/b/1", "a/b/2", "a/b/22", "a/c/3", "ab/4"], await List("a"));
        Assert.Equal(keys.Order(StringComparer.Ordinal), await List(""));
        Assert.Empty(await List("nothing/"));
        Assert.Empty(await List("a/b/3"));
    }

    [Fact]
    public async Task Delete_is_idempotent_and_missing_objects_read_as_null()
    {
        var store = CreateStore();
        Assert.Null(await store.GetAsync("never/was", Ct));
        Assert.Null(await store.StatAsync("never/was", Ct));
        Assert.Equal(-1, await store.ReadAsync("never/was", new byte[10], Ct));
        Assert.False(await store.DeleteAsync("never/was", Ct));

        Assert.True(await store.TryCreateAsync("d/obj", RandomBytes(10), Ct));
        Assert.True(await store.DeleteAsync("d/obj", Ct));
        Assert.False(await store.DeleteAsync("d/obj", Ct));
        Assert.Null(await store.GetAsync("d/obj", Ct));
        Assert.Null(await store.StatAsync("d/obj", Ct));
        await foreach (var o in store.ListAsync("d/", Ct)) Assert.Fail("listed deleted object " + o.Key);
        // A deleted key can be created again.
        Assert.True(await store.TryCreateAsync("d/obj", RandomBytes(5), Ct));
    }

    [Fact]
    public async Task Invalid_keys_are_refused_before_any_io()
    {
        var store = CreateStore();
        string[] bad = ["", "/a", "a/", "a//b", "..", "../x", "a/../b", "a/./b", ".hidden", "a/.b", "A", "a b", "a\\b", "a\0b", "é", "a:b", new string('a', 513)];
        foreach (var key in bad)
        {
            await Assert.ThrowsAsync<InvalidObjectKeyException>(() => store.TryCreateAsync(key, new byte[1], Ct));
            await Assert.ThrowsAsync<InvalidObjectKeyException>(() => store.PutAsync(key, new byte[1], Ct));
            await Assert.ThrowsAsync<InvalidObjectKeyException>(() => store.GetAsync(key, Ct));
            await Assert.ThrowsAsync<InvalidObjectKeyException>(() => store.ReadAsync(key, new byte[1], Ct));
            await Assert.ThrowsAsync<InvalidObjectKeyException>(() => store.DeleteAsync(key, Ct));
            await Assert.ThrowsAsync<InvalidObjectKeyException>(() => store.StatAsync(key, Ct));
            Assert.False(ObjectKey.IsValid(key), key);
        }
        foreach (var prefix in new[] { "/", "//", "../", "a//", "A/" })
            await Assert.ThrowsAsync<InvalidObjectKeyException>(async () => { await foreach (var _ in store.ListAsync(prefix, Ct)) { } });
        await foreach (var o in store.ListAsync("", Ct)) Assert.Fail("an invalid key left an object: " + o.Key);
        foreach (var good in new[] { "config", "chunks/ab/abcdef", "chunks/ab/abcdef.bad", "locks/writer-1_2", "a.b/c-d/e_f" })
            Assert.True(ObjectKey.IsValid(good), good);
    }

    [Fact]
    public async Task A_64_MiB_object_round_trips()
    {
        var store = CreateStore();
        var data = RandomNumberGenerator.GetBytes(64 * 1024 * 1024);
        Assert.True(await store.TryCreateAsync("big/object", data, Ct));
        Assert.Equal(data.Length, (await store.StatAsync("big/object", Ct))!.Size);
        var read = await store.GetAsync("big/object", Ct);
        Assert.True(data.AsSpan().SequenceEqual(read));
        var into = new byte[data.Length + 100];
        Assert.Equal(data.Length, await store.ReadAsync("big/object", into, Ct));
        Assert.True(data.AsSpan().SequenceEqual(into.AsSpan(0, data.Length)));
    }

    [Fact]
    public async Task Read_into_a_short_buffer_copies_the_start_and_reports_the_full_length()
    {
        var store = CreateStore();
        var data = RandomBytes(5000);
        Assert.True(await store.TryCreateAsync("r/obj", data, Ct));
        var into = new byte[100];
        Assert.Equal(5000, await store.ReadAsync("r/obj", into, Ct));
        Assert.Equal(data.AsSpan(0, 100).ToArray(), into);
        Assert.True(await store.TryCreateAsync("r/empty", ReadOnlyMemory<byte>.Empty, Ct));
        Assert.Empty((await store.GetAsync("r/empty", Ct))!);
        Assert.Equal(0, await store.ReadAsync("r/empty", into, Ct));
    }

    [Fact]
    public async Task A_batch_publishes_every_staged_object_whole_at_flush_and_never_touches_existing_ones()
    {
        var store = CreateStore();
        var existing = RandomBytes(1000);
        Assert.True(await store.TryCreateAsync("chunks/aa/existing", existing, Ct));
        var contents = Enumerable.Range(0, 40).Select(i => RandomBytes(64 * 1024 + i)).ToArray();
        await using (var batch = store.BeginBatch())
        {
            Assert.False(await batch.TryCreateAsync("chunks/aa/existing", RandomBytes(500), Ct));
            var created = await Task.WhenAll(contents.Select((c, i) => Task.Run(() => batch.TryCreateAsync($"chunks/{i % 4:x2}/obj{i}", c, Ct), Ct)));
            Assert.All(created, Assert.True);
            await batch.FlushAsync(Ct);
            // Everything staged is there, whole, right after the flush.
            for (var i = 0; i < contents.Length; i++) Assert.Equal(contents[i], await store.GetAsync($"chunks/{i % 4:x2}/obj{i}", Ct));
            await batch.FlushAsync(Ct); // nothing left: a second flush is harmless
        }
        Assert.Equal(existing, await store.GetAsync("chunks/aa/existing", Ct));
        var listed = new List<string>();
        await foreach (var o in store.ListAsync("", Ct)) listed.Add(o.Key);
        Assert.Equal(41, listed.Count);
    }

    [Fact]
    public async Task A_batch_disposed_without_a_flush_leaves_each_key_absent_or_whole_and_no_stray_objects()
    {
        var store = CreateStore();
        var data = RandomBytes(100_000);
        await using (var batch = store.BeginBatch())
            Assert.True(await batch.TryCreateAsync("chunks/bb/dropped", data, Ct));
        var got = await store.GetAsync("chunks/bb/dropped", Ct);
        Assert.True(got is null || got.AsSpan().SequenceEqual(data));
        await foreach (var o in store.ListAsync("", Ct)) Assert.Equal("chunks/bb/dropped", o.Key);
    }
}
