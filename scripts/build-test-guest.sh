#!/bin/bash
# build-test-guest.sh [CACHE_DIR]
#
# Builds the tiny Linux test guest used by Haven's integration tests (production checkpoints with
# fsfreeze through qemu-ga, failover): a Debian kernel, an initramfs with busybox + kernel modules +
# qemu-ga, and a small ext4 data disk. See docs/test-guest.md.
#
# CACHE_DIR defaults to ${HAVEN_GUEST_CACHE:-$HOME/.cache/haven/test-guest}. When it already holds a
# finished build of this same recipe ("ready" file), nothing is done. The build happens in a temp dir
# beside CACHE_DIR that is renamed into place at the end, so a half-built cache is never seen.
#
# Output (stdout): the absolute path of CACHE_DIR, and nothing else. Progress goes to stderr.
# Files in CACHE_DIR: vmlinuz, vmlinux, initrd.gz, data.qcow2, append.txt, build-info.txt, ready (last).
# vmlinux is the same kernel uncompressed (an ELF with a PVH note): "-kernel vmlinux" skips the
# in-guest decompressor, which under TCG takes ~3.5 s of a ~7.5 s boot.
# Exit status: 0 ok, 1 failure (one "build-test-guest: error: ..." line on stderr), 2 bad usage.
#
# Environment:
#   HAVEN_GUEST_CACHE       default cache folder
#   HAVEN_GUEST_KERNEL_PKG  Debian kernel package to use (default: what linux-image-amd64 depends on)
set -euo pipefail
umask 022

PROG=build-test-guest
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
GUEST_SRC=$HERE/guest
OUTPUTS=(vmlinuz vmlinux initrd.gz data.qcow2 append.txt build-info.txt)
APPEND="console=ttyS0 panic=-1 quiet"
DATA_SIZE=64M

# Usage, cache folder, and the cache contract (reuse, lock, temp dir, publish): guest-cache.sh.
. "$HERE/guest-cache.sh"
HOME=${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}
cache_args 2,20 "${HAVEN_GUEST_CACHE:-$HOME/.cache/haven/test-guest}" "$@"

# The recipe's fingerprint: a cache built by another version of this script (or of scripts/guest/*)
# is rebuilt. Cheap enough for the fast path.
RECIPE=$(cat "${BASH_SOURCE[0]}" "$HERE/guest-cache.sh" "$GUEST_SRC/init" "$GUEST_SRC/shutdown" "$GUEST_SRC/modules.txt" \
    2>/dev/null | sha256sum | cut -c1-16) || die "cannot read the recipe files in $GUEST_SRC"
READY_LINE="haven-test-guest recipe=$RECIPE"

# ---- the cache: reuse it when ready; otherwise build under a lock in a temp dir (guest-cache.sh) ------
cache_begin

# ---- prerequisites --------------------------------------------------------------------------------
APT_UPDATED=
apt_update_once() {
    [ -z "$APT_UPDATED" ] || return 0
    APT_UPDATED=1
    [ "$(id -u)" = 0 ] || return 0 # apt-get download/apt-cache work as any user; update needs root
    log "apt-get update"
    run apt-get update || die "apt-get update failed"
}

STEP="checking prerequisites"
export PATH=$PATH:/usr/sbin:/sbin
missing=()
installed() { dpkg-query -W -f '${Status}' "$1" 2>/dev/null | grep -q ' installed$'; }
installed busybox-static || missing+=(busybox-static) # the dynamic "busybox" would need its libraries
command -v qemu-ga >/dev/null 2>&1 || [ -x /usr/sbin/qemu-ga ] || missing+=(qemu-guest-agent)
command -v mkfs.ext4 >/dev/null 2>&1 || [ -x /sbin/mkfs.ext4 ] || missing+=(e2fsprogs)
command -v cpio >/dev/null 2>&1 || missing+=(cpio)
command -v modinfo >/dev/null 2>&1 || [ -x /sbin/modinfo ] || missing+=(kmod)
command -v qemu-img >/dev/null 2>&1 || missing+=(qemu-utils)
for c in dpkg-deb apt-get apt-cache ldd gzip sha256sum flock; do
    command -v "$c" >/dev/null 2>&1 || die "'$c' not found (is this a Debian system?)"
