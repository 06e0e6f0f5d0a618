# Tags workload (issue 15): tags set with ordinary commands through the Linux NFSv3 client.
#
# Expects in the export root, indexed before the VM boots (tests/vm/test_vm_tags.py writes it):
#   photos/beach.jpg photos/city.jpg (JPEG headers)  docs/tax.txt  (root's, 0644)
#   docs/mine.txt (uid 1001's, 0644)
# Needs host actions mv and cp-a (tests/vm/test_vm_tags.py defines them).
#
# mkdir / ln -s / ln / rm / mv / rmdir in tag: directories; a tag query combined with
# transducer fields (ext, type); tags kept when the file moves through the mount and
# behind the server's back, and when the host copies it with cp -a; a user who cannot
# write a file cannot tag it (setpriv to uid 1001).  Mounted with noac, as semantic.sh,
# so every listing asks the server.  VM_RETRY_S: seconds to wait for a change made on the
# host (default 10).
. /vm/lib.sh

S=$MNT
RETRY_S=${VM_RETRY_S:-10}

list() {
    ls -1 "$1" > /tmp/list.raw || return 1
    sort /tmp/list.raw | tr '\n' ' ' | sed 's/ $//'
}

# listed DIR EXPECTED: the sorted listing of DIR is exactly EXPECTED.
listed() { [ "$(list "$1")" = "$2" ]; }

# expect_list DIR EXPECTED
expect_list() { expect_eq "$(list "$1")" "$2" "listing of $1"; }

# as_other COMMAND ARGS...: run a busybox applet as uid/gid 1001 (busybox has no setpriv
# --reuid; a pid file nobody wrote keeps start-stop-daemon from finding busybox running).
# The guest has no /etc/passwd: give uid 1001 a name there first.
as_other() {
    grep -q '^other:' /etc/passwd 2>/dev/null || {
        mkdir -p /etc
        echo "other:x:1001:1001:other:/tmp:/bin/sh" >> /etc/passwd
        echo "other:x:1001:" >> /etc/group
    }
    start-stop-daemon -S -p /tmp/as_other.pid -c 1001:1001 -x /bin/busybox -- "$@"
}

do_mkdir() {
    expect_list "$S/tag:" "" || return 1
    mkdir "$S/tag:/vacation" || return 1
    expect_list "$S/tag:" "vacation" || return 1
    expect_list "$S/tag:/vacation" "" || return 1
    [ -d "$S/tag:/vacation" ] || { echo "tag:/vacation is not a directory"; return 1; }
    must_fail "mkdir of an existing tag" "exists" mkdir "$S/tag:/vacation"
}

do_symlink() {
    ln -s ../../photos/beach.jpg "$S/tag:/vacation/" || return 1
    expect_list "$S/tag:/vacation" "beach.jpg" || return 1
    expect_eq "$(readlink "$S/tag:/vacation/beach.jpg")" ../../photos/beach.jpg "readlink" || return 1
    cmp "$S/tag:/vacation/beach.jpg" "$S/photos/beach.jpg" || return 1
    expect_list "$S/photos" "beach.jpg city.jpg" || return 1
    hostcheck absent beach.jpg
    hostcheck absent tag:
}

do_hardlink() {
    ln "$S/photos/city.jpg" "$S/tag:/vacation/" || return 1
    expect_list "$S/tag:/vacation" "beach.jpg city.jpg" || return 1
    expect_eq "$(stat -c %h "$S/photos/city.jpg")" 1 "link count of city.jpg" || return 1
    hostcheck nlink photos/city.jpg 1
}

do_combined() {
    expect_list "$S/tag:/vacation/ext:/jpg" "beach.jpg city.jpg" || return 1
    expect_list "$S/tag:/vacation/type:/image%2Fjpeg" "beach.jpg city.jpg" || return 1
    expect_list "$S/type:/image%2Fjpeg/tag:/vacation" "beach.jpg city.jpg" || return 1
    expect_list "$S/ext:/jpg/tag:" "vacation" || return 1
    expect_list "$S/ext:/txt/tag:" "" || return 1
    expect_eq "$(readlink "$S/ext:/jpg/tag:/vacation/city.jpg")" ../../../../photos/city.jpg "readlink"
}

