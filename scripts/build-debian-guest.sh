#!/bin/bash
# build-debian-guest.sh [CACHE_DIR]
#
# Builds the Debian 12 guest disk used by Haven's tests that need a real distribution: systemd,
# qemu-guest-agent with fsfreeze hooks (a PostgreSQL CHECKPOINT hook), PostgreSQL 15, DHCP on every
# NIC, a root autologin on ttyS0. debootstrap from the mirror the host's apt uses; no loop devices,
# no nbd: the ext4 root is made with mkfs.ext4 -d, the ESP with mkfs.vfat + mtools, the GPT disk
# with sfdisk + dd. UEFI-bootable (GRUB at \EFI\BOOT\BOOTX64.EFI) and bootable by direct kernel boot.
# See docs/test-guest.md, "Debian guest".
#
# CACHE_DIR defaults to ${HAVEN_DEBIAN_CACHE:-$HOME/.cache/haven/debian-guest}. When it already holds a
# finished build of this same recipe ("ready" file), nothing is done. The build happens in a temp dir
# beside CACHE_DIR that is renamed into place at the end, so a half-built cache is never seen.
#
# Output (stdout): the absolute path of CACHE_DIR, and nothing else. Progress goes to stderr.
# Files in CACHE_DIR: disk.qcow2, vmlinuz, initrd.img, append.txt, build-info.txt, ready (last).
# Exit status: 0 ok, 1 failure (one "build-debian-guest: error: ..." line on stderr), 2 bad usage.
# Needs root (debootstrap, chroot).
#
# Environment:
#   HAVEN_DEBIAN_CACHE   default cache folder
#   HAVEN_DEBIAN_MIRROR  Debian mirror (default: the one the host's apt sources use for bookworm)
set -euo pipefail
umask 022

PROG=build-debian-guest
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
GUEST_SRC=$HERE/debian-guest
OUTPUTS=(disk.qcow2 vmlinuz initrd.img append.txt build-info.txt)
SUITE=bookworm
ESP_MIB=32
ROOT_MIB=2048
INCLUDE=systemd-sysv,udev,kmod,e2fsprogs,iproute2,ca-certificates

# Usage, cache folder, and the cache contract (reuse, lock, temp dir, publish): guest-cache.sh.
. "$HERE/guest-cache.sh"
HOME=${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}
cache_args 2,24 "${HAVEN_DEBIAN_CACHE:-$HOME/.cache/haven/debian-guest}" "$@"

