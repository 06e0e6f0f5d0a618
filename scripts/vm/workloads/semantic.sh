# Semantic workload: pysfsd's query directories through the Linux NFSv3 client.
#
# Expects the tree of tests/vm_support.py (SEMANTIC_TREE) in the export root,
# owned by $VM_OWNER (default root) and indexed before the VM boots:
#   top.c notes.txt readme.md  src/{a.c,b.c,c.c,util.h,README}  lib/{a.c,x.py}
# (python -m tests.vm_support semantic-tree EXPORT, then start the server).
# Needs host actions (write, rm, restart): run through tests/vm/test_vm_semantic.py
# or a runner given a "restart" callback.
#
# Mounted with noac: a query directory aliases real files, and the kernel
# cannot know that a change in lib/ changes ext:/c, nor that a change made
# through src/:extension=.c changes src/.  With attribute caching on, it would
# trust its cached listing of the other directory for up to acdirmax (60 s).
# noac makes every listing revalidate the directory's attributes (GETATTR), so
# "the next listing" really asks the server; changes made behind the server's
# back are then polled for up to $RETRY_S seconds (the server promises 2 s).
#
# Parameters (VM_NAME): VM_OWNER and VM_OWNER_UID (the user owning the tree,
# default root and 0),
# VM_RETRY_S (seconds to wait for a change made on the host, default 10).
. /vm/lib.sh

S=$MNT                      # the scope: the export root, where the tree is
OWNER=${VM_OWNER:-root}
OWNER_UID=${VM_OWNER_UID:-0}
RETRY_S=${VM_RETRY_S:-10}

# list DIR: its names (ls -1, no dot entries), sorted, on one line.
list() {
    ls -1 "$1" > /tmp/list.raw || return 1
    sort /tmp/list.raw | tr '\n' ' ' | sed 's/ $//'
}

# has LIST NAME... / lacks LIST NAME...: membership in a list's words.
has() {
    _l=$1
    shift
    for _n in "$@"; do
        case " $_l " in *" $_n "*) ;; *) echo "'$_n' missing from [$_l]"; return 1 ;; esac
    done
}
lacks() {
    _l=$1
    shift
    for _n in "$@"; do
        case " $_l " in *" $_n "*) echo "'$_n' should not be in [$_l]"; return 1 ;; esac
    done
}

# Clash names (a~HHHHHH.c) in a list.
clashes() { echo "$1" | tr ' ' '\n' | grep -E '^a~[0-9a-fA-F]{6}\.c$' | tr '\n' ' ' | sed 's/ $//'; }

md5_of() { md5sum "$1" | cut -d' ' -f1; }

write_through() { echo "$2" > "$1"; }    # a shell redirection, for must_fail

do_tree() {
    for f in top.c notes.txt readme.md src/a.c src/b.c src/c.c src/util.h src/README lib/a.c lib/x.py; do
        [ -f "$S/$f" ] || { echo "tree incomplete: no $f (see tests/vm_support.py)"; return 1; }
    done
    # the guest has no /etc/passwd: compare the uid
    expect_eq "$(stat -c %u "$S/src/a.c")" "$OWNER_UID" "uid of src/a.c" || return 1
    # query directories are never listed in real directories
    for d in "$S" "$S/src" "$S/lib"; do
        _l=$(ls -1a "$d") || return 1
        if echo "$_l" | grep ':'; then
            echo "a query directory is listed in $d"
            return 1
        fi
    done
}

do_owner_values() {
    L=$(cd "$S" && list owner:/) || return 1
    has "$L" "$OWNER"
}

do_owner_ext() {
    D="$S/owner:/$OWNER/ext:/c/"
    L=$(list "$D") || return 1
    echo "owner:/$OWNER/ext:/c: $L"
    has "$L" top.c b.c c.c || return 1
    lacks "$L" util.h README x.py notes.txt a.c || return 1
    expect_eq "$(clashes "$L" | wc -w)" 2 "clash names for src/a.c and lib/a.c" || return 1
    expect_eq "$(echo "$L" | wc -w)" 5 "entries" || return 1
    for n in $L; do
        [ -L "$D$n" ] || { echo "$n is not a symbolic link"; return 1; }
    done
    expect_eq "$(readlink "${D}top.c")" ../../../../top.c "readlink top.c" || return 1
    expect_eq "$(readlink "${D}b.c")" ../../../../src/b.c "readlink b.c"
}

