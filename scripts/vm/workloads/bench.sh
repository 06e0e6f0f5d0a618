# Benchmark workload: what a user feels, timed phase by phase through the Linux
# NFSv3 client (issue 10): a 100 MB dd with fsync, its cold read, 1000 empty
# creates, 1000 create+write+close, 1000 cold stats, ls -l of 2000 entries
# (twice: cold, then with the client's attribute cache dropped again), 3000
# removes (the 1000 empty files and the 2000 listed; the phase was named remove_2000
# before 2026-12-06, in figures recorded earlier).  Reports "INFO bench PHASE secs=S" per phase and "INFO bench total", and the NFS
# calls each phase made with their times as the client measured them ("INFO rtt PHASE
# getattr=CALLS/QUEUE/RTT/EXEC ...", ms summed over the phase).
#
# Parameters: VM_DD_MB (default 100), VM_NCONNECT (mount option nconnect=N when set),
# VM_MOUNT_OPTS (more mount options for every mount, e.g. acregmin=30), VM_RM_AFTER (seconds
# to wait, outside any timing, between ls_l_2000_again and remove_3000: its rm lstats the
# 2,000 files ls listed, whose attributes the client trusts for acregmin, 3 s by default;
# past that every lstat is a GETATTR, whichever the server: docs/design.rst, "remove_3000"),
# VM_CPU_MARKS=1: before and after each phase (outside its timing) ask the host for the
# action "cpu begin|end PHASE", so it can read the server's CPU time per phase
# (scripts/vm/compare_bench.py; the plain runner has no such action).
. /vm/lib.sh

DD_MB=${VM_DD_MB:-100}
W=$MNT/vmbench
TOTAL=0

cpu_mark() { [ "${VM_CPU_MARKS:-}" != 1 ] || host_action cpu "$@" > /dev/null; }

# The client's per-op statistics for this mount (/proc/self/mountstats, "per-op statistics":
# ops, transmissions, timeouts, bytes sent, bytes received, then the cumulative queue, RTT
# and execute milliseconds), one line per procedure: "getattr OPS QUEUE_MS RTT_MS EXEC_MS".
ops_now() {
    awk -v m=" $MNT " '$1 == "device" { ours = (index($0, " mounted on" m) > 0); f = 0; next }
        ours && /per-op statistics/ { f = 1; next }
        f && NF >= 9 { sub(/:$/, "", $1); print tolower($1), $2, $7, $8, $9 }' /proc/self/mountstats > "$1"
}
# What a phase made of them, one line: per procedure it called, the calls and the queue, RTT
# and execute milliseconds summed over the phase ("INFO rtt PHASE lookup=1000/3/280/290 ..."),
# as the kernel client saw them.
ops_report() {
    awk -v p="$1" 'NR == FNR { n[$1] = $2; q[$1] = $3; r[$1] = $4; e[$1] = $5; next }
        ($2 - n[$1]) > 0 { rtt = rtt " " $1 "=" ($2 - n[$1]) "/" ($3 - q[$1]) "/" ($4 - r[$1]) "/" ($5 - e[$1]) }
        END { print "INFO rtt " p rtt }' "$2" "$3" |
        while read -r line; do report "$line"; done
}

phase() {
    _p=$1
    shift
    cpu_mark begin "$_p"
    ops_now /tmp/ops.0
    _t0=$(now_cs)
    "$@" > /tmp/phase.out 2>&1 || { cat /tmp/phase.out; return 1; }
    _s=$(elapsed_s "$_t0")
    ops_now /tmp/ops.1
    ops_report "$_p" /tmp/ops.0 /tmp/ops.1
    cpu_mark end "$_p"
    TOTAL=$(awk -v a="$TOTAL" -v b="$_s" 'BEGIN { printf "%.2f", a + b }')
    report "INFO bench $_p secs=$_s"
}

# The mount options beyond lib.sh's: nconnect and VM_MOUNT_OPTS, comma-separated.
MOUNT_EXTRA=$(echo "${VM_NCONNECT:+nconnect=$VM_NCONNECT},${VM_MOUNT_OPTS:-}" | sed 's/^,//; s/,$//')

remount() {
    drop_caches
    umount "$MNT" && nfs_mount $MOUNT_EXTRA > /dev/null
}

dd_write() { dd if=/dev/zero of="$W/big.bin" bs=1048576 count="$DD_MB" conv=fsync 2>/dev/null; }
dd_read() { dd if="$W/big.bin" of=/dev/null bs=1048576 2>/dev/null; }
creates() { i=0; while [ $i -lt 1000 ]; do : > "$W/c/e$i"; i=$((i + 1)); done; }
writes() { i=0; while [ $i -lt 1000 ]; do echo "line $i" > "$W/w/f$i"; i=$((i + 1)); done; }
stats() { i=0; while [ $i -lt 1000 ]; do stat -c %s "$W/w/f$i" > /dev/null; i=$((i + 1)); done; }
list() { [ "$(ls -l "$W/l" | wc -l)" -eq 2001 ]; }
removes() { rm -f "$W"/c/* "$W"/l/*; }

setup() {
    rm -rf "$W" && mkdir -p "$W/c" "$W/w" "$W/l" && i=0
    while [ $i -lt 2000 ]; do : > "$W/l/n$i"; i=$((i + 1)); done
}

bench() {
    setup || return 1
    phase dd_write dd_write || return 1
    remount || return 1
    phase dd_read_cold dd_read || return 1
    phase create_1000 creates || return 1
    phase create_write_close_1000 writes || return 1
    remount || return 1
    phase stat_cold_1000 stats || return 1
    remount || return 1
    phase ls_l_2000_cold list || return 1
    remount || return 1
    phase ls_l_2000_again list || return 1
    [ -z "${VM_RM_AFTER:-}" ] || sleep "$VM_RM_AFTER"
    phase remove_3000 removes || return 1
    report "INFO bench total secs=$TOTAL"
}

if ! step mount nfs_mount $MOUNT_EXTRA; then
    finish
    exit 1
fi
step bench bench
finish