do_mv_tag() {
    mkdir "$S/tag:/2025" || return 1
    mv "$S/tag:/vacation/beach.jpg" "$S/tag:/2025/" || return 1
    expect_list "$S/tag:/vacation" "city.jpg" || return 1
    expect_list "$S/tag:/2025" "beach.jpg" || return 1
    expect_list "$S/photos" "beach.jpg city.jpg"
}

do_rm_rmdir() {
    must_fail "rmdir of a tag still carried" "not empty" rmdir "$S/tag:/vacation" || return 1
    rm "$S/tag:/vacation/city.jpg" || return 1
    expect_list "$S/tag:/vacation" "" || return 1
    [ -f "$S/photos/city.jpg" ] || { echo "rm of the tag removed the file"; return 1; }
    hostcheck size photos/city.jpg "$(stat -c %s "$S/photos/city.jpg")"
    rmdir "$S/tag:/vacation" || return 1
    expect_list "$S/tag:" "2025"
}

do_read_only() {
    must_fail "rm in ext:/jpg" "Read-only file system" rm "$S/ext:/jpg/city.jpg" || return 1
    must_fail "ln -s into ext:/jpg" "Read-only file system" ln -s ../../docs/tax.txt "$S/ext:/jpg/" || return 1
    must_fail "mkdir in ext:" "Read-only file system" mkdir "$S/ext:/png"
}

do_moves() {
    mv "$S/photos/beach.jpg" "$S/docs/sea.jpg" || return 1
    expect_list "$S/tag:/2025" "sea.jpg" || return 1
    host_action mv docs/sea.jpg shore.jpg || return 1
    wait_until "$RETRY_S" "shore.jpg in tag:/2025" listed "$S/tag:/2025" "shore.jpg" || return 1
    report "INFO behind_move_visible secs=$WAITED"
    cmp "$S/tag:/2025/shore.jpg" "$S/shore.jpg"
}

do_cp_a() {
    host_action cp-a shore.jpg docs/copy.jpg || return 1
    wait_until "$RETRY_S" "copy.jpg in tag:/2025" listed "$S/tag:/2025" "copy.jpg shore.jpg" || return 1
    report "INFO behind_copy_visible secs=$WAITED"
}

do_permission() {
    must_fail "ln -s by a user who cannot write city.jpg" "Permission denied" \
        as_other ln -s ../../photos/city.jpg "$S/tag:/2025/" || return 1
    # (the client's kernel may refuse first: fs.protected_hardlinks, EPERM)
    must_fail "ln by a user who cannot write city.jpg" "Permission denied\|not permitted" \
        as_other ln "$S/photos/city.jpg" "$S/tag:/2025/" || return 1
    expect_list "$S/tag:/2025" "copy.jpg shore.jpg" || return 1
    as_other ln -s ../../docs/mine.txt "$S/tag:/2025/" || return 1
    expect_list "$S/tag:/2025" "copy.jpg mine.txt shore.jpg" || return 1
    must_fail "rm of root's tag by another user" "Permission denied" \
        as_other rm -f "$S/tag:/2025/shore.jpg" || return 1
    as_other rm "$S/tag:/2025/mine.txt" || return 1
    expect_list "$S/tag:/2025" "copy.jpg shore.jpg"
}

if ! step mount nfs_mount noac; then
    finish
    exit 1
fi
step mkdir do_mkdir
step symlink do_symlink
step hardlink do_hardlink
step combined do_combined
step mv_tag do_mv_tag
step rm_rmdir do_rm_rmdir
step read_only do_read_only
step moves do_moves
step cp_a do_cp_a
step permission do_permission
step umount umount "$MNT"
finish
