# Big directory workload: list a directory of ~100k entries while clients on
# the host create and remove other files in it (scripts/load/bigdir.py runs
# the churn and checks the listings).  Each round drops the caches, lists
# $VM_BIGDIR with one method, times it, and copies the listing into the
# export ($VM_OUT/round-N-METHOD.txt) for the host to check name by name.
#
# Methods, cycled over the rounds:
#   glob  the shell's own readdir of "*" (no stat at all: the rawest listing)
#   ls    ls -1 -A (readdir, then lstat of every entry, as ls does)
#   find  find -maxdepth 1 -mindepth 1
# A churn file removed between readdir and lstat makes ls/find complain and
# exit non-zero; that is expected, so their status is reported, not judged:
# the host checks that every original entry is listed exactly once.
#
# While the directory keeps changing, the kernel revalidates it for every
# lstat (ACCESS and LOOKUP: two round trips per entry, slow in the TCG
# guest), so ls and find take far longer than glob at 100k entries.
#
# Parameters (vmtest.NAME=VALUE): VM_BIGDIR (default bigdir), VM_OUT
# (default bigdir-listings, created), VM_ROUNDS (default 3), VM_METHODS
# (comma list, default glob).
. /vm/lib.sh

D=$MNT/${VM_BIGDIR:-bigdir}
OUT=$MNT/${VM_OUT:-bigdir-listings}
ROUNDS=${VM_ROUNDS:-3}
METHODS=$(echo "${VM_METHODS:-glob}" | tr ',' ' ')

# list_with METHOD: the names in $D, one a line.
list_with() {
    case "$1" in
        glob) (cd "$D" && printf '%s\n' *) ;;
        ls) ls -1 -A "$D" ;;
        find) (cd "$D" && find . -maxdepth 1 -mindepth 1) | sed 's|^\./||' ;;
    esac
}

do_outdir() {
    rm -rf "$OUT" && mkdir "$OUT"
}

do_round() {
    _n=$1
    _m=$2
    case "$_m" in
        glob|ls|find) ;;
        *) echo "unknown listing method $_m"; return 1 ;;
    esac
    drop_caches
    _t0=$(now_cs)
    list_with "$_m" > /tmp/listing 2> /tmp/listing.err
    _rc=$?
    _secs=$(elapsed_s "$_t0")
    _entries=$(wc -l < /tmp/listing)
    _dups=$(sort /tmp/listing | uniq -d | wc -l)
    report "INFO listing round=$_n method=$_m entries=$_entries secs=$_secs duplicates=$_dups rc=$_rc complaints=$(wc -l < /tmp/listing.err)"
    head -n 3 /tmp/listing.err
    cp /tmp/listing "$OUT/round-$_n-$_m.txt"
}

if ! step mount nfs_mount; then
    finish
    exit 1
fi
step outdir do_outdir || { finish; exit 1; }
n=1
while [ "$n" -le "$ROUNDS" ]; do
    for m in $METHODS; do
        [ "$n" -le "$ROUNDS" ] || break
        step "list_$n" do_round "$n" "$m"
        n=$((n + 1))
    done
done
step umount umount "$MNT"
finish