done
apt_install() {
    [ "$(id -u)" = 0 ] || die "missing packages: $* (run as root, or: apt-get install $*)"
    log "installing $*"
    export DEBIAN_FRONTEND=noninteractive
    if ! run apt-get install -y --no-install-recommends "$@"; then
        apt_update_once
        run apt-get install -y --no-install-recommends "$@" || die "apt-get install $* failed"
    fi
}
[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
QGA_BIN=$(command -v qemu-ga) || die "qemu-ga not found after installing qemu-guest-agent"

# ---- kernel ---------------------------------------------------------------------------------------
STEP="downloading the kernel"
cd "$WORK"
kernel_pkg() {
    if [ -n "${HAVEN_GUEST_KERNEL_PKG:-}" ]; then echo "$HAVEN_GUEST_KERNEL_PKG"; return; fi
    apt-cache depends linux-image-amd64 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9].*-amd64$/ { print $2; exit }'
}
download() { run apt-get download -o APT::Sandbox::User=root "$1"; }
KPKG=$(kernel_pkg)
if [ -z "$KPKG" ] || ! download "$KPKG"; then
    apt_update_once # package lists missing or stale (the mirror moved on to a newer kernel ABI)
    KPKG=$(kernel_pkg)
    [ -n "$KPKG" ] || die "no linux-image-*-amd64 package found (apt-cache depends linux-image-amd64)"
    download "$KPKG" || die "apt-get download $KPKG failed"
fi
DEB=
for f in "$WORK/$KPKG"_*.deb; do [ -f "$f" ] && DEB=$f && break; done
[ -n "$DEB" ] || die "apt-get download $KPKG produced no .deb"
KVER_PKG=$(dpkg-deb -f "$DEB" Version)
log "kernel: $KPKG $KVER_PKG"

STEP="extracting the kernel"
# Only what we need (the whole package is ~400 MB unpacked). Debian 12 has ./lib/modules, later
# releases ./usr/lib/modules: the leading '*' takes both. tar exits 2 for patterns that match nothing
# (a module built into this kernel): the results are checked below instead.
mapfile -t MODS < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' "$GUEST_SRC/modules.txt")
[ ${#MODS[@]} -gt 0 ] || die "no modules listed in $GUEST_SRC/modules.txt"
patterns=('*boot/vmlinuz-*' '*boot/config-*' '*lib/modules/*/modules.builtin')
for m in "${MODS[@]}"; do patterns+=("*lib/modules/*/$m*"); done
mkdir -p kroot
set +e
dpkg-deb --fsys-tarfile "$DEB" | tar -x -C kroot --wildcards "${patterns[@]}" 2>>"$LOG"
st=("${PIPESTATUS[@]}")
set -e
[ "${st[0]}" = 0 ] || die "dpkg-deb --fsys-tarfile $DEB failed"
[ "${st[1]}" = 0 ] || [ "${st[1]}" = 2 ] || die "extracting $DEB failed"
rm -f "$DEB"

VMLINUZ=
for f in kroot/boot/vmlinuz-*; do [ -f "$f" ] && VMLINUZ=$f && break; done
[ -n "$VMLINUZ" ] || die "no boot/vmlinuz-* in $KPKG"
KVER=${VMLINUZ##*/vmlinuz-}
MODDIR=
for d in kroot/lib/modules/"$KVER" kroot/usr/lib/modules/"$KVER"; do [ -d "$d" ] && MODDIR=$d && break; done
[ -n "$MODDIR" ] || die "no lib/modules/$KVER in $KPKG"

# The uncompressed kernel, for PVH boot (QEMU boots an ELF kernel only through its PVH note).
STEP="extracting vmlinux"
grep -qx 'CONFIG_PVH=y' "kroot/boot/config-$KVER" 2>/dev/null || die "$KPKG has no CONFIG_PVH=y: vmlinux would not boot"
# The bzImage holds the compressed vmlinux after its setup code: try each compressor's magic.
extract_vmlinux() { # bzImage out
    local spec tool off
    for spec in 'xz:\xfd7zXZ\x00' 'zstd:\x28\xb5\x2f\xfd' 'gzip:\x1f\x8b\x08'; do
        tool=${spec%%:*}
        for off in $(LC_ALL=C grep -obUaP "${spec#*:}" "$1" | head -n 5 | cut -d: -f1); do
            command -v "$tool" >/dev/null || apt_install "$([ "$tool" = xz ] && echo xz-utils || echo "$tool")"
            case $tool in # trailing bytes after the stream make zstd/gzip complain: the ELF check decides
                xz) tail -c +$((off + 1)) "$1" | xz -dc --single-stream ;;
                zstd) tail -c +$((off + 1)) "$1" | zstd -qdc ;;
                gzip) tail -c +$((off + 1)) "$1" | gzip -dc ;;
            esac >"$2" 2>/dev/null || true
            [ "$(head -c 4 "$2" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ] && [ "$(stat -c %s "$2")" -gt 4000000 ] && return 0
        done
    done
    return 1
}
OUT=$WORK/out
mkdir -p "$OUT"
extract_vmlinux "$VMLINUZ" "$OUT/vmlinux" || die "cannot extract vmlinux from $VMLINUZ"

# ---- initramfs tree -------------------------------------------------------------------------------
STEP="assembling the initramfs"
R=$WORK/root
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,mnt,run,tmp,var,root,lib/modules}
ln -s ../run "$R/var/run"
chmod 1777 "$R/tmp"
ln -s /proc/mounts "$R/etc/mtab"
install -m 0755 "$(readlink -f /bin/busybox)" "$R/bin/busybox"
install -m 0755 "$GUEST_SRC/init" "$R/init"
install -m 0755 "$GUEST_SRC/shutdown" "$R/sbin/shutdown"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$R/etc/passwd"
printf 'root:x:0:\n' >"$R/etc/group"
printf 'NAME="Haven test guest"\nID=haven-test-guest\nPRETTY_NAME="Haven test guest (Debian kernel %s)"\nVERSION_ID=1\n' \
    "$KVER" >"$R/etc/os-release"