do_cat_result() {
    D="$S/owner:/$OWNER/ext:/c"
    cmp "$D/top.c" "$S/top.c" || return 1
    cmp "$D/b.c" "$S/src/b.c" || return 1
    expect_eq "$(cat "$D/b.c")" "static int helper(void) { return 0; }" "b.c through its result link" || return 1
    hostcheck md5 top.c "$(md5_of "$D/top.c")"
    hostcheck md5 lib/a.c "$(md5_of "$S/lib/a.c")"
}

do_order_free() {
    L1=$(list "$S/owner:/$OWNER/ext:/c") || return 1
    L2=$(list "$S/ext:/c/owner:/$OWNER") || return 1
    expect_eq "$L2" "$L1" "ext:/c/owner:/$OWNER listing" || return 1
    I1=$(stat -c %i "$S/owner:/$OWNER/ext:/c") || return 1
    I2=$(stat -c %i "$S/ext:/c/owner:/$OWNER") || return 1
    echo "inodes: $I1 $I2"
    expect_eq "$I2" "$I1" "inode of the two orders" || return 1
    # a field used twice on one path is refused
    must_fail "owner: twice" "No such file" ls "$S/owner:/$OWNER/owner:" || return 1
    must_fail "ext: twice" "No such file" ls "$S/ext:/c/owner:/$OWNER/ext:"
}

do_clash() {
    L1=$(list "$S/ext:/c") || return 1
    C1=$(clashes "$L1")
    expect_eq "$(echo "$C1" | wc -w)" 2 "clash names in ext:/c [$L1]" || return 1
    drop_caches
    L2=$(list "$S/ext:/c") || return 1
    expect_eq "$(clashes "$L2")" "$C1" "clash names on a second listing" || return 1
    T=$(for n in $C1; do readlink "$S/ext:/c/$n"; done | sort | tr '\n' ' ')
    expect_eq "$T" "../../lib/a.c ../../src/a.c " "targets of the clash names" || return 1
    for n in $C1; do
        case "$(readlink "$S/ext:/c/$n")" in
            ../../lib/a.c) cmp "$S/ext:/c/$n" "$S/lib/a.c" || return 1 ;;
            *) cmp "$S/ext:/c/$n" "$S/src/a.c" || return 1 ;;
        esac
    done
    CLASH_NAMES=$C1
}

do_read_only() {
    D="$S/ext:/c"
    must_fail "rm in ext:/c" "Read-only file system" rm "$D/top.c" || return 1
    must_fail "create in ext:/c" "Read-only file system" write_through "$D/z.c" "int z;" || return 1
    must_fail "mv in ext:/c" "Read-only file system" mv "$D/top.c" "$D/q.c" || return 1
    if [ ! -f "$S/top.c" ] || [ -e "$S/z.c" ] || [ -e "$S/q.c" ]; then
        echo "real files changed"
        return 1
    fi
    hostcheck absent z.c
    hostcheck absent q.c
}

do_type_escape() {
    L=$(list "$S/type:") || return 1
    echo "type: $L"
    T=$(echo "$L" | tr ' ' '\n' | grep '%2F' | head -n 1)
    [ -n "$T" ] || { echo "no MIME value with %2F"; return 1; }
    L=$(list "$S/type:/$T") || return 1
    [ -n "$L" ] || { echo "type:/$T is empty"; return 1; }
}

