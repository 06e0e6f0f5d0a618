# Lock workload: NLM through the kernel client, with no nolock.
# vm: debian-tools
#
# The guest runs Debian's rpcbind and rpc.statd (the kernel's lockd asks statd to monitor
# the server before its first lock), then mounts without nolock: with every port given
# (busybox mount), or with VM_PLAIN=1 with Debian's mount.nfs and no options at
# all (it tries NFSv4 first and must fall back to v3 by itself; the server is then on port
# 2049 and the portmapper on 111).  Then:
#   flock:    a second `flock -n` fails while the first holds the lock, works after it;
#   ranges:   fcntl byte ranges conflict and do not as POSIX says (fcntl_lock helper);
#   blocked:  a waiting F_SETLKW is granted once the holder lets go;
#   sqlite:   two concurrent sqlite3 writers in the guest and a third on the server host (on
#             the real file), every row there, PRAGMA integrity_check ok;
#   hostlock: a lock taken by a process on the server host keeps the client out, and the
#             client's lock keeps a host process out (host actions hostlock/hosttrylock).
. /vm/lib.sh

D=$MNT/locks
HOLD=/tmp/holder.out

start_lock_daemons() {
    hostname vmguest
    mkdir -p /run/rpcbind /var/lib/nfs/sm /var/lib/nfs/sm.bak || return 1
    rpcbind || return 1
    rpc.statd --no-notify || return 1
    sleep 1
    rpcinfo -p 127.0.0.1
}

lock_mount() {
    if [ "$VM_PLAIN" != 1 ]; then
        mount -t nfs -o "vers=3,proto=tcp,mountproto=tcp,port=$VM_NFS_PORT,mountport=$VM_MOUNT_PORT,addr=$NFS_SERVER,mountaddr=$NFS_SERVER" \
            "$NFS_SERVER:$VM_EXPORT" "$MNT" || return 1
    else
        mount.nfs "$NFS_SERVER:$VM_EXPORT" "$MNT" || return 1
    fi
    _line=$(grep " $MNT nfs " /proc/mounts) || return 1
    echo "$_line"
    case "$_line" in *nolock*) echo "mounted with nolock"; return 1 ;; esac
    report "INFO mounted: $(echo "$_line" | cut -d' ' -f3,4)"
    mkdir -p "$D"
}

# wait_for FILE TEXT: until FILE holds TEXT (20 s at most)
wait_for() {
    _i=0
    while ! grep -q "$2" "$1" 2>/dev/null; do
        _i=$((_i + 1))
        [ $_i -gt 100 ] && { echo "no '$2' in $1: $(cat "$1" 2>/dev/null)"; return 1; }
        sleep 0.2
    done
}

# try EXPECTED_RC fcntl_lock args...: one non-waiting attempt with the expected outcome
try() {
    _want=$1
    shift
    fcntl_lock "$@" > /tmp/try.out 2>&1
    _rc=$?
    [ "$_rc" = "$_want" ] && return 0
    echo "fcntl_lock $*: rc=$_rc ($(cat /tmp/try.out)), expected $_want"
    return 1
}

flock_excludes() {
    : > "$D/flockfile" || return 1
    rm -f /tmp/flock.state
    /usr/bin/flock -n "$D/flockfile" -c 'echo held > /tmp/flock.state; sleep 6' &
    _pid=$!
    wait_for /tmp/flock.state held || return 1
    if /usr/bin/flock -n "$D/flockfile" true; then
        echo "a second flock -n got the lock while the first held it"
        return 1
    fi
    wait $_pid
    /usr/bin/flock -n "$D/flockfile" true || { echo "flock -n failed after release"; return 1; }
}

fcntl_ranges() {
    F=$D/ranges
    : > "$F" || return 1
    fcntl_lock "$F" w 0 100 nowait 30 > $HOLD &
    _pid=$!
    wait_for $HOLD LOCKED || return 1
    try 1 "$F" w 50 10 nowait 0 || return 1      # inside: refused
    try 1 "$F" r 99 1 nowait 0 || return 1       # the last byte: refused, even shared
    try 0 "$F" w 100 10 nowait 0 || return 1     # right after it: free
    try 0 "$F" r 100 0 nowait 0 || return 1      # to end of file from there: free
    try 1 "$F" w 0 0 nowait 0 || return 1        # the whole file: refused
    kill $_pid; wait $_pid
    fcntl_lock "$F" r 0 10 nowait 30 > $HOLD &
    _pid=$!
    wait_for $HOLD LOCKED || return 1
    try 0 "$F" r 5 1 nowait 0 || return 1        # shared with shared: fine
    try 1 "$F" w 5 1 nowait 0 || return 1        # exclusive against shared: refused
    try 0 "$F" w 10 1 nowait 0 || return 1
    kill $_pid; wait $_pid
    try 0 "$F" w 0 0 nowait 0                    # all released
}

