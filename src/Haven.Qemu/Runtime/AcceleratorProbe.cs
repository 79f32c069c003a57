using System.Diagnostics;

namespace Haven.Qemu.Runtime;

public enum AcceleratorSetting { Auto, Kvm, Tcg }

/// <summary>
/// Decides between KVM and TCG. Nested or broken KVM is common on cloud machines: /dev/kvm exists
/// yet QEMU aborts with -cpu host. So auto starts a throw-away QEMU with KVM and -cpu host and
/// takes KVM only when that process is still alive after a moment. KVM provided by the kvm_pvm module
/// (PVM, software virtualization for nested clouds) passes that probe but runs only PVM-enabled guest
/// kernels: a stock Linux guest stops at its first long-mode instructions. Auto treats it as no KVM.
/// </summary>
public static class AcceleratorProbe
{
    public static async Task<Accelerator> ResolveAsync(AcceleratorSetting setting, CancellationToken ct = default)
    {
        switch (setting)
        {
            case AcceleratorSetting.Kvm: return Accelerator.Kvm;
            case AcceleratorSetting.Tcg: return Accelerator.Tcg;
        }
        if (!File.Exists("/dev/kvm") || Directory.Exists("/sys/module/kvm_pvm")) return Accelerator.Tcg;
        var psi = new ProcessStartInfo(QemuCommandLine.Binary)
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
            UseShellExecute = false,
        };
        foreach (var arg in new[] { "-accel", "kvm", "-cpu", "host", "-machine", "q35", "-nodefaults", "-display", "none", "-m", "32", "-monitor", "none", "-serial", "none" })
            psi.ArgumentList.Add(arg);
        using var p = Process.Start(psi)!;
        try
        {
            using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
            cts.CancelAfter(TimeSpan.FromSeconds(1.5));
            await p.WaitForExitAsync(cts.Token);
            return Accelerator.Tcg; // exited early: KVM not usable
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            return Accelerator.Kvm;
        }
        finally
        {
            if (!p.HasExited) { p.Kill(); await p.WaitForExitAsync(CancellationToken.None); }
        }
    }
}