# The query language (issue 12) through the kernel client: OR, NOT, case, a range, a
# pattern (all quoted: the shell must not glob them), and value-directory sizes that count
# results at the first listing of the field directory (ls -l ext: is a faceted summary).
do_query_language() {
    L=$(list "$S/src/ext:/c|h") || return 1
    expect_eq "$L" "a.c b.c c.c util.h" "src/ext:/c|h" || return 1
    L=$(list "$S/src/ext:/!c") || return 1
    expect_eq "$L" "README util.h" "src/ext:/!c" || return 1
    I1=$(stat -c %i "$S/src/ext:/c|h") || return 1
    I2=$(stat -c %i "$S/src/ext:/H|C") || return 1
    expect_eq "$I2" "$I1" "inode of c|h and H|C" || return 1
    L=$(list "$S/src/size:/>20") || return 1
    expect_eq "$L" "a.c b.c" "src/size:/>20" || return 1
    L=$(list "$S/src/name:/[ab]*") || return 1
    expect_eq "$L" "a.c b.c" "src/name:/[ab]*" || return 1
    must_fail "a malformed range" "No such file" ls "$S/size:/>lots" || return 1
    N=$(ls -l "$S/ext:" | awk '$NF == "c" { print $5 }')
    expect_eq "$N" 5 "size of ext:/c in ls -l ext:" || return 1
    N=$(ls -l "$S/src/ext:" | awk '$NF == "h" { print $5 }')
    expect_eq "$N" 1 "size of src/ext:/h in ls -l src/ext:"
}

do_lab_root() {
    V="$S/:extension=.c"
    expect_eq "$(list "$V")" "top.c" ":extension=.c in the export root" || return 1
    echo "int rootnew;" > "$V/rootnew.c" || return 1
    has "$(list "$S")" rootnew.c top.c || return 1
    expect_eq "$(cat "$S/rootnew.c")" "int rootnew;" "rootnew.c in the real directory" || return 1
    expect_eq "$(list "$V")" "rootnew.c top.c" ":extension=.c after a create" || return 1
    must_fail "create bad.h through :extension=.c" "Invalid argument" write_through "$V/bad.h" x || return 1
    [ ! -e "$S/bad.h" ] || { echo "bad.h was created"; return 1; }
    lacks "$(list "$V")" notes.txt readme.md bad.h || return 1
    hostcheck md5 rootnew.c "$(echo "int rootnew;" | md5sum | cut -d' ' -f1)"
    hostcheck absent bad.h
}

do_lab_subdir() {
    V="$S/src/:extension=.c"
    expect_eq "$(list "$V")" "a.c b.c c.c" "src/:extension=.c" || return 1
    # write, then read through the view and through the real directory
    echo "int c_value = 33;" > "$V/c.c" || return 1
    expect_eq "$(cat "$V/c.c")" "int c_value = 33;" "c.c read back through the view" || return 1
    drop_caches
    expect_eq "$(cat "$S/src/c.c")" "int c_value = 33;" "src/c.c after a write through the view" || return 1
    # create: appears in the real directory
    echo "int made;" > "$V/made.c" || return 1
    has "$(list "$S/src")" made.c || return 1
    must_fail "create made.h through the view" "Invalid argument" write_through "$V/made.h" x || return 1
    # remove: gone from the real directory
    rm "$V/b.c" || return 1
    lacks "$(list "$S/src")" b.c || return 1
    # rename: renamed in the real directory
    mv "$V/made.c" "$V/moved.c" || return 1
    L=$(list "$S/src") || return 1
    has "$L" moved.c a.c c.c util.h README || return 1
    lacks "$L" made.c made.h b.c || return 1
    expect_eq "$(cat "$S/src/moved.c")" "int made;" "moved.c" || return 1
    # other endings never show
    expect_eq "$(list "$V")" "a.c c.c moved.c" "src/:extension=.c at the end" || return 1
    hostcheck md5 src/c.c "$(echo "int c_value = 33;" | md5sum | cut -d' ' -f1)"
    hostcheck md5 src/moved.c "$(echo "int made;" | md5sum | cut -d' ' -f1)"
    hostcheck absent src/made.c
    hostcheck absent src/made.h
    hostcheck absent src/b.c
}

do_through_mount() {
    echo "int fresh;" > "$S/lib/new.c" || return 1
    L=$(list "$S/ext:/c") || return 1
    if ! has "$L" new.c moved.c rootnew.c || ! lacks "$L" b.c; then
        wait_until "$RETRY_S" "ext:/c catching up" in_ext_c new.c \
            && echo "(new.c showed only after ${WAITED}s)"
        return 1
    fi
    has "$(list "$S/owner:/$OWNER/ext:/c")" new.c || return 1
    expect_eq "$(cat "$S/ext:/c/new.c")" "int fresh;" "new.c through its result link"
}

