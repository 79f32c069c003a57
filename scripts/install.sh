#!/usr/bin/env bash
# Installs what Haven needs on Debian 12 and builds it. Safe to run again: installs only what is missing.
# iproute2: havend creates the tap devices of bridge NICs with ip; the tests make network namespaces with it.
set -euo pipefail
cd "$(dirname "$0")/.."

# systemd: systemd-analyze verifies the units of scripts/install-service.sh (InstallServiceTests).
packages=(qemu-system-x86 qemu-utils qemu-guest-agent iproute2 iputils-ping libnbd-bin busybox-static e2fsprogs cpio kmod debootstrap grub-efi-amd64-bin mtools dosfstools fdisk ovmf ceph-mon ceph-osd radosgw ceph-common systemd)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install: apt-get install ${missing[*]}" >&2
  sudo_cmd=(); [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v dotnet >/dev/null; then
  echo "install: error: the .NET 10 SDK is needed (dotnet not on PATH); see https://learn.microsoft.com/dotnet/core/install/linux-debian" >&2
  exit 1
fi
echo "install: building" >&2
dotnet build Haven.slnx -c Release -v quiet -nologo -clp:ErrorsOnly >&2

# havend and the CLI precompiled (ReadyToRun) in place of the plain build, at the same paths: a freshly started
# daemon's first backup and every CLI command otherwise wait for the JIT (docs/performance.md, "Cold start").
# ReadyToRun needs `dotnet publish`; HAVEN_READY_TO_RUN=0 skips it (scripts/test.sh: the tests run Debug builds).
if [ "${HAVEN_READY_TO_RUN:-1}" != 0 ]; then
  echo "install: ReadyToRun havend and haven" >&2
  for app in src/Haven.Daemon src/Haven.Cli; do
    dotnet publish "$app" -c Release -r linux-x64 --self-contained false -p:PublishReadyToRun=true \
      -o "$app/bin/Release/net10.0" -v quiet -nologo -clp:ErrorsOnly >&2
  done
fi
