using Haven.Host.State;
using Xunit;

namespace Haven.Host.Tests;

public sealed class VmAutostartSchemaTests
{
    [Fact]
    public void A_schema_5_database_gets_the_autostart_flag_off_for_its_VMs()
    {
        using var dir = new Haven.TestSupport.TempDir();
        var db = dir.File("haven.db");
        OldDatabase.Create(db, 5, OldDatabase.VmRow("a", "web", vcpus: 2, memoryMiB: 512));
        using (var store = new HostStore(db))
        {
            var vm = store.FindVm("a")!;
            Assert.Equal(("web", 2, 512, false), (vm.Name, vm.Vcpus, vm.MemoryMiB, vm.Autostart));
            store.Write(w => w.SetAutostart("a", true));
            Assert.True(store.FindVmByName("web")!.Autostart);
        }
        Assert.Equal(8L, OldDatabase.VersionOf(db));
    }
}