# Modules: decompressed (busybox insmod may not read .xz/.zst), loaded in list order.
: >"$R/lib/modules/load.order"
loaded=" "
for m in "${MODS[@]}"; do
    name=$(basename "$m" .ko)
    src=
    for f in "$MODDIR/$m" "$MODDIR/$m".xz "$MODDIR/$m".zst "$MODDIR/$m".gz; do [ -f "$f" ] && src=$f && break; done
    if [ -z "$src" ]; then
        if grep -qx "$m" "$MODDIR/modules.builtin" 2>/dev/null; then
            log "module $name is built into $KVER: skipped"
            loaded+="${name//-/_} "
            continue
        fi
        die "module $m not found in $KPKG"
    fi
    dst=$R/lib/modules/$name.ko
    case "$src" in
        *.ko) cp "$src" "$dst" ;;
        *.xz) command -v xz >/dev/null || apt_install xz-utils; xz -dc "$src" >"$dst" ;;
        *.zst) command -v zstd >/dev/null || apt_install zstd; zstd -qdc "$src" >"$dst" ;;
        *.gz) gzip -dc "$src" >"$dst" ;;
    esac
    for dep in $(modinfo -F depends "$dst" | tr ',' ' '); do
        case "$loaded" in *" ${dep//-/_} "*) ;; *) die "module $name needs $dep, which is not listed before it in $GUEST_SRC/modules.txt" ;; esac
    done
    loaded+="${name//-/_} "
    echo "$name.ko" >>"$R/lib/modules/load.order"
done

# qemu-ga and every library ldd reports, the dynamic loader included, at the same paths.
install -D -m 0755 "$QGA_BIN" "$R/usr/sbin/qemu-ga"
ldd "$QGA_BIN" >"$WORK/ldd.txt" 2>&1 || die "ldd $QGA_BIN failed: $(head -n1 "$WORK/ldd.txt")"
! grep -q 'not found' "$WORK/ldd.txt" || die "qemu-ga has missing libraries: $(grep 'not found' "$WORK/ldd.txt" | tr -s ' \t' ' ')"
while read -r lib; do
    install -D -m 0755 "$(readlink -f "$lib")" "$R$lib"
done < <(grep -o '/[^ ]*' "$WORK/ldd.txt" | sort -u)
grep -q 'ld-linux' "$WORK/ldd.txt" || die "ldd did not report the dynamic loader of qemu-ga"
if [ "$(id -u)" = 0 ]; then # proves the copied libraries are complete
    chroot "$R" /usr/sbin/qemu-ga --version >>"$LOG" 2>&1 ||
        die "qemu-ga does not start inside the initramfs tree (a library is missing?)"
fi

STEP="packing the initramfs"
(cd "$R" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | gzip -9n) >"$OUT/initrd.gz"
cp "$VMLINUZ" "$OUT/vmlinuz"

# ---- data disk ------------------------------------------------------------------------------------
STEP="making the data disk"
mkdir -p "$WORK/data"
printf 'hello from the Haven test guest data disk\n' >"$WORK/data/hello.txt"
MKFS=$(command -v mkfs.ext4)
run "$MKFS" -q -F -L havendata -d "$WORK/data" "$WORK/data.raw" "$DATA_SIZE" || die "mkfs.ext4 failed"
run qemu-img convert -f raw -O qcow2 "$WORK/data.raw" "$OUT/data.qcow2" || die "qemu-img convert failed"
rm -f "$WORK/data.raw"

# ---- metadata, then publish -----------------------------------------------------------------------
STEP="publishing"
echo "$APPEND" >"$OUT/append.txt"
{
    echo "kernel_package=$KPKG"
    echo "kernel_package_version=$KVER_PKG"
    echo "kernel_release=$KVER"
    echo "modules=$(tr '\n' ' ' <"$R/lib/modules/load.order")"
    echo "busybox=$(dpkg-query -W -f '${Version}' busybox-static 2>/dev/null)"
    echo "qemu_guest_agent=$(dpkg-query -W -f '${Version}' qemu-guest-agent 2>/dev/null)"
    echo "data_disk=$DATA_SIZE ext4 label havendata, /hello.txt"
    echo "recipe=$RECIPE"
    echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} >"$OUT/build-info.txt"
cache_publish "$OUT"
log "built $CACHE_DIR ($KPKG $KVER_PKG)"
echo "$CACHE_DIR"
