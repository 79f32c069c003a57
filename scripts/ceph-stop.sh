#!/usr/bin/env bash
# Stops the cluster started by scripts/ceph-start.sh DIR, by the PIDs it recorded (never by name: other
# clusters may be running), then deletes DIR (KEEP=1 keeps it, e.g. to read the logs).
set -uo pipefail
[ $# -ge 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
D=$1
for p in rgw osd mon; do
  f="$D/run/$p.pid"; [ -f "$f" ] || continue
  pid=$(cat "$f"); [ -n "$pid" ] || continue
  kill -TERM "$pid" 2>/dev/null || continue
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
done
[ "${KEEP:-0}" = 1 ] || rm -rf "$D"
exit 0
