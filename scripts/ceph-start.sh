#!/usr/bin/env bash
# Starts a throwaway one-node Ceph (Pacific 16.2) cluster + radosgw S3 endpoint on 127.0.0.1, for tests.
# Usage: scripts/ceph-start.sh DIR
#   Env: RGW_PORT (default 7480), MON_PORT (default 40000; v1 = MON_PORT+1, daemons bind MON_PORT+10..+99),
#        ACCESS_KEY / SECRET_KEY (S3 user's keys), STORE (memstore | bluestore), WAIT_SECONDS (default 90).
# Writes DIR/env (shell syntax): S3_ENDPOINT, S3_ACCESS_KEY, S3_SECRET_KEY, RGW_PORT, MON_PORT, MON_PID,
# OSD_PID, RGW_PID, CEPH_CONF. Stop with scripts/ceph-stop.sh DIR (by PID only).
# Monitor + one OSD (memstore: everything in RAM, ~150 MiB), no manager. Not for real data.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
D=$1
MON_PORT=${MON_PORT:-40000}
RGW_PORT=${RGW_PORT:-7480}
STORE=${STORE:-memstore}
AK=${ACCESS_KEY:-TESTACCESSKEY0000001}
SK=${SECRET_KEY:-testsecretkey000000000000000000000000001}
WAIT=${WAIT_SECONDS:-90}
for tool in ceph-mon ceph-osd radosgw radosgw-admin ceph ceph-authtool monmaptool curl; do
  command -v "$tool" >/dev/null || { echo "ceph-start: $tool not found (apt-get install ceph-mon ceph-osd radosgw ceph-common curl)" >&2; exit 1; }
done
T0=$(date +%s.%N)
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
# fail WHAT LOG...: reports, shows the logs' tails, stops what was started.
fail() {
  local what=$1; shift
  echo "ceph-start: $what after $(elapsed)s" >&2
  for f in "$@"; do [ -f "$f" ] && { echo "--- $f" >&2; tail -20 "$f" >&2; }; done
  KEEP=1 "$(dirname "$0")/ceph-stop.sh" "$D" >/dev/null 2>&1 || true
  exit 1
}
# wait_for WHAT PIDFILE LOG CMD...: polls CMD until it succeeds; fails if the daemon dies or after $WAIT s.
wait_for() {
  local what=$1 pidfile=$2 log=$3; shift 3
  local deadline=$(( $(date +%s) + WAIT ))
  until "$@" >/dev/null 2>&1; do
    if [ -n "$pidfile" ] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then fail "$what died" "$log"; fi
    [ "$(date +%s)" -lt "$deadline" ] || fail "timed out waiting for $what" "$log"
    sleep 0.3
  done
}

rm -rf "$D"; mkdir -p "$D"/{mon.a,osd.0,run,log}
FSID=$(cat /proc/sys/kernel/random/uuid)
OSD_UUID=$(cat /proc/sys/kernel/random/uuid)
C="$D/ceph.conf"
cat > "$C" <<CONF
[global]
fsid = $FSID
mon host = [v2:127.0.0.1:$MON_PORT,v1:127.0.0.1:$((MON_PORT+1))]
public addr = 127.0.0.1
public network = 127.0.0.0/8
ms bind ipv6 = false
ms bind port min = $((MON_PORT+10))
ms bind port max = $((MON_PORT+99))
run dir = $D/run
admin socket = $D/run/\$name.asok
pid file = $D/run/\$name.pid
log file = $D/log/\$name.log
keyring = $D/keyring
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon max pg per osd = 1000
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
osd objectstore = $STORE
memstore device bytes = 4294967296
bluestore block path = $D/osd.0/block.file
bluestore block create = true
bluestore block size = 21474836480
bluestore fsck on mount = false
osd data = $D/\$name
mon data = $D/\$name
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT
rgw dns name = localhost
log file = $D/log/rgw.a.log
CONF
K="$D/keyring"
ceph-authtool --create-keyring "$K" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool "$K" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
ceph-authtool "$K" --gen-key -n osd.0 --cap mon 'allow profile osd' --cap mgr 'allow profile osd' --cap osd 'allow *' >/dev/null
ceph-authtool "$K" --gen-key -n client.rgw.a --cap mon 'allow rw' --cap osd 'allow rwx' --cap mgr 'allow rw' >/dev/null
monmaptool --create --fsid "$FSID" --addv a "[v2:127.0.0.1:$MON_PORT,v1:127.0.0.1:$((MON_PORT+1))]" "$D/monmap" >/dev/null
ceph-mon -c "$C" --mkfs -i a --monmap "$D/monmap" --keyring "$K" > "$D/log/mon.mkfs.out" 2>&1 || fail "ceph-mon --mkfs failed" "$D/log/mon.mkfs.out"
ceph-mon -c "$C" -i a -f > "$D/log/mon.a.out" 2>&1 & echo $! > "$D/run/mon.pid"
wait_for "the monitor" "$D/run/mon.pid" "$D/log/mon.a.out" timeout 10 ceph -c "$C" --connect-timeout 2 mon stat
echo "ceph-start: mon up $(elapsed)s" >&2
timeout 30 ceph -c "$C" osd new "$OSD_UUID" 0 >/dev/null || fail "ceph osd new failed" "$D/log/mon.a.log"
timeout 60 ceph-osd -c "$C" -i 0 --mkfs --osd-uuid "$OSD_UUID" > "$D/log/osd.mkfs.out" 2>&1 || fail "ceph-osd --mkfs failed" "$D/log/osd.mkfs.out"
ceph-osd -c "$C" -i 0 -f > "$D/log/osd.0.out" 2>&1 & echo $! > "$D/run/osd.pid"
osd_up() { timeout 10 ceph -c "$C" --connect-timeout 2 osd dump 2>/dev/null | grep -q '^osd.0 up'; }
wait_for "the OSD" "$D/run/osd.pid" "$D/log/osd.0.out" osd_up
echo "ceph-start: osd up $(elapsed)s" >&2
radosgw -c "$C" -n client.rgw.a -f > "$D/log/rgw.a.out" 2>&1 & echo $! > "$D/run/rgw.pid"
wait_for "radosgw" "$D/run/rgw.pid" "$D/log/rgw.a.log" curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$RGW_PORT/"
echo "ceph-start: rgw up $(elapsed)s" >&2
timeout 60 radosgw-admin -c "$C" user create --uid=test --display-name=test --access-key="$AK" --secret-key="$SK" > "$D/log/user.out" 2>&1 \
  || fail "radosgw-admin user create failed" "$D/log/user.out"
cat > "$D/env" <<ENV
S3_ENDPOINT=http://127.0.0.1:$RGW_PORT
S3_ACCESS_KEY=$AK
S3_SECRET_KEY=$SK
RGW_PORT=$RGW_PORT
MON_PORT=$MON_PORT
MON_PID=$(cat "$D/run/mon.pid")
OSD_PID=$(cat "$D/run/osd.pid")
RGW_PID=$(cat "$D/run/rgw.pid")
CEPH_CONF=$C
ENV
echo "ceph-start: ready $(elapsed)s endpoint=http://127.0.0.1:$RGW_PORT" >&2
