# Helpers shared by /init and every workload (sourced by busybox sh).
#
# Protocol on the results port (second serial port, read by the host):
#   BOOT ...                       guest is up
#   INFO key=value ...             measurements, printed by the host
#   STEP name OK secs              one workload step passed
#   STEP name FAIL rc=N secs: msg  one workload step failed
#   HOSTCHECK kind relpath value   the host verifies this in the export dir
#   HOSTACTION id verb args...     the host acts now, answers on $ACK_DEV
#   RESULT PASS | RESULT FAIL msg  last line; the host stops waiting here
#
# Host answers on the third serial port (opened by /init as fd 7):
#   ACK id OK [msg] | ACK id FAIL why

RESULTS_DEV=/dev/ttyS1
ACK_DEV=/dev/ttyS2
ACK_SEQ_FILE=/tmp/hostaction.seq
RESULTS_COPY=/tmp/results.txt
NFS_SERVER=10.0.2.2
MNT=/mnt
FAILS=0

# Send one protocol line to the host (and echo it on the console log).
report() {
    echo "$*" >> "$RESULTS_DEV"
    echo "$*" >> "$RESULTS_COPY"
    echo "vmtest: $*"
}

uptime_s() { cut -d' ' -f1 /proc/uptime; }
now_cs() { awk '{ printf "%d", $1 * 100 }' /proc/uptime; }
# Seconds since a now_cs timestamp, two decimals.
elapsed_s() { awk -v t0="$1" '{ printf "%.2f", ($1 * 100 - t0) / 100 }' /proc/uptime; }
# MB/s for $1 MB moved in $2 seconds.
mb_per_s() { awk -v mb="$1" -v s="$2" 'BEGIN { printf "%.2f", (s > 0) ? mb / s : 0 }'; }

# Run "$@" (usually a shell function, in this shell so it may set variables)
# as the step named $1 and report OK or FAIL with its last output lines.
step() {
    _name=$1
    shift
    _t0=$(now_cs)
    echo "vmtest: --- step $_name"
    "$@" > /tmp/step.out 2>&1
    _rc=$?
    cat /tmp/step.out
    _dt=$(elapsed_s "$_t0")
    if [ "$_rc" -eq 0 ]; then
        report "STEP $_name OK ${_dt}s"
        return 0
    fi
    FAILS=$((FAILS + 1))
    report "STEP $_name FAIL rc=$_rc ${_dt}s: $(tail -n 3 /tmp/step.out | tr '\n' ' ')"
    return 1
}

# Last line of a workload: RESULT PASS only when no step failed.
finish() {
    if [ "$FAILS" -eq 0 ]; then
        report "RESULT PASS"
    else
        report "RESULT FAIL $FAILS step(s) failed"
    fi
}

# expect_eq ACTUAL EXPECTED WHAT
expect_eq() {
    [ "$1" = "$2" ] && return 0
    echo "expected $3 = '$2', got '$1'"
    return 1
}

hostcheck() { report "HOSTCHECK $*"; }
# md5 of "md5  ./path" lines for every file under $1, sorted; the host's
# treemd5 check computes the same digest over the export directory.
tree_md5() {
    (cd "$1" && find . -type f | sort | while IFS= read -r f; do md5sum "$f"; done) \
        | md5sum | cut -d' ' -f1
}

# hostcheck_now KIND RELPATH VALUE: the same check, done by the host now (for
# what a later step removes); fails when the host disagrees.
hostcheck_now() { host_action check "$@"; }

# Mount the export with every option explicit (busybox mount passes them
# straight to the kernel; no rpcbind lookups, no NLM).  Extra options in $1.
nfs_mount() {
    _opts="vers=3,proto=tcp,mountproto=tcp,nolock,addr=$NFS_SERVER,mountaddr=$NFS_SERVER"
    [ -n "$VM_NFS_PORT" ] && _opts="$_opts,port=$VM_NFS_PORT"
    [ -n "$VM_MOUNT_PORT" ] && _opts="$_opts,mountport=$VM_MOUNT_PORT"
    [ -n "$1" ] && _opts="$_opts,$1"
    mount -t nfs -o "$_opts" "$NFS_SERVER:$VM_EXPORT" "$MNT" || return 1
    grep " $MNT nfs " /proc/mounts
}

# Forget every cached page and attribute so the next reads go to the server.
drop_caches() {
    sync
    echo 3 > /proc/sys/vm/drop_caches
}

# host_action VERB ARGS...: have the host do something now and wait for its
# answer (up to $HOSTACTION_TIMEOUT seconds, default 120).  Verbs:
#   write RELPATH TEXT   create/overwrite a file in the export, behind the
#                        server's back (TEXT plus a newline; single spaces)
#   rm RELPATH           remove a file in the export behind the server's back
#   check KIND REL VALUE a HOSTCHECK done now (hostcheck_now)
#   restart              restart the NFS server (if the caller supports it)
#   kill9-restart [NAME] kill the server with SIGKILL and start it again, once
#                        it received the first WRITE of the file whose data
#                        begins "pattern NAME" (tests/vm/test_vm_crash.py)
# Returns 0 on "ACK id OK".  Works from subshells: ids come from a file.
host_action() {
    _seq=$(( $(cat "$ACK_SEQ_FILE" 2>/dev/null || echo 0) + 1 ))
    echo "$_seq" > "$ACK_SEQ_FILE"
    _id="$_seq.$(now_cs)"
    report "HOSTACTION $_id $*"
    while read -r -t "${HOSTACTION_TIMEOUT:-120}" _ack _got _status _msg <&7; do
        [ "$_ack" = ACK ] && [ "$_got" = "$_id" ] || continue
        [ "$_status" = OK ] && return 0
        echo "host action '$*' failed: $_msg"
        return 1
    done
    echo "host action '$*': no answer within ${HOSTACTION_TIMEOUT:-120}s"
    return 1
}

# must_fail WHAT ERRTEXT command...: the command fails with ERRTEXT in its message.
must_fail() {
    _what=$1
    _err=$2
    shift 2
    if "$@" > /tmp/mf.out 2>&1; then
        echo "$_what: succeeded, should fail with '$_err'"
        return 1
    fi
    grep -q "$_err" /tmp/mf.out && return 0
    echo "$_what: failed, but not with '$_err': $(cat /tmp/mf.out)"
    return 1
}

# wait_until SECS what test...: retry the test every 0.5 s; sets WAITED.
wait_until() {
    _limit=$1
    _what=$2
    shift 2
    _t0=$(now_cs)
    while :; do
        if "$@" > /tmp/wait.out 2>&1; then
            WAITED=$(elapsed_s "$_t0")
            return 0
        fi
        if [ "$(( $(now_cs) - _t0 ))" -ge "$((_limit * 100))" ]; then
            echo "$_what: not after ${_limit}s: $(cat /tmp/wait.out)"
            return 1
        fi
        sleep 0.5
    done
}
