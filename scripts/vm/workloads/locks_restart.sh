# Lock recovery workload: the server restarts (kill -9) while the guest holds a lock.
# vm: debian-tools
#
# The guest's rpc.statd and lockd listen on fixed UDP ports (VM_STATD_PORT, VM_LOCKD_PORT)
# that qemu forwards from the host's loopback, and the host forwards VM_PMAP_PORT to the
# guest's rpcbind: so the server can call the guest back (GRANTED, SM_NOTIFY) as on a real
# network.  A process holds a lock; a third party (a raw-RPC NLM client on the host) is
# refused; the host kills the server with SIGKILL and starts it again; its SM_NOTIFY makes
# the kernel reclaim the lock within the grace period, while the third party is refused even
# on a free range; after the grace period the third party is still refused the reclaimed
# range and served elsewhere, and gets the range once the holder lets go.  Then a lock
# blocked behind a host process is granted by the server's GRANTED callback, and last the
# client's sm-notify (as at its reboot) makes the server drop the client's locks at once.
. /vm/lib.sh

D=$MNT/locks
HOLD=/tmp/holder.out

start_lock_daemons() {
    hostname vmguest
    mkdir -p /run/rpcbind /var/lib/nfs/sm /var/lib/nfs/sm.bak || return 1
    printf %s "$VM_LOCKD_PORT" > /sys/module/lockd/parameters/nlm_udpport || return 1  # no newline: EINVAL
    rpcbind || return 1
    rpc.statd --no-notify -p "$VM_STATD_PORT" || return 1
    sleep 1
    rpcinfo -p 127.0.0.1
}

lock_mount() {
    mount -t nfs -o "vers=3,proto=tcp,mountproto=tcp,port=$VM_NFS_PORT,mountport=$VM_MOUNT_PORT,addr=$NFS_SERVER,mountaddr=$NFS_SERVER" \
        "$NFS_SERVER:$VM_EXPORT" "$MNT" || return 1
    mkdir -p "$D" && : > "$D/reclaim"
}

hold_lock() {
    fcntl_lock "$D/reclaim" w 0 10 nowait 900 > $HOLD &
    echo $! > /tmp/holder.pid
    _i=0
    while ! grep -q LOCKED $HOLD; do
        _i=$((_i + 1)); [ $_i -gt 100 ] && { cat $HOLD; return 1; }
        sleep 0.2
    done
    rpcinfo -p 127.0.0.1 | grep -E "100021|100024"
}

release() {
    kill "$(cat /tmp/holder.pid)"
    wait
}

# The client "reboots": Debian's sm-notify tells the server (SM_NOTIFY to its NSM, found
# through the portmapper at 10.0.2.2:111), which drops the client's locks at once.
client_reboot() {
    fcntl_lock "$D/reclaim" w 100 10 nowait 900 > $HOLD &
    echo $! > /tmp/holder.pid
    _i=0
    while ! grep -q LOCKED $HOLD; do
        _i=$((_i + 1)); [ $_i -gt 100 ] && { cat $HOLD; return 1; }
        sleep 0.2
    done
    host_action nlm locks/reclaim 100 10 NLM4_DENIED || return 1
    ls /var/lib/nfs/sm
    sm-notify -f -d || return 1
    host_action nlm-wait locks/reclaim 100 10 NLM4_GRANTED || return 1
    release
}

# A host process holds [0,10) for 5 s; the guest's F_SETLKW is BLOCKED at the server and
# granted by its GRANTED callback to the guest's lockd (well before the client's 30 s poll).
granted_by_callback() {
    host_action hostlock locks/reclaim 0 10 5 || return 1
    _t0=$(now_cs)
    fcntl_lock "$D/reclaim" w 5 1 wait 0 > /tmp/waiter.out 2>&1 || { cat /tmp/waiter.out; return 1; }
    _dt=$(elapsed_s "$_t0")
    report "INFO granted_by_callback_after_s=$_dt"
    awk -v t="$_dt" 'BEGIN { exit !(t >= 3 && t < 20) }' || { echo "granted after ${_dt}s"; return 1; }
}

step lock_daemons start_lock_daemons
step mount_with_locks lock_mount
step hold_lock hold_lock
step third_party_refused host_action nlm locks/reclaim 0 10 NLM4_DENIED
step server_kill9_restart host_action kill9-restart
step refused_in_grace host_action nlm locks/reclaim 50 10 NLM4_DENIED_GRACE_PERIOD
step reclaimed host_action wait-reclaim
step after_grace host_action wait-grace
step still_ours host_action nlm locks/reclaim 0 10 NLM4_DENIED
step served_after_grace host_action nlm locks/reclaim 50 10 NLM4_GRANTED
step release release
step third_party_gets_it host_action nlm-wait locks/reclaim 0 10 NLM4_GRANTED
step granted_by_callback granted_by_callback
step client_reboot_drops_locks client_reboot
step umount umount "$MNT"
finish
