using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace Haven.Host.Tests;

/// <summary>One log entry as a test reads it: level, category, text, structured values and the scopes around it.</summary>
public sealed record LogEntry(LogLevel Level, string Category, string Message, IReadOnlyDictionary<string, object?> Values,
    IReadOnlyDictionary<string, object?> Scope, Exception? Exception)
{
    /// <summary>A value of the entry, or else of its scopes.</summary>
    public object? this[string key] => Values.TryGetValue(key, out var v) ? v : Scope.GetValueOrDefault(key);

    public override string ToString() => $"{Level} {Category}: {Message}";
}

/// <summary>An in-memory <see cref="ILoggerProvider"/>: every entry of every category, with its scopes.</summary>
public sealed class CapturedLogs : ILoggerProvider, ISupportExternalScope
{
    private readonly ConcurrentQueue<LogEntry> _entries = new();
    private IExternalScopeProvider _scopes = new LoggerExternalScopeProvider();

    public IReadOnlyList<LogEntry> Entries => [.. _entries];

    /// <summary>A logger factory writing here, at every level.</summary>
    public ILoggerFactory Factory() => LoggerFactory.Create(b => b.SetMinimumLevel(LogLevel.Trace).AddProvider(this));

    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

    public void SetScopeProvider(IExternalScopeProvider scopeProvider) => _scopes = scopeProvider;

    public void Dispose() { }

    private sealed class Logger(CapturedLogs owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => owner._scopes.Push(state);

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            var values = new Dictionary<string, object?>();
            if (state is IEnumerable<KeyValuePair<string, object?>> kvs)
                foreach (var (k, v) in kvs) values[k] = v;
            var scope = new Dictionary<string, object?>();
            owner._scopes.ForEachScope((s, d) =>
            {
                if (s is IEnumerable<KeyValuePair<string, object?>> skv)
                    foreach (var (k, v) in skv) d[k] = v;
            }, scope);
            owner._entries.Enqueue(new LogEntry(logLevel, category, formatter(state, exception), values, scope, exception));
        }
    }
}
