#!/usr/bin/env bash
# The main job on embedded defaults: installs and builds Haven, starts a host daemon with its own data
# folder, creates a small VM from the test guest, takes checkpoints, applies one and shows what happened.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
bash scripts/install.sh
guest=$(bash scripts/build-test-guest.sh)

data=${HAVEN_HOME:-$repo/.haven}
mkdir -p "$data"
bin=$repo/src/Haven.Daemon/bin/Release/net10.0
cli=$repo/src/Haven.Cli/bin/Release/net10.0
haven() { dotnet "$cli/haven.dll" --host "$data" "$@"; }

echo "== starting havend (data folder $data)"
dotnet "$bin/havend.dll" --data "$data" >"$data/havend.log" 2>&1 &
daemon=$!
trap 'haven vm stop demo --force >/dev/null 2>&1 || true; kill $daemon 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q "havend: listening" "$data/havend.log" 2>/dev/null && break; sleep 0.2; done
head -1 "$data/havend.log"

haven vm remove demo >/dev/null 2>&1 || true
echo "== creating VM 'demo' (test guest: Linux + qemu-ga, 64 MiB ext4 data disk)"
# auto: KVM where it can run the guest, else TCG (see docs/architecture.md).
haven vm create demo --kernel "$guest/vmlinux" --initrd "$guest/initrd.gz" --append "$(cat "$guest/append.txt")" \
  --disk "$guest/data.qcow2" --memory 256 --accel "${HAVEN_ACCEL:-auto}"
haven vm start demo
id=$(haven vm show demo --json | sed -n 's/.*"id": *"\([0-9a-f]*\)".*/\1/p' | head -1)
echo "== waiting for the guest agent"
for _ in $(seq 300); do grep -q GUEST-READY "$data/run/$id.log" 2>/dev/null && break; sleep 0.2; done
sleep 1

echo "== production checkpoint (guest file systems frozen through qemu-ga)"
haven checkpoint create demo --name first
echo "== second checkpoint"
haven checkpoint create demo --name second
haven checkpoint list demo
echo "== applying 'first' after checkpointing the current state"
haven checkpoint apply demo first --create-checkpoint-first --new-checkpoint-name before-apply
haven checkpoint list demo
echo "== removing 'second' (its layer is merged; other checkpoints keep their data)"
haven checkpoint remove demo second
haven vm show demo
echo "== exporting 'first' as VHDX"
rm -f "$data/first.vhdx"
haven checkpoint export demo first "$data/first.vhdx" --format vhdx
qemu-img info "$data/first.vhdx" | head -3
echo "== done; data folder: $data (daemon stopped, VM stopped)"
