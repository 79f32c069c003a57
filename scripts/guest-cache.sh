# guest-cache.sh: the cache contract shared by build-test-guest.sh and build-debian-guest.sh (sourced).
#
# The caller sets PROG, CACHE_DIR (absolute), READY_LINE (names the recipe's fingerprint) and OUTPUTS
# (the files a finished cache holds besides "ready"), then calls cache_begin. That prints CACHE_DIR and
# exits 0 when the cache is ready; otherwise it takes the build lock, and sets WORK (a temp dir beside
# CACHE_DIR, removed on exit), LOG (the build log, kept on failure), die() and run(). cache_publish OUT
# writes "ready" last into OUT and renames OUT to CACHE_DIR, so a half-built cache is never seen.
# Optional: CACHE_CLEANUP, a function run before a temp dir is removed (e.g. to unmount something in it).

# cache_args HELP_LINES DEFAULT_DIR ARGS...: -h/--help prints the script's header comment (sed range
# HELP_LINES), bad usage exits 2; sets CACHE_DIR (absolute) from ARGS or DEFAULT_DIR. Defines log and die.
cache_args() {
    log() { echo "$PROG: $*" >&2; }
    die() { echo "$PROG: error: $*" >&2; exit 1; }
    local help=$1 default=$2
    shift 2
    case "${1:-}" in
        -h | --help) sed -n "${help}s/^# \{0,1\}//p" "$0"; exit 0 ;;
        -*) echo "usage: $PROG [CACHE_DIR]" >&2; exit 2 ;;
    esac
    [ $# -le 1 ] || { echo "usage: $PROG [CACHE_DIR]" >&2; exit 2; }
    CACHE_DIR=$(realpath -m -- "${1:-$default}")
    [ "$CACHE_DIR" != / ] || die "CACHE_DIR must not be /"
}

cache_is_ready() {
    [ -f "$CACHE_DIR/ready" ] && [ "$(head -n1 "$CACHE_DIR/ready" 2>/dev/null)" = "$READY_LINE" ] || return 1
    local f
    for f in "${OUTPUTS[@]}"; do [ -s "$CACHE_DIR/$f" ] || return 1; done
}

cache_remove_dir() { # DIR: a temp dir of ours, after CACHE_CLEANUP; never crosses into another file system
    [ -z "${CACHE_CLEANUP:-}" ] || "$CACHE_CLEANUP" "$1" || true
    rm -rf --one-file-system "$1"
}

cache_begin() {
    if cache_is_ready; then
        echo "$CACHE_DIR"
        exit 0
    fi
    PARENT=$(dirname "$CACHE_DIR")
    NAME=$(basename "$CACHE_DIR")
    mkdir -p "$PARENT" || die "cannot create $PARENT"
    LOG=$PARENT/.$NAME.build.log
    exec 9>"$PARENT/.$NAME.lock" || die "cannot create lock file $PARENT/.$NAME.lock"
    flock -w 1800 9 || die "timed out waiting for another build of $CACHE_DIR (lock $PARENT/.$NAME.lock)"
    if cache_is_ready; then # another process built it while we waited
        echo "$CACHE_DIR"
        exit 0
    fi

    # An existing CACHE_DIR gets replaced at the end: only if it is ours (a cache, ready or not, of any
    # recipe) or an empty folder.
    if [ -e "$CACHE_DIR" ]; then
        [ -d "$CACHE_DIR" ] || die "$CACHE_DIR exists and is not a folder"
        local f
        for f in "$CACHE_DIR"/* "$CACHE_DIR"/.[!.]*; do
            [ -e "$f" ] || continue
            case " ${OUTPUTS[*]} ready " in
                *" ${f##*/} "*) ;;
                *) die "$CACHE_DIR exists and does not look like a $PROG cache (has ${f##*/}); not replacing it" ;;
            esac
        done
    fi

    # Leftovers of builds that were killed (we hold the lock, so nobody is using them).
    local d
    for d in "$PARENT/.$NAME.tmp."*; do [ ! -d "$d" ] || cache_remove_dir "$d"; done
    rm -rf --one-file-system "$PARENT/.$NAME.old."*

    WORK=$(mktemp -d "$PARENT/.$NAME.tmp.XXXXXX") || die "cannot create a temp dir in $PARENT"
    : >"$LOG"
    STEP="starting"
    trap cache_on_exit EXIT
    trap 'STEP="$STEP (interrupted)"; exit 130' INT TERM
    die() { DIED=1; echo "$PROG: error: $* (details in $LOG)" >&2; exit 1; }
}

cache_on_exit() {
    local rc=$?
    cache_remove_dir "$WORK"
    if [ $rc -ne 0 ]; then
        # die() already printed the reason; this catches anything set -e stopped on.
        [ -n "${DIED:-}" ] || echo "$PROG: error: failed while $STEP (exit $rc); details in $LOG" >&2
    else
        rm -f "$LOG"
    fi
}

# run CMD...: output to the build log only.
run() { "$@" >>"$LOG" 2>&1; }

cache_publish() { # OUT: the finished files, "ready" not yet among them
    local out=$1
    sync "$out"/* # so a crash cannot leave a "ready" cache with truncated files
    echo "$READY_LINE" >"$out/ready" # last
    sync "$out/ready" "$out"
    [ ! -e "$CACHE_DIR" ] || mv -T "$CACHE_DIR" "$PARENT/.$NAME.old.$$" # checked in cache_begin: ours
    mv -T "$out" "$CACHE_DIR"
    rm -rf "$PARENT/.$NAME.old.$$"
}
