using System.Collections.Concurrent;

namespace Haven.Storage;

public sealed partial class LocalDirectoryStore
{
    /// <summary>Where batches stage their files: never a valid key (a segment starting with '.'), so no listing shows it.</summary>
    internal const string StagingFolder = ".staging";

    /// <summary>A staging folder without its lock file is being set up; one older than this was abandoned in between.</summary>
    private static readonly TimeSpan UnlockedStagingAge = TimeSpan.FromMinutes(10);

    /// <summary>fsyncs in flight at a flush: concurrent fsyncs share the file system's journal commits.</summary>
    private const int FlushThreads = 16;

    /// <summary>
    /// A batch stages each object as a plain file (no fsync) in its own folder <c>.staging/&lt;id&gt;/</c>, held
    /// by an exclusive lock on <c>.lock</c> in it, and publishes at <see cref="IObjectBatch.FlushAsync"/>: fsync
    /// every staged file (many at once), link each to its key (create-only), fsync each target folder once.
    /// A key therefore only ever names bytes already on stable storage, even after a power loss; what a
    /// killed process staged is removed by the next batch (its lock is free).
    /// </summary>
    public IObjectBatch BeginBatch() => new Batch(this);

    private sealed class Batch : IObjectBatch
    {
        private readonly LocalDirectoryStore _store;
        private readonly string _dir;
        private readonly FileStream _lock;
        private readonly ConcurrentQueue<(string Tmp, string Key)> _staged = new();
        private long _next;
        private int _disposed;

        public Batch(LocalDirectoryStore store)
        {
            _store = store;
            var root = Path.Combine(store.RootPath, StagingFolder);
            RemoveAbandoned(root);
            _dir = Path.Combine(root, Guid.NewGuid().ToString("N"));
            try
            {
                Directory.CreateDirectory(_dir);
                // FileShare.None is an flock(LOCK_EX) on Linux: released by the kernel when this process dies.
                _lock = new FileStream(Path.Combine(_dir, ".lock"), FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw store.Translate(e, StagingFolder, "create the staging folder for");
            }
        }

        public async Task<bool> TryCreateAsync(string key, ReadOnlyMemory<byte> data, CancellationToken ct = default)
        {
            ObjectKey.Validate(key);
            ObjectDisposedException.ThrowIf(_disposed != 0, this);
            if (File.Exists(_store.PathOf(key))) return false;
            var tmp = Path.Combine(_dir, Interlocked.Increment(ref _next).ToString(System.Globalization.CultureInfo.InvariantCulture));
            try
            {
                using var handle = File.OpenHandle(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, FileOptions.None, data.Length);
                await RandomAccess.WriteAsync(handle, data, 0, ct);
                if (_store._stampClock is not null) File.SetLastWriteTimeUtc(handle, _store._stampClock.GetUtcNow().UtcDateTime);
                Native.StartWriteback(handle); // the disk works while the CPU seals the next chunks; the flush waits less
            }
            catch (Exception e)
            {
                Native.Unlink(tmp);
                if (e is IOException or UnauthorizedAccessException) throw _store.Translate(e, key, "write");
                throw;
            }
            _staged.Enqueue((tmp, key));
            return true;
        }

        public async Task FlushAsync(CancellationToken ct = default)
        {
            ObjectDisposedException.ThrowIf(_disposed != 0, this);
            var staged = new List<(string Tmp, string Key)>();
            while (_staged.TryDequeue(out var s)) staged.Add(s);
            if (staged.Count == 0) return;
            try
            {
                // 1. Data first: after this every staged file's bytes are durable.
                await SyncAllAsync(staged, ct);
                // 2. Then the names: link (create-only; EEXIST means another creator published it first).
                var folders = new Dictionary<string, string>();
                foreach (var (tmp, key) in staged)
                {
                    var path = _store.PathOf(key);
                    var folder = Path.GetDirectoryName(path)!;
                    if (!folders.ContainsKey(folder))
                    {
                        _store.EnsureDirectory(folder);
                        folders[folder] = key;
                    }
                    _store.Publish(tmp, path, key);
                    Native.Unlink(tmp);
                }
                foreach (var (folder, key) in folders) _store.SyncDirectory(folder, key);
            }
            catch
            {
                // Not published (or not known to be): stage them again so a retry or the dispose handles them.
                foreach (var s in staged) if (File.Exists(s.Tmp)) _staged.Enqueue(s);
                throw;
            }
        }

        private async Task SyncAllAsync(List<(string Tmp, string Key)> staged, CancellationToken ct)
        {
            var next = -1;
            Exception? failure = null;
            // Dedicated threads: fsync blocks, and the thread pool would add threads for it only slowly.
            var threads = Math.Min(FlushThreads, staged.Count);
            var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var running = threads;
            for (var t = 0; t < threads; t++)
            {
                new Thread(() =>
                {
                    int i;
                    while (Volatile.Read(ref failure) is null && !ct.IsCancellationRequested && (i = Interlocked.Increment(ref next)) < staged.Count)
                    {
                        var errno = Native.SyncPath(staged[i].Tmp);
                        if (errno != 0)
                            Interlocked.CompareExchange(ref failure, IsDiskFull(errno) ? new StoreFullException(staged[i].Key)
                                : new StoreException($"cannot sync {staged[i].Key} in {_store.RootPath}: {Native.Describe(errno)}"), null);
                    }
                    if (Interlocked.Decrement(ref running) == 0) done.SetResult();
                }) { IsBackground = true, Name = "store flush" }.Start();
            }
            await done.Task;
            if (failure is not null) throw failure;
            ct.ThrowIfCancellationRequested();
        }

        public ValueTask DisposeAsync()
        {
            if (Interlocked.Exchange(ref _disposed, 1) != 0) return ValueTask.CompletedTask;
            try { Directory.Delete(_dir, recursive: true); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { } // the next batch removes it
            _lock.Dispose();
            return ValueTask.CompletedTask;
        }

        /// <summary>Deletes the staging folders of batches whose process is gone (their lock is free).</summary>
        private static void RemoveAbandoned(string root)
        {
            if (!Directory.Exists(root)) return;
            foreach (var folder in Directory.EnumerateDirectories(root))
            {
                try
                {
                    FileStream held;
                    try { held = new FileStream(Path.Combine(folder, ".lock"), FileMode.Open, FileAccess.ReadWrite, FileShare.None); }
                    catch (FileNotFoundException)
                    {
                        if (DateTime.UtcNow - Directory.GetLastWriteTimeUtc(folder) > UnlockedStagingAge) Directory.Delete(folder, recursive: true);
                        continue;
                    }
                    using (held) Directory.Delete(folder, recursive: true);
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException) { } // live (locked), or removed by another batch
            }
        }
    }
}
