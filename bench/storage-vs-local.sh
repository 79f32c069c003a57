#!/usr/bin/env bash
# Haven's backup engine into an S3 repository on Ceph RGW and into a local-folder repository, on the same disk:
# full backup, 1% of blocks changed, incremental, incremental with nothing changed, restore; plus the S3 requests
# of every phase. Prints a markdown report (also saved to <dir>/report.md). bench/README.md explains the method.
#
#   bash bench/storage-vs-local.sh [--size 1G] [--dir /tmp/haven-bench-storage] [--seed N] [--warm] [--keep] [--no-warmup]
#       [--s3-endpoint URL --s3-access-key K --s3-secret-key S [--s3-region R] [--bucket NAME]] [--skip-install]
#
# Without --s3-endpoint it starts its own Ceph (scripts/ceph-start.sh: one memstore OSD + radosgw, on free ports)
# and stops it at the end. Run as root for cold-cache numbers (the page cache is dropped before every timed phase).
# --skip-install: do not run scripts/install.sh (packages and a Release build of the solution) first.
set -euo pipefail
cd "$(dirname "$0")/.."

size=1G
dir=/tmp/haven-bench-storage
install=1
extra=()
while (($#)); do
  case "$1" in
    --size) size="$2"; shift 2 ;;
    --dir) dir="$2"; shift 2 ;;
    --seed|--s3-endpoint|--s3-access-key|--s3-region|--bucket) extra+=("$1" "$2"); shift 2 ;;
    --s3-secret-key) secret=("$1" "$2"); shift 2 ;;
    --warm|--keep|--no-warmup) extra+=("$1"); shift ;;
    --skip-install) install=0; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "storage-vs-local: unknown argument $1" >&2; exit 2 ;;
  esac
done
# The command as the report shows it: never the secret key.
command_line="bench/storage-vs-local.sh --size $size --dir $dir${extra[*]:+ ${extra[*]}}${secret:+ --s3-secret-key ***}"

# Haven itself (Debian packages incl. Ceph + Release build of the solution).
[ "$install" = 0 ] || bash scripts/install.sh
[ "$(id -u)" -eq 0 ] || echo "storage-vs-local: not root: the page cache cannot be dropped, every phase will run warm" >&2

# install.sh built the solution in Release (the benchmark project included); build it again only if it is missing.
bench=bench/Haven.Bench.Storage/bin/Release/net10.0/Haven.Bench.Storage.dll
[ -f "$bench" ] || dotnet build bench/Haven.Bench.Storage/Haven.Bench.Storage.csproj -c Release -v quiet -nologo -clp:ErrorsOnly >&2

mkdir -p "$(dirname "$dir")"
dotnet "$bench" --size "$size" --dir "$dir" --command "$command_line" "${extra[@]}" ${secret:+"${secret[@]}"}
