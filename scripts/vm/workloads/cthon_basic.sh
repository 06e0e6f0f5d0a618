# A cthon04 "basic"-style pass through the Linux NFSv3 client (our own script
# after the ideas of its tests 1-9): build a tree of LEVELS levels, each
# directory with FILES files and DIRS subdirectories (VM_CTHON_LEVELS/FILES/
# DIRS, default 3/5/3), stat and read every file, count every directory's
# entries, look names up from deep inside, chmod and utimes, write and read a
# 1 MiB file, list a 200-entry directory while removing half of it, rename
# within and across directories (over an existing file, a directory too), hard
# links and their nlink, symlinks and readlink, a file read through its
# descriptor after rm and mv, O_EXCL creates, statfs, then remove the tree.
# Each step is checked in the guest (caches dropped where the server must be
# asked) and what stays is checked on the host (HOSTCHECK).
. /vm/lib.sh

REL=cthon
B=$MNT/$REL
LEVELS=${VM_CTHON_LEVELS:-3}
FILES=${VM_CTHON_FILES:-5}
DIRS=${VM_CTHON_DIRS:-3}
OLD='2001-02-03 04:05:06'
OLD_EPOCH=981173106

# mktree DIR LEVEL: FILES files; below the last level DIRS subdirectories too.
mktree() {
    local dir=$1 level=$2 i
    i=0
    while [ $i -lt "$FILES" ]; do
        echo "file $i of $dir" > "$dir/file.$i" || return 1
        i=$((i + 1))
    done
    [ "$level" -le 1 ] && return 0
    i=0
    while [ $i -lt "$DIRS" ]; do
        mkdir "$dir/dir.$i" && mktree "$dir/dir.$i" $((level - 1)) || return 1
        i=$((i + 1))
    done
}

# Expected totals: FILES * (1 + DIRS + ... + DIRS^(LEVELS-1)) files, DIRS + ... directories.
totals() {
    local level=1 width=1
    NFILES=0
    NDIRS=0
    while [ $level -le "$LEVELS" ]; do
        NFILES=$((NFILES + FILES * width))
        [ $level -gt 1 ] && NDIRS=$((NDIRS + width))
        width=$((width * DIRS))
        level=$((level + 1))
    done
}

create_tree() {
    rm -rf "$B" && mkdir "$B" "$B/tree" "$B/keep" || return 1
    mktree "$B/tree" "$LEVELS"
}

