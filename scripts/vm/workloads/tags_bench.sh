# Tagging rate through the Linux NFSv3 client (issue 15): N files tagged one by one with
# `ln -s ../../bulk/fI tag:/bulk/`, against the same number of plain creates with the same
# kind of command: `touch plain/fI` (a new empty file) and `ln -s ../bulk/fI links/` (a new
# symlink in a real directory).  Each loop forks one busybox applet per file, like a shell
# loop a person would write.  Reports INFO lines; the host marks the server's CPU time at
# each phase (host action `mark NAME`, see scripts/benchmarks/bench_tags.py).  Default mount options
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

# each_file FUNCTION: FUNCTION I for I from 0 to N-1 (a loop in the shell itself).
each_file() {
    i=0
    while [ "$i" -lt "$N" ]; do
        "$1" "$i" || return 1
        i=$((i + 1))
    done
}

create_one() { : > "$S/bulk/f$1"; }
touch_one() { touch "$S/plain/f$1"; }
symlink_one() { ln -s "../bulk/f$1" "$S/links/"; }
tag_one() { ln -s "../../bulk/f$1" "$S/tag:/bulk/"; }

check_counts() {
    expect_eq "$(ls "$S/plain" | wc -l)" "$N" "files in plain/" || return 1
    expect_eq "$(ls "$S/links" | wc -l)" "$N" "symlinks in links/" || return 1
    expect_eq "$(ls "$S/tag:/bulk" | wc -l)" "$N" "tagged files in tag:/bulk/"
}

if ! step mount nfs_mount; then
    finish
    exit 1
fi
step dirs mkdir "$S/bulk" "$S/plain" "$S/links"
step sources phase create-shell each_file create_one
step touch phase create-touch each_file touch_one
step symlink phase symlink-real each_file symlink_one
step mkdir_tag mkdir "$S/tag:/bulk"
step tag phase tag-ln-s each_file tag_one
step counts check_counts
step umount umount "$MNT"
finish
