# Core workload: everyday file-system use through the Linux NFSv3 client.
# Source tree in, diff -r, find, mv, rm -r, ln -s, ln, chmod, touch,
# truncate, a 2000-entry ls -l and a large dd checked by md5 after the cache
# is dropped and the export re-mounted.
#
# Parameters (kernel command line vmtest.NAME=VALUE, here VM_NAME):
#   VM_DD_MB       size of the dd file in MiB (default 100)
#   VM_LS_ENTRIES  entries in the ls -l directory (default 2000)
. /vm/lib.sh

DD_MB=${VM_DD_MB:-100}
LS_N=${VM_LS_ENTRIES:-2000}
REL=vmtest            # our directory, relative to the export root (HOSTCHECK)
W=$MNT/$REL
SRC=/srcdata          # the tree packed into the initramfs
FIXED_DATE='2001-02-03 04:05:06'
FIXED_EPOCH=981173106

md5_of() { md5sum "$1" | cut -d' ' -f1; }

# Fail when something we removed or renamed away is still there.
expect_absent() {
    [ ! -e "$1" ] && [ ! -L "$1" ] && return 0
    echo "still present: $1"
    return 1
}

do_setup() {
    rm -rf "$W" && mkdir "$W" && [ -d "$W" ]
}

do_copy_diff() {
    cp -r "$SRC" "$W/src" || return 1
    drop_caches
    diff -r "$SRC" "$W/src"
}

do_find() {
    (cd "$SRC" && find . | sort) > /tmp/find.want
    (cd "$W/src" && find . | sort) > /tmp/find.got
    if ! cmp /tmp/find.want /tmp/find.got; then
        diff /tmp/find.want /tmp/find.got | head -n 5
        return 1
    fi
    expect_eq "$(find "$W/src" -type f -name '*.c' | wc -l)" \
        "$(find "$SRC" -type f -name '*.c' | wc -l)" "count of *.c files" || return 1
    expect_eq "$(find "$W/src" -type d | wc -l)" \
        "$(find "$SRC" -type d | wc -l)" "count of directories" || return 1
    expect_eq "$(find "$W/src" -name leaf.txt)" "$W/src/deep/a/b/c/d/e/f/leaf.txt" "find -name"
}

do_mv() {
    mv "$W/src/docs" "$W/docs.moved" || return 1              # dir, across parents
    expect_absent "$W/src/docs" || return 1
    diff -r "$SRC/docs" "$W/docs.moved" || return 1
    mv "$W/src/README.txt" "$W/README.renamed" || return 1    # file, across parents
    expect_absent "$W/src/README.txt" || return 1
    cmp "$SRC/README.txt" "$W/README.renamed" || return 1
    cp "$SRC/Makefile" "$W/over.a" && echo old > "$W/over.b" || return 1
    mv "$W/over.a" "$W/over.b" || return 1                    # onto an existing file
    expect_absent "$W/over.a" || return 1
    drop_caches
    cmp "$SRC/Makefile" "$W/over.b" || return 1
    hostcheck absent "$REL/src/docs"
    hostcheck absent "$REL/over.a"
    hostcheck md5 "$REL/over.b" "$(md5_of "$SRC/Makefile")"
    hostcheck md5 "$REL/README.renamed" "$(md5_of "$SRC/README.txt")"
}

do_rm_r() {
    rm -r "$W/docs.moved" "$W/src/deep" || return 1
    expect_absent "$W/docs.moved" || return 1
    expect_absent "$W/src/deep" || return 1
    drop_caches
    expect_absent "$W/src/deep" || return 1
    hostcheck absent "$REL/docs.moved"
    hostcheck absent "$REL/src/deep"
}

