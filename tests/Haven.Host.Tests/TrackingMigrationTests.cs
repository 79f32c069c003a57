using Haven.Api;
using Haven.Host.Backups;
using Haven.Host.Checkpoints;
using Haven.Host.State;
using Haven.Host.Tracking;
using Microsoft.Data.Sqlite;
using Xunit;

namespace Haven.Host.Tests;

/// <summary>
/// Schema 6: the reference points of a schema-5 database become tracking points of typed consumers. A backup's row
/// keeps its repository and backup id; a replication's "replica:&lt;vm&gt;" row becomes the VM's replication consumer
/// with its cycle as an integer; a journaled backup names its consumer the new way.
/// </summary>
public sealed class TrackingMigrationTests
{
    [Fact]
    public void A_schema_5_database_moves_its_reference_points_to_typed_tracking_points()
    {
        using var dir = new Haven.TestSupport.TempDir();
        var db = dir.File("haven.db");
        OldDatabase.Create(db, 5, OldDatabase.VmRow("a", "a") + OldDatabase.VmRow("b", "b") + """
                INSERT INTO reference_points VALUES
                  ('a', 0, 'repo1', 'haven-rp-1', 'L0', '20260201-080000-abcd', 'ApplicationConsistent', '2026-02-01T08:00:00.0000000+00:00', '4096:77', NULL),
                  ('a', 1, 'repo1', 'haven-rp-2', 'L1', '20260201-080000-abcd', 'ApplicationConsistent', '2026-02-01T08:00:00.0000000+00:00', NULL, NULL),
                  ('a', 0, 'replica:a', 'haven-rp-3', 'L0', '17', 'CrashConsistent', '2026-02-01T09:00:00.0000000+00:00', NULL, 'disk 0 was changed outside Haven while the VM was off'),
                  ('b', 0, 'replica:b', 'haven-rp-4', 'M0', 'not a cycle', 'CrashConsistent', '2026-02-01T09:00:00.0000000+00:00', NULL, NULL);
                INSERT INTO operations VALUES
                  ('op1', 'a', 'replication', '{"repositoryId":"replica:a","live":false,"disks":[],"qemuNbdPids":[4711],"freezing":false,"stampsHeld":[0]}', '2026-02-01T09:00:00.0000000+00:00'),
                  ('op2', 'a', 'backup', '{"repositoryId":"repo1","live":true,"disks":[],"qemuNbdPids":[],"freezing":true,"stampsHeld":[]}', '2026-02-01T09:00:00.0000000+00:00');
            """);
        using (var store = new HostStore(db))
        {
            var a = store.ListTrackingPoints("a").OrderBy(p => p.Consumer.Kind).ThenBy(p => p.DiskIndex).ToList();
            Assert.Equal(
            [
                new TrackingPoint
                {
                    VmId = "a", DiskIndex = 0, Consumer = TrackingConsumer.ForBackup("repo1"), Bitmap = "haven-rp-1", LayerId = "L0",
                    Mark = TrackingMark.OfBackup("20260201-080000-abcd"), Consistency = Consistency.ApplicationConsistent,
                    CreatedAt = new DateTimeOffset(2026, 2, 1, 8, 0, 0, TimeSpan.Zero), FileStamp = "4096:77",
                },
                new TrackingPoint
                {
                    VmId = "a", DiskIndex = 1, Consumer = TrackingConsumer.ForBackup("repo1"), Bitmap = "haven-rp-2", LayerId = "L1",
                    Mark = TrackingMark.OfBackup("20260201-080000-abcd"), Consistency = Consistency.ApplicationConsistent,
                    CreatedAt = new DateTimeOffset(2026, 2, 1, 8, 0, 0, TimeSpan.Zero),
                },
                new TrackingPoint
                {
                    VmId = "a", DiskIndex = 0, Consumer = TrackingConsumer.ForReplication("a"), Bitmap = "haven-rp-3", LayerId = "L0",
                    Mark = TrackingMark.OfCycle(17), Consistency = Consistency.CrashConsistent,
                    CreatedAt = new DateTimeOffset(2026, 2, 1, 9, 0, 0, TimeSpan.Zero), UntrustedReason = "disk 0 was changed outside Haven while the VM was off",
                },
            ], a);
            // A cycle that does not parse is no tracking: that replication resynchronizes instead of trusting it.
            Assert.Empty(store.ListTrackingPoints("b"));

            var cycle = PlanJson.Read<BackupPlan>(store.FindOperation("op1")!.Payload);
            Assert.Equal(TrackingConsumer.ForReplication("a"), cycle.Consumer);
            Assert.Equal([4711], cycle.QemuNbdPids);
            Assert.Equal([0], cycle.StampsHeld);
            var backup = PlanJson.Read<BackupPlan>(store.FindOperation("op2")!.Payload);
            Assert.Equal(TrackingConsumer.ForBackup("repo1"), backup.Consumer);
            Assert.True(backup.Freezing);
        }
        using (var c = new SqliteConnection($"Data Source={db};Pooling=False"))
        {
            c.Open();
            using var cmd = c.CreateCommand();
            // The cycle is an integer column, the backup id empty for it; the old table is gone.
            cmd.CommandText = """
                SELECT (SELECT user_version FROM pragma_user_version),
                  (SELECT COUNT(*) FROM sqlite_master WHERE name = 'reference_points'),
                  (SELECT typeof(cycle) || ',' || typeof(backup_id) || ',' || consumer FROM tracking_points WHERE bitmap = 'haven-rp-3')
                """;
            using var r = cmd.ExecuteReader();
            r.Read();
            Assert.Equal((8L, 0L, "integer,null,replication:a"), (r.GetInt64(0), r.GetInt64(1), r.GetString(2)));
        }
    }

    [Fact]
    public void A_consumer_round_trips_through_its_stored_form_and_refuses_anything_else()
    {
        foreach (var c in new[] { TrackingConsumer.ForBackup("3f2a"), TrackingConsumer.ForReplication("vm:with:colons") })
            Assert.Equal(c, TrackingConsumer.Parse(c.ToString()));
        Assert.Equal("backup:3f2a", TrackingConsumer.ForBackup("3f2a").ToString());
        Assert.Throws<InvalidDataException>(() => TrackingConsumer.Parse("replica:vm1"));
    }
}
