#!/usr/bin/env bash
# Haven vs restic vs borgbackup on one VM disk: full backup, 1% of blocks changed, incremental, restore.
# Prints a markdown report (also saved to <dir>/report.md). bench/README.md explains the method.
#
#   bash bench/backup-vs-peers.sh [--size 2G] [--dir /tmp/haven-bench] [--warm] [--keep] [--cold-daemon] [--seed N] [--churn random|constant]
#
# Run as root for honest cold-cache numbers (the page cache is dropped before every timed phase).
# --warm keeps the page cache; --cold-daemon skips havend's JIT warm-up rounds; --keep keeps the images and repositories.
# --churn constant rewrites changed blocks with one byte each (compresses to nothing) instead of random bytes.
# Needs about 5x --size of free space in --dir while it runs; big files are deleted at the end unless --keep.
set -euo pipefail
cd "$(dirname "$0")/.."

size=2G
dir=/tmp/haven-bench
extra=()
while (($#)); do
  case "$1" in
    --size) size="$2"; shift 2 ;;
    --dir) dir="$2"; shift 2 ;;
    --seed) extra+=(--seed "$2"); shift 2 ;;
    --churn) extra+=(--churn "$2"); shift 2 ;;
    --warm|--keep|--cold-daemon) extra+=("$1"); shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "backup-vs-peers: unknown argument $1" >&2; exit 2 ;;
  esac
done
command_line="bench/backup-vs-peers.sh --size $size --dir $dir${extra[*]:+ ${extra[*]}}"

# Haven itself (Debian packages + Release build of the solution).
bash scripts/install.sh

# The peers and GNU time.
packages=(restic borgbackup time zstd)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "backup-vs-peers: apt-get install ${missing[*]}" >&2
  sudo_cmd=(); [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[ "$(id -u)" -eq 0 ] || echo "backup-vs-peers: not root: the page cache cannot be dropped, every phase will run warm" >&2

# install.sh built the solution in Release (the benchmark project included); build it again only if it is missing.
bench=bench/Haven.Bench/bin/Release/net10.0/Haven.Bench.dll
[ -f "$bench" ] || dotnet build bench/Haven.Bench/Haven.Bench.csproj -c Release -v quiet -nologo -clp:ErrorsOnly >&2

mkdir -p "$(dirname "$dir")"
dotnet "$bench" --size "$size" --dir "$dir" --havend src/Haven.Daemon/bin/Release/net10.0/havend.dll \
  --command "$command_line" "${extra[@]}"