blocked_is_granted() {
    F=$D/blocked
    : > "$F" || return 1
    fcntl_lock "$F" w 0 10 nowait 4 > $HOLD &
    _pid=$!
    wait_for $HOLD LOCKED || return 1
    _t0=$(now_cs)
    fcntl_lock "$F" w 5 1 wait 0 > /tmp/waiter.out 2>&1 || { echo "waiter: $(cat /tmp/waiter.out)"; return 1; }
    _dt=$(elapsed_s "$_t0")
    wait $_pid
    report "INFO blocked_lock_granted_after_s=$_dt"
    # it waited for the holder (4 s) and no longer than the client's 30 s re-poll plus slack
    awk -v t="$_dt" 'BEGIN { exit !(t >= 2 && t < 45) }' || { echo "granted after ${_dt}s"; return 1; }
}

sqlite_writer() {
    _i=1
    while [ $_i -le "$2" ]; do
        echo "INSERT INTO t VALUES($1, $_i, hex(randomblob(200)));"
        _i=$((_i + 1))
    done | sqlite3 -cmd ".timeout 120000" "$D/db.sqlite"
}

sqlite_concurrent() {
    N=${VM_SQLITE_ROWS:-100}
    rm -f "$D/db.sqlite" "$D/db.sqlite-journal"
    sqlite3 "$D/db.sqlite" "CREATE TABLE t(w INTEGER, i INTEGER, pad TEXT);" || return 1
    _t0=$(now_cs)
    # a third writer on the server host, on the real file (its fcntl locks meet ours there)
    host_action sqlite-writer locks/db.sqlite 3 "$N" || return 1
    sqlite_writer 1 "$N" > /tmp/w1.out 2>&1 &
    _p1=$!
    sqlite_writer 2 "$N" > /tmp/w2.out 2>&1 &
    _p2=$!
    wait $_p1 || { echo "writer 1: $(cat /tmp/w1.out)"; return 1; }
    wait $_p2 || { echo "writer 2: $(cat /tmp/w2.out)"; return 1; }
    host_action sqlite-writer-wait || return 1
    report "INFO sqlite_three_writers_rows=$((3 * N)) seconds=$(elapsed_s "$_t0")"
    drop_caches
    expect_eq "$(sqlite3 "$D/db.sqlite" 'SELECT count(*), count(DISTINCT w || "." || i) FROM t;')" "$((3 * N))|$((3 * N))" "rows" || return 1
    expect_eq "$(sqlite3 "$D/db.sqlite" 'PRAGMA integrity_check;')" "ok" "integrity_check" || return 1
    host_action sqlite-check locks/db.sqlite $((3 * N))
}

host_and_client_exclude() {
    F=$D/shared
    : > "$F" || return 1
    host_action hostlock locks/shared 0 10 6 || return 1   # a host process holds [0,10) for 6 s
    try 1 "$F" w 5 1 nowait 0 || return 1
    try 0 "$F" w 10 5 nowait 0 || return 1
    fcntl_lock "$F" w 5 1 wait 0 > /tmp/waiter.out 2>&1 || { echo "waiter: $(cat /tmp/waiter.out)"; return 1; }
    fcntl_lock "$F" w 20 10 nowait 30 > $HOLD &
    _pid=$!
    wait_for $HOLD LOCKED || return 1
    host_action hosttrylock locks/shared 25 1 || return 1  # OK: the host process was refused
    kill $_pid; wait $_pid
    host_action hosttrylock locks/shared 25 1 free         # and is served once it is free
}

step lock_daemons start_lock_daemons
step mount_with_locks lock_mount
step flock_excludes flock_excludes
step fcntl_ranges fcntl_ranges
step blocked_is_granted blocked_is_granted
step sqlite_concurrent sqlite_concurrent
step host_and_client_exclude host_and_client_exclude
step umount umount "$MNT"
finish
