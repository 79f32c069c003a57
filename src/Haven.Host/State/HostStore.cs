using Haven.Api;
using Haven.Host.Tracking;
using Microsoft.Data.Sqlite;

namespace Haven.Host.State;

/// <summary>
/// The host's state in SQLite. One connection, used under a lock; callers group changes that must
/// land together in <see cref="Write"/>, which runs them in one transaction.
/// </summary>
public sealed class HostStore : IDisposable
{
    private const int SchemaVersion = 8;
    private readonly SqliteConnection _db;
    private readonly Lock _lock = new();

    public HostStore(string path) : this(path, SchemaVersion) { }

    /// <summary>
    /// A database at an older schema, made by the same steps that made it back then: migration tests build their
    /// old databases with it. Nothing but a migration test opens a store below the current schema.
    /// </summary>
    internal HostStore(string path, int schemaVersion)
    {
        _db = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = path, Pooling = false }.ToString());
        _db.Open();
        Exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;");
        Migrate(schemaVersion);
    }

    private void Migrate(int target)
    {
        var version = Convert.ToInt32(Scalar("PRAGMA user_version"));
        if (version > SchemaVersion) throw new InvalidOperationException($"state database schema {version} is newer than this havend ({SchemaVersion})");
        if (version >= target) return;
        // Each step runs when the database is below it and the target is not.
        bool Below(int step) => version < step && target >= step;
        if (Below(1)) CreateSchema1();
        if (Below(2))
            Exec("""
                CREATE TABLE reference_points (
                  vm_id TEXT NOT NULL REFERENCES vms(id) ON DELETE CASCADE, disk_idx INTEGER NOT NULL, repo_id TEXT NOT NULL,
                  bitmap TEXT NOT NULL, layer_id TEXT NOT NULL, backup_id TEXT NOT NULL, consistency TEXT NOT NULL,
                  created_at TEXT NOT NULL, file_stamp TEXT, untrusted_reason TEXT,
                  PRIMARY KEY (vm_id, disk_idx, repo_id));
                """);
        if (Below(3))
            Exec("""
                CREATE TABLE jobs (
                  name TEXT PRIMARY KEY, definition TEXT NOT NULL, last_run TEXT, last_status TEXT, last_error TEXT);
                """);
        if (Below(4))
            Exec("""
                CREATE TABLE replicas (
                  vm_id TEXT PRIMARY KEY REFERENCES vms(id) ON DELETE CASCADE, primary_host TEXT NOT NULL, primary_vm_id TEXT NOT NULL,
                  trust_group TEXT NOT NULL, last_cycle INTEGER NOT NULL, additional_points INTEGER NOT NULL, created_at TEXT NOT NULL,
                  state TEXT NOT NULL, last_test_failover TEXT);
                CREATE TABLE replica_points (
                  vm_id TEXT NOT NULL REFERENCES vms(id) ON DELETE CASCADE, cycle INTEGER NOT NULL, checkpoint_id TEXT NOT NULL,
                  point_time TEXT NOT NULL, consistency TEXT NOT NULL, PRIMARY KEY (vm_id, cycle));
                CREATE TABLE replications (
                  vm_id TEXT PRIMARY KEY REFERENCES vms(id) ON DELETE CASCADE, target TEXT NOT NULL, settings TEXT NOT NULL,
                  last_cycle INTEGER NOT NULL, statistics TEXT NOT NULL);
                """);
        if (Below(5)) MigrateReplicationCounters();
        if (Below(6)) MigrateTrackingPoints();
        if (Below(7)) MigrateAutostart();
        if (Below(8)) MigrateHardwareDocument();
        Exec($"PRAGMA user_version = {target}");
    }

    /// <summary>
    /// Schema 5: a replication's statistics become columns, each counter updated in place by one statement, so a
    /// cycle finishing cannot write back a stale copy over a missed cycle counted meanwhile. Existing JSON moves over.
    /// </summary>
    private void MigrateReplicationCounters()
    {
        // Schema 5: the certificate identity a replica is bound to (docs/replication.md) and the replication counters as
        // columns. One transaction with the version bump: a crash leaves schema 4 whole, and the next start migrates again.
        Exec("BEGIN IMMEDIATE");
        Exec("""
            ALTER TABLE replicas ADD COLUMN primary_identity TEXT NOT NULL DEFAULT '';
            ALTER TABLE replications ADD COLUMN successful_cycles INTEGER NOT NULL DEFAULT 0;
            ALTER TABLE replications ADD COLUMN failed_cycles INTEGER NOT NULL DEFAULT 0;
            ALTER TABLE replications ADD COLUMN missed_cycles INTEGER NOT NULL DEFAULT 0;
            ALTER TABLE replications ADD COLUMN total_bytes INTEGER NOT NULL DEFAULT 0;
            ALTER TABLE replications ADD COLUMN max_bytes INTEGER NOT NULL DEFAULT 0;
            ALTER TABLE replications ADD COLUMN total_seconds REAL NOT NULL DEFAULT 0;
            ALTER TABLE replications ADD COLUMN max_seconds REAL NOT NULL DEFAULT 0;
            ALTER TABLE replications ADD COLUMN last_success TEXT;
            ALTER TABLE replications ADD COLUMN last_failure TEXT;
            ALTER TABLE replications ADD COLUMN last_app_consistent TEXT;
            ALTER TABLE replications ADD COLUMN last_error TEXT;
            ALTER TABLE replications ADD COLUMN last_outcome TEXT NOT NULL DEFAULT 'None';
            """);
        foreach (var (vmId, json) in Query("SELECT vm_id, statistics FROM replications", [], r => (S(r, "vm_id")!, S(r, "statistics")!)))
        {
            Replication.ReplicationStatistics? old;
            try { old = System.Text.Json.JsonSerializer.Deserialize<Replication.ReplicationStatistics>(json, ApiJson.Options); }
            catch (System.Text.Json.JsonException) { old = null; } // unreadable: the counters start from zero
            if (old is null) continue;
            var outcome = old.LastFailure is { } f && (old.LastSuccess is null || f > old.LastSuccess) ? Replication.CycleOutcome.Failed
                : old.LastSuccess is not null ? Replication.CycleOutcome.Succeeded : Replication.CycleOutcome.None;
            Exec("""
                UPDATE replications SET successful_cycles=$a, failed_cycles=$b, missed_cycles=$c, total_bytes=$d, max_bytes=$e, total_seconds=$f,
                  max_seconds=$g, last_success=$h, last_failure=$i, last_app_consistent=$j, last_error=$k, last_outcome=$l WHERE vm_id=$m
                """, old.SuccessfulCycles, old.FailedCycles, old.MissedCycles, old.TotalBytes, old.MaxBytes, old.TotalSeconds, old.MaxSeconds,
                old.LastSuccess?.ToString("O"), old.LastFailure?.ToString("O"), old.LastAppConsistent?.ToString("O"), old.LastError, outcome.ToString(), vmId);
        }
        Exec("ALTER TABLE replications DROP COLUMN statistics");
        Exec("PRAGMA user_version = 5");
        Exec("COMMIT");
    }

    /// <summary>
    /// Schema 6: change tracking gets its own table, keyed by a typed consumer (Tracking.TrackingConsumer) instead of a
    /// repository id that replication borrowed as "replica:&lt;vm&gt;" with its cycle number in the backup id column.
    /// Rows move over; a replication row's cycle is parsed here, once (one that does not parse is dropped: its
    /// replication then resynchronizes, which misses nothing). Journaled backups and cycles name their consumer the new way.
    /// </summary>
    private void MigrateTrackingPoints()
    {
        const string OldReplicaPrefix = "replica:";
        Exec("BEGIN IMMEDIATE");
        Exec("""
            CREATE TABLE tracking_points (
              vm_id TEXT NOT NULL REFERENCES vms(id) ON DELETE CASCADE, disk_idx INTEGER NOT NULL, consumer TEXT NOT NULL,
              bitmap TEXT NOT NULL, layer_id TEXT NOT NULL, backup_id TEXT, cycle INTEGER, consistency TEXT NOT NULL,
              created_at TEXT NOT NULL, file_stamp TEXT, untrusted_reason TEXT,
              PRIMARY KEY (vm_id, disk_idx, consumer));
            """);
        static TrackingConsumer ConsumerOf(string repoId) => repoId.StartsWith(OldReplicaPrefix, StringComparison.Ordinal)
            ? TrackingConsumer.ForReplication(repoId[OldReplicaPrefix.Length..]) : TrackingConsumer.ForBackup(repoId);
        foreach (var old in Query("SELECT * FROM reference_points", [], r => new
        {
            VmId = S(r, "vm_id")!, Disk = Convert.ToInt32(r["disk_idx"]), RepoId = S(r, "repo_id")!, Bitmap = S(r, "bitmap")!, LayerId = S(r, "layer_id")!,
            BackupId = S(r, "backup_id")!, Consistency = S(r, "consistency")!, CreatedAt = S(r, "created_at")!, FileStamp = S(r, "file_stamp"),
            Untrusted = S(r, "untrusted_reason"),
        }))
        {
            var consumer = ConsumerOf(old.RepoId);
            long? cycle = null;
            if (consumer.Kind == TrackingConsumerKind.Replication)
            {
                if (!long.TryParse(old.BackupId, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var c)) continue;
                cycle = c;
            }
            Exec("INSERT INTO tracking_points VALUES ($a,$b,$c,$d,$e,$f,$g,$h,$i,$j,$k)", old.VmId, old.Disk, consumer.ToString(), old.Bitmap, old.LayerId,
                cycle is null ? old.BackupId : null, cycle, old.Consistency, old.CreatedAt, old.FileStamp, old.Untrusted);
        }
        // A backup or cycle interrupted by the upgrade: its journal names the consumer as the reconciler now reads it.
        foreach (var (id, payload) in Query("SELECT id, payload FROM operations WHERE kind IN ('backup', 'replication')", [], r => (S(r, "id")!, S(r, "payload")!)))
        {
            if (System.Text.Json.Nodes.JsonNode.Parse(payload) is not System.Text.Json.Nodes.JsonObject plan || plan["repositoryId"]?.GetValue<string>() is not { } repoId) continue;
            plan.Remove("repositoryId");
            plan["consumer"] = ConsumerOf(repoId).ToString();
            Exec("UPDATE operations SET payload=$a WHERE id=$b", plan.ToJsonString(), id);
        }
        Exec("DROP TABLE reference_points");
        Exec("PRAGMA user_version = 6");
        Exec("COMMIT");
    }

    /// <summary>Schema 7: a VM's autostart flag (havend starts it after start-up reconciliation); off for existing VMs.</summary>
    private void MigrateAutostart()
    {
        Exec("BEGIN IMMEDIATE");
        Exec("ALTER TABLE vms ADD COLUMN autostart INTEGER NOT NULL DEFAULT 0");
        Exec("PRAGMA user_version = 7");
        Exec("COMMIT");
    }

    /// <summary>
    /// Schema 8: a VM's vcpus, memory and network columns become one hardware document (JSON, Haven.Api.VmHardware),
    /// and every checkpoint gets a copy of it (the hardware it is applied with). A "user" network becomes NIC nic0 with
    /// QEMU's default MAC 52:54:00:12:34:56, the one the guest saw so far (user-mode NICs are private to their VM).
    /// Existing checkpoints get the VM's current document: the best knowledge there is.
    /// </summary>
    private void MigrateHardwareDocument()
    {
        Exec("BEGIN IMMEDIATE");
        Exec("ALTER TABLE vms ADD COLUMN hardware TEXT NOT NULL DEFAULT '{}'");
        Exec("ALTER TABLE checkpoints ADD COLUMN hardware TEXT");
        foreach (var (id, vcpus, memory, network) in Query("SELECT id, vcpus, memory_mib, network FROM vms", [],
            r => (S(r, "id")!, Convert.ToInt32(r["vcpus"]), Convert.ToInt32(r["memory_mib"]), S(r, "network")!)))
        {
            var hw = Vms.Hardware.Write(Vms.Hardware.FromLegacy(vcpus, memory, network, "52:54:00:12:34:56"));
            Exec("UPDATE vms SET hardware=$a WHERE id=$b", hw, id);
            Exec("UPDATE checkpoints SET hardware=$a WHERE vm_id=$b", hw, id);
        }
        Exec("ALTER TABLE vms DROP COLUMN vcpus");
        Exec("ALTER TABLE vms DROP COLUMN memory_mib");
        Exec("ALTER TABLE vms DROP COLUMN network");
        Exec("PRAGMA user_version = 8");
        Exec("COMMIT");
    }

    private void CreateSchema1()
    {
        Exec("""
            CREATE TABLE vms (
              id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, vcpus INTEGER NOT NULL, memory_mib INTEGER NOT NULL,
              kernel TEXT, initrd TEXT, append TEXT, guest_agent INTEGER NOT NULL, network TEXT NOT NULL,
              accelerator TEXT NOT NULL, checkpoint_type TEXT NOT NULL, current_checkpoint_id TEXT, created_at TEXT NOT NULL);
            CREATE TABLE disks (
              vm_id TEXT NOT NULL REFERENCES vms(id) ON DELETE CASCADE, idx INTEGER NOT NULL, size_bytes INTEGER NOT NULL,
              active_layer_id TEXT NOT NULL, PRIMARY KEY (vm_id, idx));
            CREATE TABLE layers (
              id TEXT PRIMARY KEY, vm_id TEXT NOT NULL REFERENCES vms(id) ON DELETE CASCADE, disk_idx INTEGER NOT NULL,
              parent_id TEXT, checkpoint_id TEXT);
            CREATE TABLE checkpoints (
              id TEXT PRIMARY KEY, vm_id TEXT NOT NULL REFERENCES vms(id) ON DELETE CASCADE, name TEXT NOT NULL,
              parent_id TEXT, kind TEXT NOT NULL, consistency TEXT NOT NULL, created_at TEXT NOT NULL, has_state INTEGER NOT NULL,
              UNIQUE (vm_id, name));
            CREATE TABLE operations (
              id TEXT PRIMARY KEY, vm_id TEXT NOT NULL, kind TEXT NOT NULL, payload TEXT NOT NULL, started_at TEXT NOT NULL);
            """);
    }

    // ---- reads ----

    public List<VmRecord> ListVms() => Query("SELECT * FROM vms ORDER BY name", [], ReadVm);
    public VmRecord? FindVmByName(string name) => Query("SELECT * FROM vms WHERE name=$a", [name], ReadVm).FirstOrDefault();
    public VmRecord? FindVm(string id) => Query("SELECT * FROM vms WHERE id=$a", [id], ReadVm).FirstOrDefault();
    public List<DiskRecord> ListDisks(string vmId) => Query("SELECT * FROM disks WHERE vm_id=$a ORDER BY idx", [vmId], ReadDisk);
    public List<LayerRecord> ListLayers(string vmId) => Query("SELECT * FROM layers WHERE vm_id=$a", [vmId], ReadLayer);
    public List<LayerRecord> ListAllLayers() => Query("SELECT * FROM layers", [], ReadLayer);
    public List<CheckpointRecord> ListCheckpoints(string vmId) => Query("SELECT * FROM checkpoints WHERE vm_id=$a ORDER BY created_at, rowid", [vmId], ReadCheckpoint);
    public List<CheckpointRecord> ListAllCheckpoints() => Query("SELECT * FROM checkpoints", [], ReadCheckpoint);
    public List<OperationRecord> ListOperations() => Query("SELECT * FROM operations ORDER BY started_at", [], ReadOperation);
    /// <summary>Change tracking: read through host.Tracking (Tracking.ChangeTracker) only.</summary>
    internal List<TrackingPoint> ListTrackingPoints(string vmId) => Query("SELECT * FROM tracking_points WHERE vm_id=$a", [vmId], ReadTrackingPoint);
    public ReplicaRecord? FindReplica(string vmId) => Query("SELECT * FROM replicas WHERE vm_id=$a", [vmId], ReadReplica).FirstOrDefault();
    public List<ReplicaRecord> ListReplicas() => Query("SELECT * FROM replicas ORDER BY vm_id", [], ReadReplica);
    /// <summary>Recovery points of a replica VM, oldest cycle first.</summary>
    public List<ReplicaPointRecord> ListReplicaPoints(string vmId) =>
        Query("SELECT * FROM replica_points WHERE vm_id=$a ORDER BY cycle", [vmId], ReadReplicaPoint);

    public ReplicationRecord? FindReplication(string vmId) => Query("SELECT * FROM replications WHERE vm_id=$a", [vmId], ReadReplication).FirstOrDefault();
    public List<ReplicationRecord> ListReplications() => Query("SELECT * FROM replications ORDER BY vm_id", [], ReadReplication);

    public List<JobRecord> ListJobs() => Query("SELECT * FROM jobs ORDER BY name", [], ReadJob);
    public OperationRecord? FindOperation(string id) => Query("SELECT * FROM operations WHERE id=$a", [id], ReadOperation).FirstOrDefault();

    // ---- writes ----

    /// <summary>Runs <paramref name="changes"/> in one transaction: all of it lands or none.</summary>
    public void Write(Action<Writer> changes)
    {
        lock (_lock)
        {
            using var tx = _db.BeginTransaction();
            changes(new Writer(this, tx));
            tx.Commit();
        }
    }

    public sealed class Writer
    {
        private readonly HostStore _s;
        private readonly SqliteTransaction _tx;
        internal Writer(HostStore s, SqliteTransaction tx) { _s = s; _tx = tx; }

        public void InsertVm(VmRecord v) => X("""
            INSERT INTO vms (id, name, kernel, initrd, append, guest_agent, accelerator, checkpoint_type, current_checkpoint_id, created_at, hardware, autostart)
            VALUES ($a,$b,$c,$d,$e,$f,$g,$h,$i,$j,$k,$l)
            """, v.Id, v.Name, v.Kernel, v.Initrd, v.Append, v.GuestAgent ? 1 : 0, v.Accelerator,
            v.CheckpointType.ToString(), v.CurrentCheckpointId, v.CreatedAt.ToString("O"), Vms.Hardware.Write(v.Hardware), v.Autostart ? 1 : 0);
        public void SetHardware(string vmId, VmHardware hw) => X("UPDATE vms SET hardware=$a WHERE id=$b", Vms.Hardware.Write(hw), vmId);
        public void SetVmBootFiles(string vmId, string? kernel, string? initrd) => X("UPDATE vms SET kernel=$a, initrd=$b WHERE id=$c", kernel, initrd, vmId);
        public void SetAutostart(string vmId, bool on) => X("UPDATE vms SET autostart=$a WHERE id=$b", on ? 1 : 0, vmId);
        public void SetCheckpointType(string vmId, CheckpointType t) => X("UPDATE vms SET checkpoint_type=$a WHERE id=$b", t.ToString(), vmId);
        public void SetCurrentCheckpoint(string vmId, string? cpId) => X("UPDATE vms SET current_checkpoint_id=$a WHERE id=$b", cpId, vmId);
        public void DeleteVm(string vmId)
        {
            X("DELETE FROM operations WHERE vm_id=$a", vmId);
            X("DELETE FROM vms WHERE id=$a", vmId);
        }
        public void InsertDisk(DiskRecord d) => X("INSERT INTO disks VALUES ($a,$b,$c,$d)", d.VmId, d.Index, d.SizeBytes, d.ActiveLayerId);
        public void SetDiskSize(string vmId, int disk, long size) => X("UPDATE disks SET size_bytes=$a WHERE vm_id=$b AND idx=$c", size, vmId, disk);
        public void SetActiveLayer(string vmId, int disk, string layerId) => X("UPDATE disks SET active_layer_id=$a WHERE vm_id=$b AND idx=$c", layerId, vmId, disk);
        public void InsertLayer(LayerRecord l) => X("INSERT INTO layers VALUES ($a,$b,$c,$d,$e)", l.Id, l.VmId, l.DiskIndex, l.ParentId, l.CheckpointId);
        public void SetLayerParent(string layerId, string? parentId) => X("UPDATE layers SET parent_id=$a WHERE id=$b", parentId, layerId);
        public void SetLayerCheckpoint(string layerId, string? cpId) => X("UPDATE layers SET checkpoint_id=$a WHERE id=$b", cpId, layerId);
        public void DeleteLayer(string layerId) => X("DELETE FROM layers WHERE id=$a", layerId);
        public void InsertCheckpoint(CheckpointRecord c) => X("""
            INSERT INTO checkpoints (id, vm_id, name, parent_id, kind, consistency, created_at, has_state, hardware) VALUES ($a,$b,$c,$d,$e,$f,$g,$h,$i)
            """, c.Id, c.VmId, c.Name, c.ParentId, c.Kind.ToString(), c.Consistency.ToString(), c.CreatedAt.ToString("O"), c.HasState ? 1 : 0,
            c.Hardware is null ? null : Vms.Hardware.Write(c.Hardware));
        public void RenameCheckpoint(string cpId, string name) => X("UPDATE checkpoints SET name=$a WHERE id=$b", name, cpId);
        public void SetCheckpointParent(string cpId, string? parentId) => X("UPDATE checkpoints SET parent_id=$a WHERE id=$b", parentId, cpId);
        public void DeleteCheckpoint(string cpId) => X("DELETE FROM checkpoints WHERE id=$a", cpId);
        public void InsertOperation(OperationRecord o) => X("INSERT INTO operations VALUES ($a,$b,$c,$d,$e)", o.Id, o.VmId, o.Kind, o.Payload, o.StartedAt.ToString("O"));
        public void UpdateOperation(string id, string payload) => X("UPDATE operations SET payload=$a WHERE id=$b", payload, id);
        public void DeleteOperation(string id) => X("DELETE FROM operations WHERE id=$a", id);
        public void InsertReplica(ReplicaRecord r) => X("INSERT INTO replicas VALUES ($a,$b,$c,$d,$e,$f,$g,$h,$i,$j)",
            r.VmId, r.PrimaryHost, r.PrimaryVmId, r.TrustGroup, r.LastCycle, r.AdditionalPoints, r.CreatedAt.ToString("O"), r.State.ToString(), r.LastTestFailover?.ToString("O"),
            r.PrimaryIdentity);
        public void SetReplicaIdentity(string vmId, string identity) => X("UPDATE replicas SET primary_identity=$a WHERE vm_id=$b", identity, vmId);
        public void SetReplicaState(string vmId, ReplicaState state) => X("UPDATE replicas SET state=$a WHERE vm_id=$b", state.ToString(), vmId);
        public void SetReplicaTestFailover(string vmId, DateTimeOffset at) => X("UPDATE replicas SET last_test_failover=$a WHERE vm_id=$b", at.ToString("O"), vmId);
        public void DeleteReplica(string vmId)
        {
            X("DELETE FROM replica_points WHERE vm_id=$a", vmId);
            X("DELETE FROM replicas WHERE vm_id=$a", vmId);
        }
        public void SetReplicaCycle(string vmId, long cycle) => X("UPDATE replicas SET last_cycle=$a WHERE vm_id=$b", cycle, vmId);
        public void InsertReplicaPoint(ReplicaPointRecord p) => X("INSERT INTO replica_points VALUES ($a,$b,$c,$d,$e)",
            p.VmId, p.Cycle, p.CheckpointId, p.PointTime.ToString("O"), p.Consistency.ToString());
        public void DeleteReplicaPoint(string vmId, long cycle) => X("DELETE FROM replica_points WHERE vm_id=$a AND cycle=$b", vmId, cycle);
        /// <summary>A new replication: its counters start at zero (those of <paramref name="r"/> are not copied).</summary>
        public void InsertReplication(ReplicationRecord r) => X("INSERT INTO replications (vm_id, target, settings, last_cycle) VALUES ($a,$b,$c,$d)",
            r.VmId, r.Target, r.Settings, r.LastCycle);

        // Counters change in place (count = count + 1), never by writing back a copy read earlier.
        public void RecordCycleSucceeded(string vmId, long cycle, long bytes, TimeSpan took, DateTimeOffset at, bool appConsistent) => X("""
            UPDATE replications SET last_cycle=$a, successful_cycles=successful_cycles+1, total_bytes=total_bytes+$b, max_bytes=MAX(max_bytes,$b),
              total_seconds=total_seconds+$c, max_seconds=MAX(max_seconds,$c), last_success=$d, last_error=NULL, last_outcome=$e,
              last_app_consistent=CASE WHEN $f THEN $d ELSE last_app_consistent END
            WHERE vm_id=$g
            """, cycle, bytes, took.TotalSeconds, at.ToString("O"), Replication.CycleOutcome.Succeeded.ToString(), appConsistent ? 1 : 0, vmId);
        public void RecordCycleFailed(string vmId, string error, DateTimeOffset at) => X(
            "UPDATE replications SET failed_cycles=failed_cycles+1, last_failure=$a, last_error=$b, last_outcome=$c WHERE vm_id=$d",
            at.ToString("O"), error, Replication.CycleOutcome.Failed.ToString(), vmId);
        public void RecordResyncWaiting(string vmId, string why) =>
            X("UPDATE replications SET last_error=$a, last_outcome=$b WHERE vm_id=$c", why, Replication.CycleOutcome.WaitingForResyncWindow.ToString(), vmId);
        public void AddMissedCycles(string vmId, long count) => X("UPDATE replications SET missed_cycles=missed_cycles+$a WHERE vm_id=$b", count, vmId);
        public void SetReplicationSettings(string vmId, string settings) => X("UPDATE replications SET settings=$a WHERE vm_id=$b", settings, vmId);
        public void DeleteReplication(string vmId) => X("DELETE FROM replications WHERE vm_id=$a", vmId);
        public void InsertJob(string name, string definition) => X("INSERT INTO jobs (name, definition) VALUES ($a,$b)", name, definition);
        public void DeleteJob(string name) => X("DELETE FROM jobs WHERE name=$a", name);
        public void SetJobOutcome(string name, DateTimeOffset at, string status, string? error) =>
            X("UPDATE jobs SET last_run=$a, last_status=$b, last_error=$c WHERE name=$d", at.ToString("O"), status, error, name);
        internal void UpsertTrackingPoint(TrackingPoint p) => X("INSERT OR REPLACE INTO tracking_points VALUES ($a,$b,$c,$d,$e,$f,$g,$h,$i,$j,$k)",
            p.VmId, p.DiskIndex, p.Consumer.ToString(), p.Bitmap, p.LayerId, p.Mark.BackupId, p.Mark.Cycle, p.Consistency.ToString(), p.CreatedAt.ToString("O"),
            p.FileStamp, p.UntrustedReason);
        internal void SetTrackingStamp(string vmId, int disk, TrackingConsumer consumer, string? stamp) =>
            X("UPDATE tracking_points SET file_stamp=$a WHERE vm_id=$b AND disk_idx=$c AND consumer=$d", stamp, vmId, disk, consumer.ToString());
        internal void DistrustTrackingPoint(string vmId, int disk, TrackingConsumer consumer, string reason) =>
            X("UPDATE tracking_points SET untrusted_reason=$a WHERE vm_id=$b AND disk_idx=$c AND consumer=$d", reason, vmId, disk, consumer.ToString());
        internal void DeleteTrackingPoints(string vmId, TrackingConsumer consumer) =>
            X("DELETE FROM tracking_points WHERE vm_id=$a AND consumer=$b", vmId, consumer.ToString());

        private void X(string sql, params object?[] args)
        {
            using var cmd = _s._db.CreateCommand();
            cmd.Transaction = _tx;
            cmd.CommandText = sql;
            Bind(cmd, args);
            cmd.ExecuteNonQuery();
        }
    }

    // ---- plumbing ----

    private static readonly string[] ParamNames = ["$a", "$b", "$c", "$d", "$e", "$f", "$g", "$h", "$i", "$j", "$k", "$l", "$m", "$n"];

    private static void Bind(SqliteCommand cmd, object?[] args)
    {
        for (var i = 0; i < args.Length; i++) cmd.Parameters.AddWithValue(ParamNames[i], args[i] ?? DBNull.Value);
    }

    private List<T> Query<T>(string sql, object?[] args, Func<SqliteDataReader, T> read)
    {
        lock (_lock)
        {
            using var cmd = _db.CreateCommand();
            cmd.CommandText = sql;
            Bind(cmd, args);
            using var r = cmd.ExecuteReader();
            var list = new List<T>();
            while (r.Read()) list.Add(read(r));
            return list;
        }
    }

    private void Exec(string sql, params object?[] args)
    {
        lock (_lock)
        {
            using var cmd = _db.CreateCommand();
            cmd.CommandText = sql;
            Bind(cmd, args);
            cmd.ExecuteNonQuery();
        }
    }

    private object? Scalar(string sql)
    {
        lock (_lock)
        {
            using var cmd = _db.CreateCommand();
            cmd.CommandText = sql;
            return cmd.ExecuteScalar();
        }
    }

    private static string? S(SqliteDataReader r, string col) => r[col] is DBNull ? null : (string)r[col];

    private static VmRecord ReadVm(SqliteDataReader r) => new()
    {
        Id = S(r, "id")!,
        Name = S(r, "name")!,
        Hardware = Vms.Hardware.Read(S(r, "hardware")!),
        Kernel = S(r, "kernel"),
        Initrd = S(r, "initrd"),
        Append = S(r, "append"),
        GuestAgent = Convert.ToInt32(r["guest_agent"]) != 0,
        Accelerator = S(r, "accelerator")!,
        CheckpointType = Enum.Parse<CheckpointType>(S(r, "checkpoint_type")!),
        CurrentCheckpointId = S(r, "current_checkpoint_id"),
        CreatedAt = DateTimeOffset.Parse(S(r, "created_at")!),
        Autostart = Convert.ToInt32(r["autostart"]) != 0,
    };

    private static DiskRecord ReadDisk(SqliteDataReader r) =>
        new(S(r, "vm_id")!, Convert.ToInt32(r["idx"]), Convert.ToInt64(r["size_bytes"]), S(r, "active_layer_id")!);

    private static LayerRecord ReadLayer(SqliteDataReader r) =>
        new(S(r, "id")!, S(r, "vm_id")!, Convert.ToInt32(r["disk_idx"]), S(r, "parent_id"), S(r, "checkpoint_id"));

    private static CheckpointRecord ReadCheckpoint(SqliteDataReader r) => new()
    {
        Id = S(r, "id")!,
        VmId = S(r, "vm_id")!,
        Name = S(r, "name")!,
        ParentId = S(r, "parent_id"),
        Kind = Enum.Parse<CheckpointKind>(S(r, "kind")!),
        Consistency = Enum.Parse<Consistency>(S(r, "consistency")!),
        CreatedAt = DateTimeOffset.Parse(S(r, "created_at")!),
        HasState = Convert.ToInt32(r["has_state"]) != 0,
        Hardware = S(r, "hardware") is { } hw ? Vms.Hardware.Read(hw) : null,
    };

    private static TrackingPoint ReadTrackingPoint(SqliteDataReader r) => new()
    {
        VmId = S(r, "vm_id")!,
        DiskIndex = Convert.ToInt32(r["disk_idx"]),
        Consumer = TrackingConsumer.Parse(S(r, "consumer")!),
        Bitmap = S(r, "bitmap")!,
        LayerId = S(r, "layer_id")!,
        Mark = new TrackingMark(S(r, "backup_id"), r["cycle"] is DBNull ? null : Convert.ToInt64(r["cycle"])),
        Consistency = Enum.Parse<Consistency>(S(r, "consistency")!),
        CreatedAt = DateTimeOffset.Parse(S(r, "created_at")!),
        FileStamp = S(r, "file_stamp"),
        UntrustedReason = S(r, "untrusted_reason"),
    };

    private static ReplicaRecord ReadReplica(SqliteDataReader r) => new(S(r, "vm_id")!, S(r, "primary_host")!, S(r, "primary_vm_id")!,
        S(r, "trust_group")!, Convert.ToInt64(r["last_cycle"]), Convert.ToInt32(r["additional_points"]), DateTimeOffset.Parse(S(r, "created_at")!),
        Enum.Parse<ReplicaState>(S(r, "state")!), S(r, "last_test_failover") is { } t ? DateTimeOffset.Parse(t) : null, S(r, "primary_identity") ?? "");

    private static ReplicaPointRecord ReadReplicaPoint(SqliteDataReader r) => new(S(r, "vm_id")!, Convert.ToInt64(r["cycle"]),
        S(r, "checkpoint_id")!, DateTimeOffset.Parse(S(r, "point_time")!), Enum.Parse<Consistency>(S(r, "consistency")!));

    private static ReplicationRecord ReadReplication(SqliteDataReader r) => new(S(r, "vm_id")!, S(r, "target")!, S(r, "settings")!,
        Convert.ToInt64(r["last_cycle"]))
    {
        Statistics = new Replication.ReplicationStatistics
        {
            SuccessfulCycles = Convert.ToInt64(r["successful_cycles"]),
            FailedCycles = Convert.ToInt64(r["failed_cycles"]),
            MissedCycles = Convert.ToInt64(r["missed_cycles"]),
            TotalBytes = Convert.ToInt64(r["total_bytes"]),
            MaxBytes = Convert.ToInt64(r["max_bytes"]),
            TotalSeconds = Convert.ToDouble(r["total_seconds"]),
            MaxSeconds = Convert.ToDouble(r["max_seconds"]),
            LastSuccess = Time(r, "last_success"),
            LastFailure = Time(r, "last_failure"),
            LastAppConsistent = Time(r, "last_app_consistent"),
            LastError = S(r, "last_error"),
            LastOutcome = Enum.Parse<Replication.CycleOutcome>(S(r, "last_outcome")!),
        },
    };

    private static DateTimeOffset? Time(SqliteDataReader r, string col) => S(r, col) is { } t ? DateTimeOffset.Parse(t) : null;

    private static JobRecord ReadJob(SqliteDataReader r) => new(S(r, "name")!, S(r, "definition")!,
        S(r, "last_run") is { } t ? DateTimeOffset.Parse(t) : null, S(r, "last_status"), S(r, "last_error"));

    private static OperationRecord ReadOperation(SqliteDataReader r) =>
        new(S(r, "id")!, S(r, "vm_id")!, S(r, "kind")!, S(r, "payload")!, DateTimeOffset.Parse(S(r, "started_at")!));

    public void Dispose() => _db.Dispose();
}
