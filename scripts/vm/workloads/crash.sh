# Crash workload: the server is killed with SIGKILL and restarted while the
# Linux NFSv3 client writes; the client must carry on by itself (a hard mount
# retries until the server is back; a new write verifier makes it resend the
# UNSTABLE writes it had not yet committed) and no byte may be lost.
#
# Files are written from patterns kept in the guest's tmpfs, so each one has
# a known md5:
#   synced    written and fsync'ed before the crash (acknowledged durable)
#   direct    one O_DIRECT write of $BIG MiB: the client sends it as many
#             UNSTABLE WRITEs at once, then one COMMIT.  The host kills the
#             server as soon as the first of them arrives (host action
#             "kill9-restart direct"), so some are acknowledged by the old
#             server and committed to the new one, whose new verifier makes
#             the client send them again
#   stream    written meanwhile through one descriptor in 16 pieces, 0.1 s
#             apart, so a write stream is cut by the crash and goes on to the
#             new server; closed at the end (flush and COMMIT)
#   after     written once the server is back
# Both writers start 0.5 s after the host action is sent, so the host is
# already watching for the first WRITE.  Every file is then read back after
# dropping caches (synced also through a descriptor opened before the crash)
# and checked by the host (md5).  Needs the host action kill9-restart: run
# through tests/vm/test_vm_crash.py or a runner given that callback.
#
# Parameters (VM_NAME): VM_CRASH_MB (size of the files written across the
# crash, in MiB, default 32; the others are a quarter of it).
. /vm/lib.sh

BIG=${VM_CRASH_MB:-32}
SMALL=$((BIG / 4))
REL=crash
W=$MNT/$REL
BLOB=/srcdata/blob/busybox.bin

md5_of() { md5sum "$1" | cut -d' ' -f1; }

# pattern NAME MB: /tmp/NAME, MB MiB that differ from every other pattern
# (a line "pattern NAME", which the host looks for, then copies of a binary).
pattern() {
    { echo "pattern $1"; while cat "$BLOB"; do :; done; } 2>/dev/null \
        | head -c $(($2 * 1048576)) > "/tmp/$1"
    [ "$(stat -c %s "/tmp/$1")" -eq $(($2 * 1048576)) ]
}

do_setup() {
    pattern synced "$SMALL" && pattern direct "$BIG" && pattern stream "$BIG" \
        && pattern after "$SMALL" || return 1
    rm -rf "$W" && mkdir "$W"
}

do_synced() {
    dd if=/tmp/synced of="$W/synced" bs=64k conv=fsync 2>/dev/null || return 1
    exec 3< "$W/synced"     # a handle from before the crash, read after it
}

# slowly FROM TO: copy in 16 pieces, 0.1 s apart, through one descriptor.
slowly() {
    _piece=$(($(stat -c %s "$1") / 16))
    exec 5> "$2" || return 1
    for _i in $(seq 0 15); do
        dd if="$1" bs="$_piece" skip="$_i" count=1 2>/dev/null >&5 || return 1
        sleep 0.1
    done
    exec 5>&-
}

# in_background NAME command...: run it in a subshell 0.5 s from now; its
# status goes to /tmp/NAME.rc, its errors to /tmp/NAME.err.
in_background() {
    _name=$1
    shift
    (sleep 0.5; "$@" 2>"/tmp/$_name.err"; echo $? > "/tmp/$_name.rc") &
}

do_crash() {
    in_background direct dd if=/tmp/direct of="$W/direct" bs="${BIG}M" count=1 oflag=direct
    DIRECT=$!
    in_background stream slowly /tmp/stream "$W/stream"
    STREAM=$!
    host_action kill9-restart direct || return 1
    T0=$(now_cs)
    wait "$DIRECT" "$STREAM"
    for f in direct stream; do
        expect_eq "$(cat "/tmp/$f.rc")" 0 "writing $f across the crash: $(cat "/tmp/$f.err")" || return 1
    done
    sync || return 1
    report "INFO recovered_after_s=$(elapsed_s "$T0")"
}

do_after() {
    dd if=/tmp/after of="$W/after" bs=64k conv=fsync 2>/dev/null
}

do_verify() {
    drop_caches
    expect_eq "$(md5sum <&3 | cut -d' ' -f1)" "$(md5_of /tmp/synced)" "synced, through the pre-crash descriptor" || return 1
    exec 3<&-
    for f in synced direct stream after; do
        expect_eq "$(md5_of "$W/$f")" "$(md5_of "/tmp/$f")" "md5 of $f" || return 1
        hostcheck md5 "$REL/$f" "$(md5_of "/tmp/$f")"
        hostcheck size "$REL/$f" "$(stat -c %s "/tmp/$f")"
    done
}

if ! step mount nfs_mount; then
    finish
    exit 1
fi
step setup do_setup || { finish; exit 1; }
step synced do_synced
step crash do_crash
step after do_after
step verify do_verify
step umount umount "$MNT"
finish
