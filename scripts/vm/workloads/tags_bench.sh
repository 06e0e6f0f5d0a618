# Tagging rate through the Linux NFSv3 client (issue 15): N files tagged one by one with
# `ln -s ../../bulk/fI tag:/bulk/`, against the same number of plain creates with the same
# kind of command: `touch plain/fI` (a new empty file) and `ln -s ../bulk/fI links/` (a new
# symlink in a real directory).  Each loop forks one busybox applet per file, like a shell
# loop a person would write.  Reports INFO lines; the host marks the server's CPU time at
# each phase (host action `mark NAME`, see scripts/bench_tags.py).  Default mount options
# (attribute caching on), as people mount.  VM_TAG_N: the number of files (default 10000).
. /vm/lib.sh

S=$MNT
N=${VM_TAG_N:-10000}

# phase NAME COMMAND...: time COMMAND between two host marks; reports its seconds.
phase() {
    _phase=$1
    shift
    host_action mark "$_phase-start" || return 1
    _t0=$(now_cs)
    "$@" || return 1
    _dt=$(elapsed_s "$_t0")
    host_action mark "$_phase-end" || return 1
    report "INFO phase=$_phase files=$N secs=$_dt"
}

make_sources() {
    mkdir "$S/bulk" "$S/plain" "$S/links" || return 1
    i=0
    while [ "$i" -lt "$N" ]; do
        : > "$S/bulk/f$i" || return 1
        i=$((i + 1))
    done
}

touch_loop() {
    i=0
    while [ "$i" -lt "$N" ]; do
        touch "$S/plain/f$i" || return 1
        i=$((i + 1))
    done
}

symlink_loop() {
    i=0
    while [ "$i" -lt "$N" ]; do
        ln -s "../bulk/f$i" "$S/links/" || return 1
        i=$((i + 1))
    done
}

tag_loop() {
    i=0
    while [ "$i" -lt "$N" ]; do
        ln -s "../../bulk/f$i" "$S/tag:/bulk/" || return 1
        i=$((i + 1))
    done
}

check_counts() {
    expect_eq "$(ls "$S/plain" | wc -l)" "$N" "files in plain/" || return 1
    expect_eq "$(ls "$S/links" | wc -l)" "$N" "symlinks in links/" || return 1
    expect_eq "$(ls "$S/tag:/bulk" | wc -l)" "$N" "tagged files in tag:/bulk/"
}

if ! step mount nfs_mount; then
    finish
    exit 1
fi
step sources phase create-shell make_sources
step touch phase create-touch touch_loop
step symlink phase symlink-real symlink_loop
step mkdir_tag mkdir "$S/tag:/bulk"
step tag phase tag-ln-s tag_loop
step counts check_counts
step umount umount "$MNT"
finish