do_symlink() {
    ln -s README.renamed "$W/link.rel" || return 1
    ln -s /no/such/target "$W/link.dangling" || return 1
    drop_caches
    expect_eq "$(readlink "$W/link.rel")" README.renamed "readlink link.rel" || return 1
    expect_eq "$(readlink "$W/link.dangling")" /no/such/target "readlink link.dangling" || return 1
    [ -L "$W/link.dangling" ] && [ ! -e "$W/link.dangling" ] || { echo "dangling link wrong"; return 1; }
    cmp "$SRC/README.txt" "$W/link.rel" || return 1
    hostcheck symlink "$REL/link.rel" README.renamed
    hostcheck symlink "$REL/link.dangling" /no/such/target
}

do_hardlink() {
    echo "first line" > "$W/hard.a" || return 1
    ln "$W/hard.a" "$W/hard.b" && ln "$W/hard.a" "$W/hard.c" || return 1
    expect_eq "$(stat -c %h "$W/hard.a")" 3 "nlink after two ln" || return 1
    rm "$W/hard.c" || return 1
    echo "second line" >> "$W/hard.b" || return 1
    drop_caches
    expect_eq "$(stat -c %h "$W/hard.a")" 2 "nlink of hard.a after rm" || return 1
    expect_eq "$(stat -c %h "$W/hard.b")" 2 "nlink of hard.b after rm" || return 1
    expect_eq "$(stat -c %i "$W/hard.b")" "$(stat -c %i "$W/hard.a")" "inode of hard.b" || return 1
    expect_eq "$(wc -l < "$W/hard.a")" 2 "lines seen through hard.a" || return 1
    hostcheck nlink "$REL/hard.a" 2
    hostcheck samefile "$REL/hard.a" "$REL/hard.b"
    hostcheck md5 "$REL/hard.a" "$(md5_of "$W/hard.b")"
}

do_chmod() {
    echo data > "$W/mode.file" && mkdir "$W/mode.dir" || return 1
    for m in 600 755 0 444 640; do
        chmod "$m" "$W/mode.file" || return 1
        drop_caches
        expect_eq "$(stat -c %a "$W/mode.file")" "$m" "mode after chmod $m" || return 1
    done
    chmod 700 "$W/mode.dir" || return 1
    expect_eq "$(stat -c %a "$W/mode.dir")" 700 "directory mode" || return 1
    hostcheck mode "$REL/mode.file" 640
    hostcheck mode "$REL/mode.dir" 700
}

do_touch() {
    touch "$W/touched.new" || return 1
    [ -f "$W/touched.new" ] || { echo "touch did not create"; return 1; }
    expect_eq "$(stat -c %s "$W/touched.new")" 0 "size of touched file" || return 1
    echo keep > "$W/touched.old" || return 1
    touch -d "$FIXED_DATE" "$W/touched.old" "$W/touched.new" || return 1
    drop_caches
    expect_eq "$(stat -c %Y "$W/touched.old")" "$FIXED_EPOCH" "mtime after touch -d" || return 1
    touch "$W/touched.new" || return 1
    drop_caches
    [ "$(stat -c %Y "$W/touched.new")" -gt "$FIXED_EPOCH" ] || { echo "touch did not update mtime"; return 1; }
    hostcheck mtime "$REL/touched.old" "$FIXED_EPOCH"
    hostcheck size "$REL/touched.new" 0
}

do_truncate() {
    cp "$SRC/sizes/size_65537.bin" "$W/trunc.bin" || return 1
    truncate -s 100 "$W/trunc.bin" || return 1
    drop_caches
    expect_eq "$(stat -c %s "$W/trunc.bin")" 100 "size after shrink" || return 1
    head -c 100 "$SRC/sizes/size_65537.bin" | cmp - "$W/trunc.bin" || return 1
    truncate -s 1000000 "$W/trunc.bin" || return 1
    drop_caches
    expect_eq "$(stat -c %s "$W/trunc.bin")" 1000000 "size after grow" || return 1
    expect_eq "$(tail -c 999900 "$W/trunc.bin" | tr -d '\000' | wc -c)" 0 "non-zero bytes in hole" || return 1
    cp "$SRC/Makefile" "$W/trunc.zero" && truncate -s 0 "$W/trunc.zero" || return 1
    expect_eq "$(stat -c %s "$W/trunc.zero")" 0 "size after truncate to 0" || return 1
    hostcheck size "$REL/trunc.bin" 1000000
    hostcheck md5 "$REL/trunc.bin" "$(md5_of "$W/trunc.bin")"
    hostcheck size "$REL/trunc.zero" 0
}

