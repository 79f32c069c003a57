#!/usr/bin/env bash
# Installs havend as a system service the Debian way: the programs in /opt/haven, `haven` on PATH through
# /usr/local/bin/haven, the data folder /var/lib/haven (0700), and two units in /etc/systemd/system:
#   havend.service        the daemon (KillMode=process: restarting it leaves the VMs running)
#   haven-guests.service  on host stop, `haven host shutdown-vms` (ACPI shutdown, forced off after the timeout)
# Then `systemctl enable --now` both when systemd runs; otherwise it says what it wrote.
#
# Environment (for tests and packagers):
#   HAVEN_SERVICE_ROOT=DIR       install under DIR instead of / (nothing is enabled then)
#   HAVEN_SERVICE_PUBLISH=0      do not build: use what is already in DIR/opt/haven
#   HAVEN_SHUTDOWN_TIMEOUT=N     seconds the guests get at host stop (default 120)
set -euo pipefail

ROOT=${HAVEN_SERVICE_ROOT:-}
PREFIX=/opt/haven
DATA=/var/lib/haven
BIN=/usr/local/bin
UNITS=/etc/systemd/system
TIMEOUT=${HAVEN_SHUTDOWN_TIMEOUT:-120}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() { echo "install-service: error: $*" >&2; exit 1; }
[[ "$TIMEOUT" =~ ^[0-9]+$ ]] && [ "$TIMEOUT" -le 3600 ] || die "HAVEN_SHUTDOWN_TIMEOUT must be 0..3600 seconds, not '$TIMEOUT'"
if [ -n "$ROOT" ]; then
    [ -d "$ROOT" ] || die "HAVEN_SERVICE_ROOT $ROOT is not a folder"
    ROOT=$(cd "$ROOT" && pwd)
elif [ "$(id -u)" != 0 ]; then
    die "run as root (havend runs as root: it starts QEMU and owns /var/lib/haven)"
fi
DOTNET=$(command -v dotnet || true)
[ -n "$DOTNET" ] || die "dotnet is not on PATH (install the .NET 10 SDK or runtime first)"
DOTNET=$(readlink -f "$DOTNET")

if [ "${HAVEN_SERVICE_PUBLISH:-1}" != 0 ]; then
    echo "install-service: publishing havend and haven to $ROOT$PREFIX"
    dotnet publish "$REPO/src/Haven.Daemon" -c Release -o "$ROOT$PREFIX/havend" -v quiet -nologo >/dev/null
    dotnet publish "$REPO/src/Haven.Cli" -c Release -o "$ROOT$PREFIX/cli" -v quiet -nologo >/dev/null
fi
[ -f "$ROOT$PREFIX/havend/havend.dll" ] && [ -f "$ROOT$PREFIX/cli/haven.dll" ] || die "no havend.dll/haven.dll in $ROOT$PREFIX"

install -d -m 0700 "$ROOT$DATA"
chmod 0700 "$ROOT$DATA"
install -d -m 0755 "$ROOT$BIN" "$ROOT$UNITS"
cat > "$ROOT$BIN/haven.tmp" <<WRAPPER
#!/bin/sh
# haven, the Haven CLI (installed by scripts/install-service.sh). Without --host/HAVEN_HOST/HAVEN_HOME it talks to
# a per-user havend if one runs, else to the system one in $DATA.
exec $DOTNET $PREFIX/cli/haven.dll "\$@"
WRAPPER
chmod 0755 "$ROOT$BIN/haven.tmp"
mv -f "$ROOT$BIN/haven.tmp" "$ROOT$BIN/haven"

for unit in havend.service haven-guests.service; do
    sed -e "s|@DOTNET@|$DOTNET|g" -e "s|@PREFIX@|$PREFIX|g" -e "s|@DATA@|$DATA|g" -e "s|@BIN@|$BIN|g" \
        -e "s|@TIMEOUT@|$TIMEOUT|g" -e "s|@STOPSEC@|$((TIMEOUT + 60))|g" \
        "$REPO/scripts/systemd/$unit" > "$ROOT$UNITS/$unit.tmp"
    chmod 0644 "$ROOT$UNITS/$unit.tmp"
    mv -f "$ROOT$UNITS/$unit.tmp" "$ROOT$UNITS/$unit"
done

if [ -z "$ROOT" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable --now havend.service haven-guests.service
    echo "install-service: havend.service and haven-guests.service enabled and started; data in $DATA"
else
    echo "install-service: wrote $ROOT$UNITS/havend.service and $ROOT$UNITS/haven-guests.service, $ROOT$BIN/haven, $ROOT$DATA"
    echo "install-service: systemd is not running here (or HAVEN_SERVICE_ROOT is set): nothing enabled; start havend with"
    echo "  $DOTNET $PREFIX/havend/havend.dll --data $DATA"
fi