# Every file read back and stat-ed as the server has it; every directory's entry count.
check_tree() {
    totals
    drop_caches
    expect_eq "$(find "$B/tree" -type f | wc -l)" "$NFILES" "files in the tree" || return 1
    expect_eq "$(find "$B/tree" -mindepth 1 -type d | wc -l)" "$NDIRS" "directories in the tree" || return 1
    find "$B/tree" -type f > /tmp/files
    while read -r f; do
        expect_eq "$(cat "$f")" "file ${f##*.} of ${f%/file.*}" "content of $f" || return 1
        expect_eq "$(stat -c '%F %s %h' "$f")" "regular file $(($(echo "file ${f##*.} of ${f%/file.*}" | wc -c))) 1" \
            "stat of $f" || return 1
    done < /tmp/files
    find "$B/tree" -type d > /tmp/dirs
    while read -r d; do
        # a directory's nlink: 2 plus its subdirectories (the server's count, no cache)
        _subdirs=$(find "$d" -mindepth 1 -maxdepth 1 -type d | wc -l)
        expect_eq "$(ls -A "$d" | wc -l)" $((FILES + _subdirs)) "entries of $d" || return 1
        expect_eq "$(stat -c %h "$d")" $((2 + _subdirs)) "nlink of $d" || return 1
    done < /tmp/dirs
    hostcheck_now count "$REL/tree" $((FILES + (LEVELS > 1 ? DIRS : 0))) || return 1
    hostcheck_now treemd5 "$REL/tree" "$(tree_md5 "$B/tree")"
}

# cthon test 3: lookups from deep inside the tree, through '..' and back.
lookups() {
    local deep="$B/tree" level=1
    while [ $level -lt "$LEVELS" ]; do
        deep="$deep/dir.0"
        level=$((level + 1))
    done
    cd "$deep" || return 1
    expect_eq "$(pwd)" "$deep" "cwd" || return 1
    expect_eq "$(cat ./file.0)" "file 0 of $deep" "file through ./" || return 1
    if [ "$LEVELS" -gt 1 ]; then
        expect_eq "$(cat ../file.1)" "file 1 of ${deep%/dir.0}" "file through ../" || return 1
        expect_eq "$(stat -c %i ../dir.0)" "$(stat -c %i .)" "inode of ../dir.0 and ." || return 1
    fi
    cd / || return 1
}

# cthon tests 4 and 4a: chmod and utimes, read back after dropping caches.
setattrs() {
    echo data > "$B/keep/modes" || return 1
    for mode in 0 444 640 755 4755 2750 1777 600; do
        chmod "$mode" "$B/keep/modes" || return 1
        drop_caches
        expect_eq "$(stat -c %a "$B/keep/modes")" "$mode" "mode after chmod $mode" || return 1
    done
    touch -d "$OLD" "$B/keep/modes" || return 1
    drop_caches
    expect_eq "$(stat -c %Y "$B/keep/modes")" "$OLD_EPOCH" "mtime after touch -d" || return 1
    expect_eq "$(stat -c %X "$B/keep/modes")" "$OLD_EPOCH" "atime after touch -d" || return 1
    hostcheck mode "$REL/keep/modes" 600
    hostcheck mtime "$REL/keep/modes" "$OLD_EPOCH"
}

# cthon test 5: a 1 MiB file written, read back cold, extended, truncated.
readwrite() {
    dd if=/dev/urandom of=/tmp/big bs=64k count=16 2> /dev/null || return 1
    cp /tmp/big "$B/keep/big" || return 1
    drop_caches
    cmp /tmp/big "$B/keep/big" || return 1
    expect_eq "$(stat -c %s "$B/keep/big")" 1048576 "size of big" || return 1
    hostcheck md5 "$REL/keep/big" "$(md5sum < /tmp/big | cut -d' ' -f1)"
    echo tail >> "$B/keep/grown" && truncate -s 5000 "$B/keep/grown" && truncate -s 3 "$B/keep/grown" || return 1
    drop_caches
    expect_eq "$(cat "$B/keep/grown")" "tai" "grown then truncated" || return 1
    rm -f /tmp/big
}

# cthon test 6: a 200-entry directory listed whole, then half removed, listed again.
readdirs() {
    local d="$B/many" i=0
    mkdir "$d" || return 1
    while [ $i -lt 200 ]; do
        : > "$d/f$i" || return 1
        i=$((i + 1))
    done
    drop_caches
    expect_eq "$(ls -A "$d" | wc -l)" 200 "entries after creating 200" || return 1
    seq 0 199 | sed 's/^/f/' | sort > /tmp/want
    ls -A "$d" | sort > /tmp/got
    cmp /tmp/want /tmp/got || return 1
    # remove the even ones while a reader lists the directory
    ls -A "$d" > /dev/null &
    i=0
    while [ $i -lt 200 ]; do
        rm "$d/f$i" || return 1
        i=$((i + 2))
    done
    wait
    drop_caches
    seq 1 2 199 | sed 's/^/f/' | sort > /tmp/want
    ls -A "$d" | sort > /tmp/got
    cmp /tmp/want /tmp/got || return 1
    hostcheck_now count "$REL/many" 100
}

# cthon test 7: renames and hard links.
renames_links() {
    local k="$B/keep"
    echo one > "$k/a" && mv "$k/a" "$k/b" || return 1
    [ ! -e "$k/a" ] || { echo "a still there after mv a b"; return 1; }
    mkdir "$k/d1" "$k/d2" && echo two > "$k/d1/x" && mv "$k/d1/x" "$k/d2/y" || return 1
    echo old > "$k/d2/z" && mv "$k/b" "$k/d2/z" || return 1    # over an existing file
    mkdir "$k/d1/sub" && echo deep > "$k/d1/sub/f" && mv "$k/d1/sub" "$k/d2/sub" || return 1
    drop_caches
    expect_eq "$(ls -A "$k/d1" | wc -l)" 0 "d1 after moving everything out" || return 1
    expect_eq "$(cat "$k/d2/y") $(cat "$k/d2/z") $(cat "$k/d2/sub/f")" "two one deep" "moved contents" || return 1
    expect_eq "$(stat -c %h "$k/d2")" 3 "nlink of d2 with one subdirectory" || return 1
    expect_eq "$(stat -c %h "$k/d1")" 2 "nlink of d1 after its subdirectory left" || return 1
    echo linked > "$k/l0" && ln "$k/l0" "$k/l1" && ln "$k/l0" "$k/d1/l2" || return 1
    drop_caches
    expect_eq "$(stat -c %h "$k/l0")" 3 "nlink with two more links" || return 1
    rm "$k/l1" || return 1
    drop_caches
    expect_eq "$(stat -c '%h %i' "$k/d1/l2")" "2 $(stat -c %i "$k/l0")" "nlink and inode after removing a link" || return 1
    ln "$k/l0" "$k/d2/y" 2> /dev/null && { echo "ln over an existing name succeeded"; return 1; }
    hostcheck absent "$REL/keep/a"
    hostcheck absent "$REL/keep/d1/sub"
    hostcheck md5 "$REL/keep/d2/z" "$(echo one | md5sum | cut -d' ' -f1)"
    hostcheck nlink "$REL/keep/l0" 2
    hostcheck samefile "$REL/keep/d1/l2" "$REL/keep/l0"
}

# cthon test 8: symlinks, readlink, a long target and a dangling one.
symlinks() {
    local k="$B/keep" long
    long=$(head -c 200 /dev/zero | tr '\0' x)/$(head -c 200 /dev/zero | tr '\0' y)
    ln -s d2/y "$k/s1" && ln -s "$long" "$k/s2" && ln -s nowhere "$k/s3" || return 1
    drop_caches
    expect_eq "$(readlink "$k/s1")" d2/y "readlink s1" || return 1
    expect_eq "$(readlink "$k/s2")" "$long" "readlink of a 401-byte target" || return 1
    expect_eq "$(cat "$k/s1")" two "read through s1" || return 1
    expect_eq "$(stat -c %F "$k/s3")" "symbolic link" "lstat of a dangling symlink" || return 1
    [ ! -e "$k/s3" ] || { echo "dangling symlink resolves"; return 1; }
    hostcheck symlink "$REL/keep/s1" d2/y
    hostcheck symlink "$REL/keep/s2" "$long"
}

# From cthon's "special" tests: a file removed or renamed while open stays readable
# through the descriptor (the client renames a removed open file to .nfsXXXX and
# removes that at the last close), and O_EXCL creates (CREATE EXCLUSIVE, then the
# client's SETATTR of mode and times: none of the verifier may show).
open_files() {
    local k="$B/keep"
    echo "still here" > "$k/silly" && echo moved > "$k/moving" || return 1
    exec 3< "$k/silly" 4< "$k/moving"
    rm "$k/silly" && mv "$k/moving" "$k/d2/moved" || return 1
    [ ! -e "$k/silly" ] || { echo "silly still there after rm"; return 1; }
    expect_eq "$(ls -A "$k" | grep -c '^\.nfs')" 1 "the client's .nfs name of the open removed file" || return 1
    expect_eq "$(cat <&3) $(cat <&4)" "still here moved" "read through descriptors after rm and mv" || return 1
    exec 3<&- 4<&-
    wait_until 10 "the .nfs file removed at the last close" sh -c "! ls -A '$k' | grep -q '^\.nfs'" || return 1
    echo plain > "$k/plain" || return 1
    (set -C && echo x > "$k/excl") || return 1
    (set -C && echo y > "$k/excl") 2> /dev/null && { echo "O_EXCL create of an existing file succeeded"; return 1; }
    drop_caches
    expect_eq "$(cat "$k/excl") $(stat -c '%a %s' "$k/excl")" "x 644 2" "content, mode, size of the O_EXCL file" || return 1
    _dt=$(( $(stat -c %Y "$k/excl") - $(stat -c %Y "$k/plain") ))
    [ "$_dt" -ge -5 ] && [ "$_dt" -le 5 ] || { echo "O_EXCL file's mtime is $_dt s from a plain create's"; return 1; }
    hostcheck mode "$REL/keep/excl" 644
    hostcheck md5 "$REL/keep/d2/moved" "$(echo moved | md5sum | cut -d' ' -f1)"
}

# cthon test 9: statfs answers, with sane numbers.
statfs() {
    set -- $(stat -f -c '%b %f %a %s' "$MNT")
    [ "$1" -gt 0 ] && [ "$2" -le "$1" ] && [ "$3" -le "$2" ] && [ "$4" -gt 0 ] || {
        echo "statfs: blocks=$1 free=$2 avail=$3 bsize=$4"
        return 1
    }
    df "$MNT" > /dev/null
}

# cthon test 2: the tree removed, nothing left behind.
remove_tree() {
    rm -r "$B/tree" "$B/many" || return 1
    drop_caches
    expect_eq "$(ls -A "$B")" keep "what is left in $REL" || return 1
    hostcheck absent "$REL/tree"
    hostcheck absent "$REL/many"
}

step mount nfs_mount "$VM_MOUNT_OPTS"
step create_tree create_tree
step check_tree check_tree
step lookups lookups
step setattrs setattrs
step readwrite readwrite
step readdirs readdirs
step renames_links renames_links
step symlinks symlinks
step open_files open_files
step statfs statfs
step remove_tree remove_tree
step umount umount "$MNT"
finish