# shellcheck disable=SC2010,SC2012  # listing with ls is the point here
do_ls_many() {
    mkdir "$W/many" || return 1
    i=0
    while [ "$i" -lt "$LS_N" ]; do
        : > "$W/many/entry_$i" || return 1
        i=$((i + 1))
    done
    drop_caches
    expect_eq "$(ls -l "$W/many" | grep -c '^-')" "$LS_N" "files in ls -l" || return 1
    seq 0 $((LS_N - 1)) | sed 's/^/entry_/' | sort > /tmp/many.want
    ls "$W/many" | sort > /tmp/many.got
    cmp /tmp/many.want /tmp/many.got || return 1
    hostcheck count "$REL/many" "$LS_N"
}

# Write DD_MB MiB of random data with dd (conv=fsync: the time includes
# reaching the server), md5 it as the guest sees it, then re-read it twice
# after dropping caches and re-mounting, so every byte comes from the server:
# once timed to /dev/null (md5 under TCG is slower than NFS), once for md5.
remount() {
    drop_caches
    umount "$MNT" && nfs_mount > /dev/null
}

# Bytes this mount has read from the server (NFS client statistics).
server_read_bytes() {
    awk -v m=" $MNT " 'index($0, "mounted on" m) { f = 1 } f && $1 == "bytes:" { print $6; exit }' /proc/self/mountstats
}

do_dd() {
    t0=$(now_cs)
    dd if=/dev/urandom of="$W/big.bin" bs=1048576 count="$DD_MB" conv=fsync 2>/dev/null || return 1
    secs=$(elapsed_s "$t0")
    report "INFO dd_write mb=$DD_MB secs=$secs mb_s=$(mb_per_s "$DD_MB" "$secs") (includes /dev/urandom)"
    want=$(md5_of "$W/big.bin")
    expect_eq "$(stat -c %s "$W/big.bin")" $((DD_MB * 1048576)) "size of big.bin" || return 1
    remount || return 1
    t0=$(now_cs)
    dd if="$W/big.bin" of=/dev/null bs=1048576 2>/dev/null || return 1
    secs=$(elapsed_s "$t0")
    report "INFO dd_read mb=$DD_MB secs=$secs mb_s=$(mb_per_s "$DD_MB" "$secs")"
    remount || return 1
    expect_eq "$(md5_of "$W/big.bin")" "$want" "md5 of big.bin re-read from the server" || return 1
    read_bytes=$(server_read_bytes)
    [ "$read_bytes" -ge $((DD_MB * 1048576)) ] || { echo "only $read_bytes bytes came from the server"; return 1; }
    hostcheck size "$REL/big.bin" $((DD_MB * 1048576))
    hostcheck md5 "$REL/big.bin" "$want"
}

do_manifest() {
    drop_caches
    hostcheck treemd5 "$REL/src" "$(tree_md5 "$W/src")"
}

if ! step mount nfs_mount; then
    finish
    exit 1
fi
report "INFO mounted uptime=$(uptime_s)"
step setup do_setup || { finish; exit 1; }
step copy_diff do_copy_diff
step find do_find
step mv do_mv
step rm_r do_rm_r
step symlink do_symlink
step hardlink do_hardlink
step chmod do_chmod
step touch do_touch
step truncate do_truncate
step ls_many do_ls_many
step dd do_dd
step manifest do_manifest
step umount umount "$MNT"
finish
