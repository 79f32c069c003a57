#!/bin/bash
# Runs inside the Debian guest's root tree (chroot) during scripts/build-debian-guest.sh, after
# debootstrap. Installs the packages, configures the guest and initialises PostgreSQL.
# The files of scripts/debian-guest/ are in /tmp/haven-guest. Output goes to the build log.
set -euxo pipefail
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 PATH=/usr/sbin:/usr/bin:/sbin:/bin
SRC=/tmp/haven-guest

# No daemons start in the chroot; no docs, man pages or translations in the image.
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
chmod 0755 /usr/sbin/policy-rc.d
cat >/etc/dpkg/dpkg.cfg.d/01-haven-nodoc <<'X'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
path-exclude=/usr/share/lintian/*
X
# PostgreSQL's JIT (LLVM + z3, 130 MB): postgresql-15 depends on it, but with jit = off (below) the server
# never loads it. Its files stay out of the image; the packages stay installed.
cat >/etc/dpkg/dpkg.cfg.d/02-haven-nojit <<'X'
path-exclude=/usr/lib/x86_64-linux-gnu/libLLVM-*
path-exclude=/usr/lib/x86_64-linux-gnu/libz3.so*
path-exclude=/usr/lib/postgresql/*/lib/bitcode/*
path-exclude=/usr/lib/postgresql/*/lib/llvmjit*
X
cat >/etc/apt/apt.conf.d/01-haven <<'X'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
X

apt-get update
# The initramfs: only what mounting an ext4 root on virtio needs, zstd (fast to unpack under TCG).
mkdir -p /etc/initramfs-tools/conf.d
printf 'MODULES=list\nCOMPRESS=zstd\n' >/etc/initramfs-tools/conf.d/haven.conf
apt-get install -y zstd initramfs-tools
printf '%s\n' virtio_pci virtio_blk virtio_scsi sd_mod crc32c_generic ext4 >>/etc/initramfs-tools/modules
apt-get install -y linux-image-amd64 qemu-guest-agent postgresql postgresql-contrib socat \
    systemd-resolved procps less iputils-ping efibootmgr
KVER=$(basename /lib/modules/*)

# Kernel modules a VM on QEMU never loads (about 3/4 of the package): graphics, sound, wireless, media...
M=/lib/modules/$KVER/kernel
rm -rf $M/drivers/gpu $M/sound $M/drivers/media $M/drivers/net/wireless $M/net/wireless $M/net/mac80211 \
    $M/drivers/infiniband $M/drivers/staging $M/drivers/bluetooth $M/net/bluetooth $M/drivers/iio \
    $M/drivers/isdn $M/drivers/net/ethernet/mellanox $M/drivers/net/ethernet/intel/ice $M/drivers/scsi/lpfc \
    $M/drivers/scsi/qla2xxx $M/drivers/scsi/mpt3sas $M/drivers/net/can $M/drivers/mtd $M/drivers/input/touchscreen \
    $M/drivers/hwmon $M/drivers/nfc $M/net/nfc $M/drivers/usb/gadget $M/drivers/net/usb $M/drivers/platform/x86 \
    $M/drivers/crypto $M/drivers/target
# Hardware NIC and SCSI HBA drivers (the guest has virtio; e1000/e1000e and realtek stay for other setups).
find $M/drivers/net/ethernet -mindepth 1 -maxdepth 1 ! -name intel ! -name realtek -exec rm -rf {} +
find $M/drivers/scsi -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
depmod -a "$KVER"
update-initramfs -u -k "$KVER"

# ---- system -----------------------------------------------------------------------------------------
# No static hostname (debootstrap copied the build host's): the kernel line's systemd.hostname=debian-guest
# names the guest, and a name from DHCP replaces it (systemd-networkd may only set one when none is static).
rm -f /etc/hostname
printf '127.0.0.1\tlocalhost\n127.0.1.1\tdebian-guest\n::1\tlocalhost ip6-localhost ip6-loopback\n' >/etc/hosts
# Empty: systemd makes a new id at every boot of a copy until it can write one (unique per VM).
: >/etc/machine-id
rm -f /var/lib/dbus/machine-id
passwd -d root
install -D -m 0644 $SRC/autologin.conf /etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf
install -D -m 0644 $SRC/80-dhcp.network /etc/systemd/network/80-dhcp.network
systemctl enable systemd-networkd systemd-resolved serial-getty@ttyS0.service
ln -sf /run/systemd/resolve/stub-resolv.conf /etc/resolv.conf
# Slow or pointless at boot in a short-lived test VM.
systemctl mask apt-daily.timer apt-daily-upgrade.timer man-db.timer e2scrub_all.timer e2scrub_reap.service \
    fstrim.timer dpkg-db-backup.timer logrotate.timer systemd-networkd-wait-online.service \
    systemd-timesyncd.service getty@tty1.service remote-fs.target
# The journal in RAM only (no disk writes beside the workload's).
mkdir -p /etc/systemd/journald.conf.d
printf '[Journal]\nStorage=volatile\nRuntimeMaxUse=16M\n' >/etc/systemd/journald.conf.d/haven.conf

# ---- qemu-ga with fsfreeze hooks ----------------------------------------------------------------------
install -D -m 0644 $SRC/qemu-guest-agent.conf /etc/systemd/system/qemu-guest-agent.service.d/haven.conf
install -D -m 0755 $SRC/fsfreeze-postgresql /etc/qemu/fsfreeze-hook.d/postgresql

# ---- PostgreSQL ---------------------------------------------------------------------------------------
PGV=$(ls /usr/lib/postgresql)
CONF=/etc/postgresql/$PGV/main
[ -f $CONF/postgresql.conf ] || pg_createcluster "$PGV" main
cat >$CONF/conf.d/haven.conf <<'X'
listen_addresses = '*'
jit = off
password_encryption = 'scram-sha-256'
X
printf 'host all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256\n' >>$CONF/pg_hba.conf
systemctl enable postgresql
# pg_amcheck is not among the programs Debian links into /usr/bin.
ln -s /usr/lib/postgresql/$PGV/bin/pg_amcheck /usr/local/bin/pg_amcheck
# Create the test role, database and table now, with a server that only listens on a socket in /tmp.
runuser -u postgres -- /usr/lib/postgresql/$PGV/bin/pg_ctl -D /var/lib/postgresql/$PGV/main -w -t 120 \
    -o "-c config_file=$CONF/postgresql.conf -c listen_addresses= -c unix_socket_directories=/tmp -c dynamic_shared_memory_type=mmap" start
runuser -u postgres -- psql -X -h /tmp -v ON_ERROR_STOP=1 -d postgres <<'X'
CREATE ROLE haven LOGIN PASSWORD 'haven';
CREATE DATABASE haven OWNER haven;
\c haven
CREATE EXTENSION amcheck;
CREATE TABLE commits (id bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT now());
ALTER TABLE commits OWNER TO haven;
X
runuser -u postgres -- /usr/lib/postgresql/$PGV/bin/pg_ctl -D /var/lib/postgresql/$PGV/main -w -m fast stop

# ---- test workload ------------------------------------------------------------------------------------
install -m 0755 $SRC/haven-commit-loop /usr/local/bin/haven-commit-loop
install -m 0644 $SRC/haven-commit-loop.service /etc/systemd/system/haven-commit-loop.service

# ---- clean up -----------------------------------------------------------------------------------------
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/*.log /var/log/apt/* /tmp/* /usr/sbin/policy-rc.d
