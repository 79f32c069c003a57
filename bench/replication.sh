#!/usr/bin/env bash
# Haven replication between two havend hosts on loopback over mutual TLS, through a counting TCP relay: bytes on the
# wire per cycle against bytes changed (with and without compression), cycle latency for a large change on a large
# sparse disk, and how many small VMs one replica server sustains at a 30 s frequency. Prints a markdown report
# (also saved to <dir>/report.md). bench/README.md explains the method.
#
#   bash bench/replication.sh [--dir /tmp/haven-bench-replication] [--disk 8G] [--changes 1M,16M,64M] [--kinds random,text]
#       [--latency-cycles 3] [--scale-vms 1,2,4,8] [--scale-disk 128M] [--scale-change 4M] [--scale-cycles 2] [--frequency 30]
#       [--scale-compression] [--scale-all] [--seed N] [--keep] [--skip-install]
#
# --skip-install: do not run scripts/install.sh (packages and a Release build of the solution) first.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=/tmp/haven-bench-replication
install=1
extra=()
while (($#)); do
  case "$1" in
    --dir) dir="$2"; shift 2 ;;
    --disk|--changes|--kinds|--latency-cycles|--scale-vms|--scale-disk|--scale-change|--scale-cycles|--frequency|--seed) extra+=("$1" "$2"); shift 2 ;;
    --scale-compression|--scale-all|--keep) extra+=("$1"); shift ;;
    --skip-install) install=0; shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "replication: unknown argument $1" >&2; exit 2 ;;
  esac
done
command_line="bench/replication.sh --dir $dir${extra[*]:+ ${extra[*]}}"

# Haven itself (Debian packages + Release build of the solution).
((install)) && bash scripts/install.sh

# The benchmark project references havend (not its code), so building it builds havend in Release too.
bench=bench/Haven.Bench.Replication/bin/Release/net10.0/Haven.Bench.Replication.dll
havend=src/Haven.Daemon/bin/Release/net10.0/havend.dll
if [ ! -f "$bench" ] || [ ! -f "$havend" ]; then
  dotnet build bench/Haven.Bench.Replication/Haven.Bench.Replication.csproj -c Release -v quiet -nologo -clp:ErrorsOnly >&2
fi

mkdir -p "$(dirname "$dir")"
dotnet "$bench" --dir "$dir" --havend "$havend" --command "$command_line" "${extra[@]}"