# What the Linux client does by default (close-to-open, attribute caching on): a
# second mount without noac.  Opening ext:/c revalidates it with a GETATTR, and the
# client keeps its cached listing unless mtime or size changed, so a file created
# through the mount must show in the very next listing (issue 11: the attributes
# were those of the results before the server applied its queued index notes).
do_fresh_cto() {
    _mnt=$MNT
    MNT=/tmp/cto
    mkdir -p "$MNT"
    nfs_mount > /dev/null
    _rc=$?
    MNT=$_mnt
    [ "$_rc" -eq 0 ] || { echo "second mount (defaults) failed"; return 1; }
    C=/tmp/cto
    list "$C/ext:/c" > /dev/null || { umount /tmp/cto; return 1; }
    _ok=0
    for i in 1 2 3 4 5; do
        echo "int fresh$i(void);" > "$C/fresh$i.c" || break
        _l=$(list "$C/ext:/c") || break
        has "$_l" "fresh$i.c" || break
        rm "$C/fresh$i.c" || break
        _l=$(list "$C/ext:/c") || break
        lacks "$_l" "fresh$i.c" || break
        _ok=$i
    done
    rm -f "$C"/fresh*.c
    umount /tmp/cto
    expect_eq "$_ok" 5 "rounds of create-then-list and remove-then-list on a default mount"
}

# in_ext_c NAME / not_in_ext_c NAME: a listing of ext:/c (fails if ls fails).
in_ext_c() { _l=$(list "$S/ext:/c") && has "$_l" "$1"; }
not_in_ext_c() { _l=$(list "$S/ext:/c") && lacks "$_l" "$1"; }

do_behind_back() {
    list "$S/ext:/c" > /dev/null || return 1   # the client has a listing to invalidate
    host_action write lib/behind.c "int behind;" || return 1
    wait_until "$RETRY_S" "behind.c in ext:/c" in_ext_c behind.c || return 1
    report "INFO behind_create_visible secs=$WAITED"
    expect_eq "$(cat "$S/ext:/c/behind.c")" "int behind;" "behind.c through its result link" || return 1
    host_action rm lib/behind.c || return 1
    wait_until "$RETRY_S" "behind.c gone from ext:/c" not_in_ext_c behind.c || return 1
    report "INFO behind_remove_visible secs=$WAITED"
    hostcheck absent lib/behind.c
}

# The subshell keeps its cwd (the kernel's handle of ext:/c) across the
# restart; drop_caches forgets the cached listing and the unpinned dentries,
# so the listing and the lookups below go to the new server with old handles.
do_restart() {
    BEFORE=$(list "$S/ext:/c") || return 1
    INO=$(stat -c %i "$S/ext:/c") || return 1
    (
        cd "$S/ext:/c" || exit 1
        host_action restart || exit 1
        drop_caches
        AFTER=$(list .) || exit 1
        expect_eq "$AFTER" "$BEFORE" "ext:/c listed through the pre-restart handle" || exit 1
        expect_eq "$(stat -c %i .)" "$INO" "inode of the cwd" || exit 1
        expect_eq "$(cat top.c)" "int top(void) { return 1; }" "top.c through the cwd" || exit 1
        cmp new.c "$S/lib/new.c" || exit 1
        for n in $CLASH_NAMES; do
            [ -L "$n" ] || { echo "clash name $n gone after restart"; exit 1; }
        done
    )
}

if ! step mount nfs_mount noac; then
    finish
    exit 1
fi
step tree do_tree || { finish; exit 1; }
step owner_values do_owner_values
step owner_ext do_owner_ext
step cat_result do_cat_result
step order_free do_order_free
step clash do_clash
step read_only do_read_only
step type_escape do_type_escape
step query_language do_query_language
step lab_root do_lab_root
step lab_subdir do_lab_subdir
step through_mount do_through_mount
step fresh_cto do_fresh_cto
step behind_back do_behind_back
step restart do_restart
step umount umount "$MNT"
finish