# The recipe's fingerprint: a cache built by another version of this script or of scripts/debian-guest/*
# is rebuilt.
RECIPE=$(cat "${BASH_SOURCE[0]}" "$HERE/guest-cache.sh" "$GUEST_SRC"/* 2>/dev/null | sha256sum | cut -c1-16) ||
    die "cannot read the recipe files in $GUEST_SRC"
READY_LINE="haven-debian-guest recipe=$RECIPE"

# ---- the cache: reuse it when ready; otherwise build under a lock in a temp dir (guest-cache.sh) ------
# A killed build may have left /proc mounted in its root tree: unmounted before its temp dir is removed.
unmount_proc() { ! mountpoint -q "$1/root/proc" 2>/dev/null || umount -l "$1/root/proc"; }
CACHE_CLEANUP=unmount_proc
[ "$(id -u)" = 0 ] || cache_is_ready || die "building the Debian guest needs root (debootstrap, chroot); the cache $CACHE_DIR is not built"
cache_begin
R=$WORK/root

# ---- prerequisites --------------------------------------------------------------------------------
STEP="checking prerequisites"
export PATH=$PATH:/usr/sbin:/sbin
missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need debootstrap debootstrap
need grub-mkstandalone grub-efi-amd64-bin
[ -d /usr/lib/grub/x86_64-efi ] || missing+=(grub-efi-amd64-bin)
need mcopy mtools
need mkfs.vfat dosfstools
need sfdisk fdisk
need mkfs.ext4 e2fsprogs
need qemu-img qemu-utils
[ -f /usr/share/OVMF/OVMF_CODE_4M.fd ] || missing+=(ovmf) # not for the build: tests boot the disk with it
for c in chroot flock sha256sum uuidgen dd truncate; do
    command -v "$c" >/dev/null 2>&1 || die "'$c' not found (is this a Debian system?)"
done
if [ ${#missing[@]} -gt 0 ]; then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! run apt-get install -y --no-install-recommends "${missing[@]}"; then
        run apt-get update || die "apt-get update failed"
        run apt-get install -y --no-install-recommends "${missing[@]}" || die "apt-get install ${missing[*]} failed"
    fi
fi

# The mirror (and security mirror) the host's apt uses for this suite: deb822 .sources or one-line lists.
apt_uri() { # suite -> first URI that serves it
    local suite=$1 f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk -v s="$suite" 'BEGIN{RS=""} /(^|\n)Types:[^\n]*deb([ \n]|$)/ && !/(^|\n)Enabled: *no/ {
            u=""; ok=0; n=split($0, l, "\n")
            for (i = 1; i <= n; i++) {
                if (l[i] ~ /^URIs:/) { split(l[i], w, " "); u=w[2] }
                if (l[i] ~ /^Suites:/) { m=split(l[i], w, " "); for (j = 2; j <= m; j++) if (w[j] == s) ok=1 }
            }
            if (ok && u != "") { print u; exit }
        }' "$f"
    done
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
        sed -e 's/#.*//' -e 's/\[[^]]*\]//' | awk -v s="$suite" '$1 == "deb" && $3 == s { print $2 }' || true
}
MIRROR=${HAVEN_DEBIAN_MIRROR:-$(apt_uri $SUITE | head -n1 || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY=$(apt_uri $SUITE-security | head -n1 || true)
log "mirror: $MIRROR${SECURITY:+, security: $SECURITY}"

# ---- root tree ------------------------------------------------------------------------------------
STEP="running debootstrap $SUITE from $MIRROR"
log "debootstrap (a few minutes)"
run debootstrap --variant=minbase --arch=amd64 --include=$INCLUDE $SUITE "$R" "$MIRROR" ||
    die "debootstrap $SUITE from $MIRROR failed"
{
    echo "deb $MIRROR $SUITE main"
    echo "deb $MIRROR $SUITE-updates main"
    [ -z "$SECURITY" ] || echo "deb $SECURITY $SUITE-security main"
} >"$R/etc/apt/sources.list"

STEP="installing packages and configuring the guest"
log "installing packages in the guest, configuring"
mkdir -p "$R/tmp/haven-guest"
cp "$GUEST_SRC"/* "$R/tmp/haven-guest/"
mount -t proc proc "$R/proc" || die "cannot mount /proc in the guest tree"
run chroot "$R" /bin/bash /tmp/haven-guest/setup-in-chroot.sh || die "setting up the guest failed (setup-in-chroot.sh)"
umount "$R/proc"

STEP="collecting the kernel"
OUT=$WORK/out
mkdir -p "$OUT"
KVER=$(basename "$(ls -d "$R"/lib/modules/*/ | head -n1)")
[ -f "$R/boot/vmlinuz-$KVER" ] && [ -f "$R/boot/initrd.img-$KVER" ] || die "no kernel/initrd for $KVER in the guest's /boot"
cp "$R/boot/vmlinuz-$KVER" "$OUT/vmlinuz"
cp "$R/boot/initrd.img-$KVER" "$OUT/initrd.img"
ROOT_UUID=$(uuidgen)
APPEND="root=UUID=$ROOT_UUID ro console=ttyS0 net.ifnames=0 systemd.hostname=debian-guest quiet"
echo "UUID=$ROOT_UUID / ext4 defaults,errors=remount-ro 0 1" >"$R/etc/fstab"
PKGS=$(chroot "$R" dpkg-query -W -f '${Package}=${Version}\n' linux-image-amd64 qemu-guest-agent postgresql-15 systemd 2>/dev/null | tr '\n' ' ')
USED_MIB=$(du -sxm "$R" | cut -f1)

# ---- disk -----------------------------------------------------------------------------------------
STEP="making the ext4 root"
log "making the disk"
run mkfs.ext4 -q -F -L debian-root -U "$ROOT_UUID" -d "$R" "$WORK/root.img" ${ROOT_MIB}M || die "mkfs.ext4 -d failed"
rm -rf --one-file-system "$R"

STEP="making the ESP"
# GRUB with its config inside (memdisk): finds the root by UUID, boots the same kernel line.
cat >"$WORK/grub.cfg" <<G
set timeout=0
search --no-floppy --fs-uuid --set=root $ROOT_UUID
linux /boot/vmlinuz-$KVER $APPEND
initrd /boot/initrd.img-$KVER
boot
G
run grub-mkstandalone -O x86_64-efi -o "$WORK/BOOTX64.EFI" --modules="part_gpt ext2 search_fs_uuid linux" \
    --locales= --fonts= --themes= "boot/grub/grub.cfg=$WORK/grub.cfg" || die "grub-mkstandalone failed"
run mkfs.vfat -n ESP -C "$WORK/esp.img" $((ESP_MIB * 1024)) || die "mkfs.vfat failed"
run mmd -i "$WORK/esp.img" ::/EFI ::/EFI/BOOT || die "mmd failed"
run mcopy -i "$WORK/esp.img" "$WORK/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI || die "mcopy failed"

STEP="assembling the GPT disk"
# 1 MiB gap, ESP, root, 1 MiB for the backup GPT.
truncate -s $(((1 + ESP_MIB + ROOT_MIB + 1) * 1024 * 1024)) "$WORK/disk.raw"
run sfdisk --no-reread --no-tell-kernel "$WORK/disk.raw" <<S || die "sfdisk failed"
label: gpt
unit: sectors
start=2048, size=$((ESP_MIB * 2048)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="ESP"
start=$(((1 + ESP_MIB) * 2048)), size=$((ROOT_MIB * 2048)), type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name="root"
S
run dd if="$WORK/esp.img" of="$WORK/disk.raw" bs=1M seek=1 conv=notrunc,sparse || die "dd of the ESP failed"
run dd if="$WORK/root.img" of="$WORK/disk.raw" bs=1M seek=$((1 + ESP_MIB)) conv=notrunc,sparse || die "dd of the root failed"
rm -f "$WORK/esp.img" "$WORK/root.img"
run qemu-img convert -f raw -O qcow2 "$WORK/disk.raw" "$OUT/disk.qcow2" || die "qemu-img convert failed"
rm -f "$WORK/disk.raw"

# ---- metadata, then publish -----------------------------------------------------------------------
STEP="publishing"
echo "$APPEND" >"$OUT/append.txt"
{
    echo "suite=$SUITE"
    echo "mirror=$MIRROR"
    echo "kernel_release=$KVER"
    echo "packages=$PKGS"
    echo "root_uuid=$ROOT_UUID"
    echo "root_used_mib=$USED_MIB"
    echo "disk=GPT: ESP ${ESP_MIB} MiB (FAT, \\EFI\\BOOT\\BOOTX64.EFI), root ${ROOT_MIB} MiB ext4 label debian-root"
    echo "disk_qcow2_bytes=$(stat -c %s "$OUT/disk.qcow2")"
    echo "recipe=$RECIPE"
    echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} >"$OUT/build-info.txt"
cache_publish "$OUT"
log "built $CACHE_DIR ($KVER, $(du -m "$CACHE_DIR/disk.qcow2" | cut -f1) MiB disk.qcow2)"
echo "$CACHE_DIR"
