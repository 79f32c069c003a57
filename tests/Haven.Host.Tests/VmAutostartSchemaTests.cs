using Haven.Host.State;
using Microsoft.Data.Sqlite;
using Xunit;

namespace Haven.Host.Tests;

public sealed class VmAutostartSchemaTests
{
    [Fact]
    public void A_schema_5_database_gets_the_autostart_flag_off_for_its_VMs()
    {
        using var dir = new Haven.TestSupport.TempDir();
        var db = dir.File("haven.db");
        using (var c = new SqliteConnection($"Data Source={db};Pooling=False"))
        {
            c.Open();
            using var cmd = c.CreateCommand();
            // The v5 vms table (the one this migration alters) and the tables the other steps read.
            cmd.CommandText = """
                CREATE TABLE operations (id TEXT PRIMARY KEY, vm_id TEXT NOT NULL, kind TEXT NOT NULL, payload TEXT NOT NULL, started_at TEXT NOT NULL);
                CREATE TABLE reference_points (
                  vm_id TEXT NOT NULL, disk_idx INTEGER NOT NULL, repo_id TEXT NOT NULL, bitmap TEXT NOT NULL, layer_id TEXT NOT NULL, backup_id TEXT NOT NULL,
                  consistency TEXT NOT NULL, created_at TEXT NOT NULL, file_stamp TEXT, untrusted_reason TEXT);
                CREATE TABLE vms (
                  id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, vcpus INTEGER NOT NULL, memory_mib INTEGER NOT NULL,
                  kernel TEXT, initrd TEXT, append TEXT, guest_agent INTEGER NOT NULL, network TEXT NOT NULL,
                  accelerator TEXT NOT NULL, checkpoint_type TEXT NOT NULL, current_checkpoint_id TEXT, created_at TEXT NOT NULL);
                CREATE TABLE checkpoints (id TEXT PRIMARY KEY, vm_id TEXT NOT NULL);
                INSERT INTO vms VALUES ('a', 'web', 2, 512, NULL, NULL, NULL, 1, 'none', 'auto', 'Production', NULL, '2026-01-01T00:00:00.0000000+00:00');
                PRAGMA user_version = 5;
                """;
            cmd.ExecuteNonQuery();
        }
        using (var store = new HostStore(db))
        {
            var vm = store.FindVm("a")!;
            Assert.Equal(("web", 2, 512, false), (vm.Name, vm.Vcpus, vm.MemoryMiB, vm.Autostart));
            store.Write(w => w.SetAutostart("a", true));
            Assert.True(store.FindVmByName("web")!.Autostart);
        }
        using (var c = new SqliteConnection($"Data Source={db};Pooling=False"))
        {
            c.Open();
            using var cmd = c.CreateCommand();
            cmd.CommandText = "SELECT user_version FROM pragma_user_version";
            Assert.Equal(8L, cmd.ExecuteScalar());
        }
    }
}
