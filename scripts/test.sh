#!/usr/bin/env bash
# The whole test suite: installs what it needs, builds the test guests (busybox and Debian), runs every test project
# (fast unit tests first, then real-QEMU, guest and crash tests). Ends with "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
HAVEN_READY_TO_RUN=0 bash scripts/install.sh || exit 1
bash scripts/build-test-guest.sh >/dev/null || exit 1
# The Debian guest needs root to build (debootstrap, chroot): about 2 minutes the first time, then cached.
sudo_cmd=(); [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo HOME="$HOME")
"${sudo_cmd[@]}" bash scripts/build-debian-guest.sh >/dev/null || exit 1
dotnet build Haven.slnx -v quiet -nologo -clp:ErrorsOnly || exit 1

# One throwaway Ceph RGW for the whole run (S3 tests); each test project would otherwise start its own.
ceph_dir=$(mktemp -d /tmp/haven-test-ceph.XXXXXX)
trap 'bash scripts/ceph-stop.sh "$ceph_dir" >/dev/null 2>&1; rm -rf "$ceph_dir"' EXIT
if timeout 150 env RGW_PORT=17480 MON_PORT=17400 bash scripts/ceph-start.sh "$ceph_dir" >&2; then
  # shellcheck disable=SC1091
  . "$ceph_dir/env"
  export HAVEN_TEST_S3_ENDPOINT=$S3_ENDPOINT HAVEN_TEST_S3_ACCESS_KEY=$S3_ACCESS_KEY HAVEN_TEST_S3_SECRET_KEY=$S3_SECRET_KEY HAVEN_TEST_CEPH_DIR=$ceph_dir
else
  echo "test: Ceph RGW did not start; the S3 tests will try to start their own" >&2
fi

passed=0; failed=0; status=0
for project in tests/Haven.Cli.Tests tests/Haven.Replication.Tests tests/Haven.Storage.Tests tests/Haven.Repository.Tests tests/Haven.Nbd.Tests tests/Haven.Qemu.Tests tests/Haven.Host.Tests tests/Haven.EndToEnd.Tests; do
  [ -d "$project" ] || continue
  echo "== $project"
  log=$(mktemp)
  dotnet test --project "$project" --no-build 2>&1 | tee "$log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  p=$(sed -n 's/^ *succeeded: *\([0-9]*\).*/\1/p' "$log" | tail -1); f=$(sed -n 's/^ *failed: *\([0-9]*\).*/\1/p' "$log" | tail -1)
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
  rm -f "$log"
done
echo "Tests: $passed passed, $failed failed"
exit $status
