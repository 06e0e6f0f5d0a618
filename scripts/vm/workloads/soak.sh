# Soak workload: for VM_SOAK_SECONDS, copy the source tree into the export,
# drop the caches, check it (md5 of every file against the original's, then
# diff -r), remove it, and again.  Each iteration reports
# "INFO soak_iter n=N kb=KB secs=S" (scripts/load/soak.py turns them into
# throughput per minute); the first failing iteration stops the loop and
# leaves its copy in place.  The last good copy stays too, and the host
# checks its md5s on disk.
#
# Parameters (vmtest.NAME=VALUE): VM_SOAK_SECONDS (default 600),
# VM_SOAK_DIR (default soak-vm, relative to the export root).
. /vm/lib.sh

SECS=${VM_SOAK_SECONDS:-600}
REL=${VM_SOAK_DIR:-soak-vm}
W=$MNT/$REL
SRC=/srcdata

do_setup() {
    rm -rf "$W" && mkdir "$W" || return 1
    WANT=$(tree_md5 "$SRC")
    KB=$(du -sk "$SRC" | cut -f1)
    echo "source tree: ${KB} KiB, md5 $WANT"
}

do_iteration() {
    rm -rf "$W/cur" || return 1
    cp -r "$SRC" "$W/cur" || return 1
    drop_caches
    _got=$(tree_md5 "$W/cur")
    expect_eq "$_got" "$WANT" "md5 of the copied tree" || return 1
    diff -r "$SRC" "$W/cur"
}

if ! step mount nfs_mount; then
    finish
    exit 1
fi
step setup do_setup || { finish; exit 1; }
_start=$(now_cs)
n=0
while [ "$(( $(now_cs) - _start ))" -lt "$((SECS * 100))" ]; do
    n=$((n + 1))
    _t=$(now_cs)
    if ! step "iter_$n" do_iteration; then
        break
    fi
    report "INFO soak_iter n=$n kb=$KB secs=$(elapsed_s "$_t")"
done
[ "$FAILS" -eq 0 ] && hostcheck treemd5 "$REL/cur" "$WANT"
step umount umount "$MNT"
finish
