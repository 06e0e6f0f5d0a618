# fsx through the Linux NFSv3 client: guest/fsx.c's seeded random writes, reads,
# truncates, mmap reads and writes, O_DIRECT reads and writes, fsyncs, page-cache
# invalidations and reopens on one file per seed, each compared with fsx's shadow
# copy as it goes; then, caches dropped, the file read back whole through the
# mount and, by md5, on the host.  Parameters: VM_FSX_SEEDS (comma-separated,
# default 1), VM_FSX_OPS (default 2000), VM_FSX_LEN (largest file size, default
# 262144), VM_FSX_OPLEN (largest single operation, default 65536), VM_FSX_DIRECT
# (1, the default: O_DIRECT reads and writes too, fsx -Z; 0: none),
# VM_MOUNT_OPTS (extra mount options).
# One "INFO fsx seed=S md5=M ops N size Z read=N ..." line per seed: the file's
# expected md5 (the same from every server: fsx is deterministic) and the
# operations fsx ran.
# vm: helper fsx
. /vm/lib.sh

REL=fsx
SEEDS=$(echo "${VM_FSX_SEEDS:-1}" | tr ',' ' ')
OPS=${VM_FSX_OPS:-2000}
LEN=${VM_FSX_LEN:-262144}
OPLEN=${VM_FSX_OPLEN:-65536}
DIRECT=-Z
[ "${VM_FSX_DIRECT:-1}" = 0 ] && DIRECT=

setup() {
    rm -rf "${MNT:?}/$REL" && mkdir "$MNT/$REL"
}

# run_fsx SEED: the random operations, then the file as the server has it.
run_fsx() {
    _f=$MNT/$REL/f$1
    fsx -q $DIRECT -S "$1" -N "$OPS" -l "$LEN" -o "$OPLEN" -W "/tmp/shadow$1" "$_f" > /tmp/fsx.out || return 1
    cat /tmp/fsx.out
    drop_caches
    _want=$(md5sum < "/tmp/shadow$1" | cut -d' ' -f1)
    report "INFO fsx seed=$1 md5=$_want $(sed 's/^fsx: PASS seed [0-9]* //' /tmp/fsx.out)"
    expect_eq "$(md5sum < "$_f" | cut -d' ' -f1)" "$_want" "md5 of f$1 read back after dropping caches" || return 1
    hostcheck md5 "$REL/f$1" "$_want"
    hostcheck size "$REL/f$1" "$(wc -c < "/tmp/shadow$1" | tr -d ' ')"
    rm -f "/tmp/shadow$1"
}

step mount nfs_mount "$VM_MOUNT_OPTS"
step setup setup
for seed in $SEEDS; do
    step "fsx_seed_$seed" run_fsx "$seed"
done
step umount umount "$MNT"
finish
