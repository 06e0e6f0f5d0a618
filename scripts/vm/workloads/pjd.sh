# pjdfstest-style conformance cases through the Linux NFSv3 client, in our own words:
# guest/fstest.c performs one system call (or a few, ":"-separated) as root or as an
# unprivileged user (-u UID -g GID,...) and prints "0", the errno's name or the stat
# fields asked for; each line below is `expect WANT fstest-args...`, WANT being what
# Linux answers on a local file system (it may list alternatives, "A|B"; none does now).
# One step per group, as pjdfstest's directories (chmod, chown, link, mkdir, open,
# rename, rmdir, symlink, truncate, ftruncate, unlink, mkfifo/mknod, directory
# permission bits, sticky directories, setgid inheritance, name length, symlink loops);
# a step fails on any mismatch and prints the mismatches last (the STEP line shows them).
# Every case reports "INFO pjd GROUP.N got=GOT want=WANT: ARGS" so scripts/vm/compare_pjd.py
# can set servers side by side.  Names are fixed and no case depends on the date.
# The export must not squash root (no_root_squash): root makes the fixtures.
# vm: helper fstest
. /vm/lib.sh

REL=pjd
U1="-u 65534 -g 65534"          # owns most fixtures below
U1G="-u 65534 -g 65534,65533"   # the same user, also in group 65533
U2="-u 65533 -g 65533"          # another user, in group 65533
U3="-u 65532 -g 65532"          # a stranger: "other" bits only
U3G="-u 65532 -g 65533"         # a stranger in group 65533
N255=$(awk 'BEGIN { while (n++ < 255) printf "x" }')
N256=${N255}y
CASE=0
BAD=0

# expect WANT ARGS...: run fstest ARGS in the group's directory, compare with WANT.
expect() {
    _want=$1
    shift
    CASE=$((CASE + 1))
    _got=$(fstest "$@" 2>&1 | tr '\n' ' ')
    _got=${_got% }
    report "INFO pjd $GROUP.$CASE got=$_got want=$_want: $*"
    case "|$_want|" in *"|$_got|"*) return 0 ;; esac
    echo "MISMATCH $GROUP.$CASE: expect $_want $* -> got $_got" >> /tmp/pjd.bad
    BAD=$((BAD + 1))
}

# group NAME FUNCTION: the function's cases in a fresh directory $MNT/pjd/NAME (mode 0755,
# root's); the step fails when any case did not answer as expected.
group() {
    GROUP=$1
    CASE=0
    BAD=0
    : > /tmp/pjd.bad
    mkdir "$MNT/$REL/$1" && cd "$MNT/$REL/$1" || return 1
    "$2"
    cd / || return 1
    [ "$BAD" -eq 0 ] || { cat /tmp/pjd.bad; echo "$BAD mismatch(es) in $1"; return 1; }
}

cases_chmod() {
    expect 0 create f 0644
    expect 0 chmod f 0600
    expect 0600 stat f mode
    expect 0 chmod f 04755
    expect 04755 stat f mode
    expect 0 chmod f 02755
    expect 02755 stat f mode
    expect 0 mkdir d 0755
    expect 0 chmod d 01777
    expect dir,01777 stat d type,mode
    expect ENOENT chmod nx 0644
    expect ENOTDIR chmod f/x 0644
    expect 0 chown f 65534 65534
    expect 0 $U1 chmod f 0640
    expect 0640 stat f mode
    expect EPERM $U2 chmod f 0644
    expect 0640 stat f mode
    expect 0 symlink f s
    expect 0 chmod s 0604
    expect 0604,symlink stat f mode : lstat s type
    # an owner outside the file's group cannot set the set-group-ID bit (Linux drops it)
    expect 0 chown f 65534 65533
    expect 0 $U1 chmod f 02755
    expect 0755 stat f mode
    expect 0 $U1G chmod f 02755
    expect 02755 stat f mode
    expect 0 $U1 chmod f 0644
    expect 0 $U1 open f O_RDONLY : fchmod 0 0600
    expect 0600 stat f mode
    expect EPERM $U2 chmod d 0700
    expect ENAMETOOLONG chmod $N256 0644
}

cases_chown() {
    expect 0 create f 0644
    expect 0 chown f 65534 65533
    expect 65534,65533 stat f uid,gid
    expect EPERM $U1 chown f 65533 65533
    expect EPERM $U1 chown f 65534 0
    expect 0 $U1G chown f 65534 65534
    expect 65534,65534 stat f uid,gid
    expect 0 $U1G chown f -1 65533
    expect 65534,65533 stat f uid,gid
    expect EPERM $U2 chown f -1 65533
    expect 0 $U1 chown f 65534 -1
    # chown clears set-user-ID and (group-executable) set-group-ID, for root too
    expect 0 chmod f 06755
    expect 0 $U1G chown f 65534 65534
    expect 0755 stat f mode
    expect 0 chmod f 06755
    expect 0 chown f 65533 65533
    expect 0755,65533,65533 stat f mode,uid,gid
    expect 0 chmod f 02644
    expect 0 chown f 65534 65534
    expect 02644 stat f mode
    expect 0 symlink f s
    expect 0 lchown s 65532 65532
    expect 65532,65532 lstat s uid,gid
    expect 65534,65534 stat f uid,gid
    expect 0 chown s 65533 65532
    expect 65533,65532,65532,65532 stat f uid,gid : lstat s uid,gid
    expect ENOENT chown nx 0 0
    expect ENOTDIR chown f/x 0 0
    expect 0 mkdir d 0755
    expect 0 chown d 65534 65534
    expect 65534,65534 stat d uid,gid
    expect 65533 $U1 open f O_RDONLY,O_NOFOLLOW : fstat 0 uid
    expect EPERM $U1 open f O_RDONLY : fchown 0 65534 65534
    expect 0 open f O_RDONLY : fchown 0 65534 65534
    expect 65534,65534 stat f uid,gid
}

cases_link() {
    expect 0 create f 0644
    expect 0 link f l
    expect 2,2 stat f nlink : stat l nlink
    expect EEXIST link f l
    expect ENOENT link nx l2
    expect 0 mkdir d 0755
    expect EPERM link d dl
    expect 0 unlink l
    expect 1 stat f nlink
    expect ENOTDIR link f/x l3
    expect ENOENT link f nx/l
    expect 0 mkdir ro 0555 : chown f 65534 65534
    expect EACCES $U1 link f ro/l
    expect 0 link f d/l
    expect 2 stat d/l nlink
    expect 0 mkdir w 0777
    expect 0 $U1 link f w/l
    expect 3,65534 stat w/l nlink,uid
    expect 0 mkdir ns 0700 : create ns/f 0644 : chown ns/f 65534 65534
    expect EACCES $U1 link ns/f w/l2
    expect EACCES $U1 rename ns/f w/l2
    expect EACCES $U1 unlink ns/f
    expect 0 link f $N255
    expect ENAMETOOLONG link f $N256
    expect 0 symlink f s
    expect 0 link s sl
    expect symlink,2 lstat sl type,nlink
    expect 0 mkfifo p 0644
    expect 0 link p pl
    expect fifo,2 stat pl type,nlink
}

cases_mkdir() {
    expect 0 mkdir d 0755
    expect dir,0755,2 stat d type,mode,nlink
    expect EEXIST mkdir d 0755
    expect 0 -m 022 mkdir d2 0777
    expect 0755 stat d2 mode
    expect 0 mkdir d3 01777
    expect 01777 stat d3 mode
    expect 0 mkdir d/a 0700
    expect 3 stat d nlink
    expect ENOENT mkdir nx/d 0755
    expect 0 create f 0644
    expect ENOTDIR mkdir f/d 0755
    expect EEXIST mkdir f 0755
    expect 0 mkdir ro 0555
    expect EACCES $U1 mkdir ro/d 0755
    expect 0 mkdir ns 0666
    expect EACCES $U1 mkdir ns/d 0755
    expect 0 mkdir w 0777
    expect 0 $U1 mkdir w/d 0750
    expect 65534,65534,0750 stat w/d uid,gid,mode
    expect 0 mkdir $N255 0755
    expect ENAMETOOLONG mkdir $N256 0755
    expect 0 symlink l2 l1 : symlink l1 l2
    expect ELOOP mkdir l1/d 0755
    expect 0 symlink d s
    expect EEXIST mkdir s 0755
    expect EEXIST mkdir . 0755
    expect EEXIST mkdir d/.. 0755
    expect 0 rmdir d/a
    expect 2 stat d nlink
}

cases_open() {
    expect 0 open f O_CREAT,O_WRONLY 0644
    expect regular,0644,0,0,0 stat f type,mode,size,uid,gid
    expect 0 -m 022 open g O_CREAT,O_WRONLY 0666
    expect 0644 stat g mode
    expect EEXIST open f O_CREAT,O_EXCL,O_WRONLY 0644
    expect 0 open f O_CREAT,O_WRONLY 0600
    expect 0644 stat f mode
    expect 0 open f O_WRONLY : write 0 hello
    expect 5 stat f size
    expect 0 open f O_WRONLY,O_APPEND : write 0 there
    expect 10 stat f size
    expect 0 open f O_WRONLY,O_TRUNC
    expect 0 stat f size
    expect ENOENT open nx O_RDONLY
    expect 0 mkdir d 0755
    expect EISDIR open d O_WRONLY
    expect EISDIR open d O_RDWR
    expect 0 open d O_RDONLY,O_DIRECTORY
    expect ENOTDIR open f O_RDONLY,O_DIRECTORY
    expect ENOTDIR open f/x O_RDONLY
    expect 0 symlink f s
    expect ELOOP open s O_RDONLY,O_NOFOLLOW
    expect 0 open s O_RDONLY
    expect 0 symlink l2 l1 : symlink l1 l2
    expect ELOOP open l1 O_RDONLY
    expect ELOOP open l1 O_CREAT,O_WRONLY 0644
    expect 0 chmod f 0460 : chown f 65534 65533
    expect 0 $U1 open f O_RDONLY
    expect EACCES $U1 open f O_WRONLY
    expect EACCES $U1G open f O_WRONLY
    expect 0 $U3G open f O_RDWR
    expect EACCES $U3 open f O_RDONLY
    expect 0 $U3G open f O_RDONLY,O_TRUNC : stat f size
    expect 0 open f O_RDWR
    expect 0 mkdir ro 0555
    expect EACCES $U1 open ro/f O_CREAT,O_WRONLY 0644
    expect 0 create ro/e 0644
    expect 0 $U1 open ro/e O_CREAT,O_RDONLY 0644
    expect EEXIST $U1 open ro/e O_CREAT,O_EXCL,O_RDONLY 0644
    expect EEXIST open d O_CREAT,O_EXCL,O_RDONLY 0644
    expect 0 mkdir w 0777
    # a file created with mode 0 is still writable through the descriptor that created it
    expect 0 $U1 open w/m0 O_CREAT,O_RDWR 0 : write 0 data
    expect 4,0 stat w/m0 size,mode
    expect 3 $U1 open w/m1 O_CREAT,O_EXCL,O_WRONLY 0444 : write 0 abc : fstat 0 size
    expect 3,0444,65534 stat w/m1 size,mode,uid
    expect EACCES $U1 open w/m1 O_WRONLY
    expect 0 $U1 open w/f2 O_CREAT,O_WRONLY 0644
    expect 0 open $N255 O_CREAT,O_WRONLY 0644
    expect ENAMETOOLONG open $N256 O_CREAT,O_WRONLY 0644
    expect 0 mkfifo p 0644
    expect 0 open p O_RDONLY,O_NONBLOCK
}

cases_rename() {
    expect 0 create f 0644
    expect 0 rename f g
    expect ENOENT stat f mode
    expect 0644 stat g mode
    expect 0 create h 0600 : link h hl
    expect 0 rename g h
    expect 0644,1,1 stat h mode,nlink : stat hl nlink
    expect 0 mkdir d1 0755 : mkdir d2 0755 : create d2/x 0644
    expect ENOTEMPTY rename d1 d2
    expect 0 rename d1 e
    expect 0 mkdir e2 0755
    expect 0 rename e e2
    expect ENOENT stat e type
    expect EISDIR rename h d2
    expect ENOTDIR rename d2 h
    expect EINVAL rename d2 d2/sub
    expect 0 rename h d2/h2
    expect 0644,2 stat d2/h2 mode : stat d2 nlink
    expect 0 mkdir d2/sd 0755
    expect 0 rename d2/sd e2/sd
    expect 3,2 stat e2 nlink : stat d2 nlink
    expect 0 symlink nowhere s
    expect 0 rename s s2
    expect nowhere readlink s2
    expect 0 rename hl hl
    expect 0 link d2/h2 hh
    expect 0 rename d2/h2 hh
    expect 2,2 stat d2/h2 nlink : stat hh nlink
    expect ENOENT rename nx y
    expect ENOENT rename hh nx/y
    expect ENOTDIR rename hh/x y
    expect 0 mkdir ro 0555 : create ro/f 0644
    expect 0 mkdir w 0777 : chown hh 65534 65534
    expect EACCES $U1 rename ro/f w/f
    expect 0 $U1 create w/x 0644
    expect EACCES $U1 rename w/x ro/g
    expect 0 create w/a 0644 : chown w/a 65534 65534
    expect 0 $U1 rename w/a w/b
    expect 0 $U2 rename w/b w/c
    expect 0 rename hh $N255
    expect ENAMETOOLONG rename $N255 $N256
    expect 0 mkdir w/dd 0755 : chown w/dd 65534 65534
    # moving a directory to another parent rewrites its "..": needs write on it
    expect 0 mkdir w/dd2 0755 : chown w/dd2 65533 65533 : mkdir w/t 0777
    expect 0 $U1 rename w/dd w/t/dd
    expect EACCES $U1 rename w/dd2 w/t/dd2
    expect 0 $U2 rename w/dd2 w/t/dd2
}

cases_rmdir() {
    expect 0 mkdir d 0755
    expect 0 rmdir d
    expect ENOENT rmdir d
    expect 0 mkdir d 0755 : create d/f 0644
    expect ENOTEMPTY rmdir d
    expect ENOTDIR rmdir d/f
    expect ENOTDIR rmdir d/f/x
    expect EINVAL rmdir d/.
    expect ENOTEMPTY rmdir d/..
    expect 0 mkdir ro 0555 : mkdir ro/d 0755
    expect EACCES $U1 rmdir ro/d
    expect ENOENT rmdir nx/d
    expect 0 symlink d s
    expect ENOTDIR rmdir s
    expect 0 mkdir w 0777
    expect 0 $U1 mkdir w/d 0755
    expect 0 $U2 rmdir w/d
    expect 0 mkdir $N255 0755 : rmdir $N255
    expect ENAMETOOLONG rmdir $N256
}

cases_symlink() {
    expect 0 symlink target s
    expect target readlink s
    expect symlink,1 lstat s type,nlink
    expect ENOENT stat s type
    expect EEXIST symlink x s
    expect 0 create f 0644
    expect EEXIST symlink x f
    expect 0 symlink f s2
    expect regular stat s2 type
    expect EINVAL readlink f
    expect 0 mkdir ro 0555
    expect EACCES $U1 symlink x ro/s
    expect 0 mkdir w 0777
    expect 0 $U1 symlink ../f w/s
    expect 65534,65534,symlink lstat w/s uid,gid,type
    expect regular stat w/s type
    expect 0 symlink "a b/c  d" sp
    expect "a b/c  d" readlink sp
    expect 0 symlink $N255/$N255/$N255 long
    expect $N255/$N255/$N255 readlink long
    expect 0 symlink $N255/$N255/$N255/$N255/abc max
    expect $N255/$N255/$N255/$N255/abc readlink max
    expect 0 symlink x $N255
    expect ENAMETOOLONG symlink x $N256
    expect 0 symlink l2 l1 : symlink l1 l2
    expect ELOOP stat l1 type
    expect symlink lstat l1 type
    expect ENOENT symlink x nx/s
    expect ENOTDIR symlink x f/s
}

cases_truncate() {
    expect 0 create f 0644
    expect 0 truncate f 1234
    expect 1234 stat f size
    expect 0 truncate f 567
    expect 567 stat f size
    expect 0 truncate f 0
    expect 0 stat f size
    expect 0 truncate f 1099511627776
    expect 1099511627776 stat f size
    expect EINVAL truncate f -1
    expect ENOENT truncate nx 0
    expect 0 mkdir d 0755
    expect EISDIR truncate d 0
    expect ENOTDIR truncate f/x 0
    expect 0 chown f 65534 65534
    expect 0 $U1 truncate f 10
    expect EACCES $U2 truncate f 0
    expect 0 chmod f 0666
    expect 0 $U2 truncate f 3
    expect 3 stat f size
    expect 0 chmod f 0444
    expect EACCES $U1 truncate f 0
    expect 0 truncate f 5
    expect 0 symlink f s
    expect 0 truncate s 7
    expect 7 stat f size
    expect ENAMETOOLONG truncate $N256 0
}

cases_ftruncate() {
    expect 0 create f 0644
    expect 0 open f O_RDWR : ftruncate 0 100
    expect 100 stat f size
    expect 7 open f O_WRONLY : ftruncate 0 7 : fstat 0 size
    expect 7 stat f size
    expect EINVAL open f O_RDONLY : ftruncate 0 10
    expect EINVAL open f O_RDWR : ftruncate 0 -1
    expect 0 mkdir w 0777
    # the owner's descriptor stays writable after a chmod to 0 or on a file created mode 0
    expect 0 $U1 open w/g O_CREAT,O_RDWR 0 : ftruncate 0 77
    expect 77,0 stat w/g size,mode
    expect 0 $U1 open w/h O_CREAT,O_RDWR 0644 : fchmod 0 0 : ftruncate 0 33 : write 0 xy
    expect 33,0 stat w/h size,mode
    expect 0 chown f 65534 65534 : chmod f 0600
    expect 0 $U1 open f O_RDWR : chmod f 0 : ftruncate 0 12
    expect 12 stat f size
}

cases_unlink() {
    expect 0 create f 0644
    expect 0 unlink f
    expect ENOENT stat f type
    expect ENOENT unlink f
    expect EISDIR unlink .
    expect 0 mkdir d 0755
    expect EISDIR unlink d
    expect ENOENT unlink d/x/y
    expect 0 create d/x 0644 : create g 0644
    expect ENOTDIR unlink d/x/y
    expect ENOTDIR unlink g/x
    expect 0 symlink g s
    expect 0 unlink s
    expect regular stat g type
    expect ENOENT lstat s type
    expect 0 link g g2
    expect 0 unlink g
    expect 1 stat g2 nlink
    expect 0 mkfifo p 0644 : unlink p
    expect 0 mknod n c 0644 1 3 : unlink n
    expect 0 mkdir ro 0555 : create ro/f 0644
    expect EACCES $U1 unlink ro/f
    expect 0 chmod ro 0755 : chown ro 65534 65534
    expect 0 $U1 unlink ro/f
    expect 0 mkdir w 0777
    expect 0 $U1 create w/a 0644
    expect 0 $U2 unlink w/a
    expect 0 create $N255 0644 : unlink $N255
    expect ENAMETOOLONG unlink $N256
    expect regular open g2 O_RDONLY : unlink g2 : fstat 0 type
}

cases_mknod() {
    expect 0 mkfifo p 0644
    expect fifo,0644 stat p type,mode
    expect EEXIST mkfifo p 0644
    expect 0 -m 022 mkfifo p2 0666
    expect 0644 stat p2 mode
    expect 0 mknod n f 0640 0 0
    expect fifo,0640 stat n type,mode
    expect 0 mknod c c 0644 1 3
    expect char,0644 stat c type,mode
    expect 0 mknod b b 0600 7 0
    expect block,0600 stat b type,mode
    expect EEXIST mknod c c 0644 1 3
    expect ENOENT mkfifo nx/p 0644
    expect 0 mkdir ro 0555
    expect EACCES $U1 mkfifo ro/p 0644
    expect 0 mkdir w 0777
    expect 0 $U1 mkfifo w/p 0640
    expect 65534,65534,fifo,0640 stat w/p uid,gid,type,mode
    expect EPERM $U1 mknod w/c c 0644 1 3
    expect 0 $U1 mknod w/q f 0600 0 0
    expect 0 chmod p 0600 : chown p 65533 65533
    expect 0600,65533 stat p mode,uid
    expect ENAMETOOLONG mkfifo $N256 0644
}

# the read (list), write (add/remove) and search (x) bits of a directory, per class
cases_dirperm() {
    expect 0 mkdir g 0755 : create g/f 0644 : chown g 65534 65533
    expect 0 chmod g 0666
    expect EACCES $U3 stat g/f type
    expect EACCES $U1 stat g/f type
    expect 0 chmod g 0701
    expect regular $U3 stat g/f type
    expect EACCES $U3 create g/x 0644
    expect 0 chmod g 0703
    expect 0 $U3 create g/x 0644
    expect 0 $U3 unlink g/x
    expect 0 chmod g 0750
    expect regular $U3G stat g/f type
    expect EACCES $U3G create g/x 0644
    expect EACCES $U3G unlink g/f
    expect 0 chmod g 0730
    expect 0 $U3G create g/x 0644
    expect 0 $U3G rename g/x g/y
    expect 0 $U3G unlink g/y
    expect 0 chmod g 0300
    expect 0 $U1 create g/o 0644
    expect 0 $U1 unlink g/o
    # the owner class decides for the owner, even when the group class would allow
    expect 0 chmod g 0070
    expect EACCES $U1G create g/x 0644
    expect EACCES $U1G stat g/f type
    expect 0 $U3G create g/x 0644 : unlink g/x
    expect 0 chmod g 0500 : chown g/f 65534 65533
    expect EACCES $U1 mkdir g/d 0755
    expect EACCES $U1 symlink x g/s
    expect EACCES $U1 link g/f g/l
    expect 0 chmod g 0755
    expect 0 chmod g/f 0640 : chown g/f 65534 65533
    expect 0 $U1 access g/f rw
    expect EACCES $U1 access g/f x
    expect 0 $U3G access g/f r
    expect EACCES $U3G access g/f w
    expect EACCES $U3 access g/f r
    expect 0 $U3 access g/f f
    expect 0 $U3 access g x
    expect EACCES $U3 access g w
}

# a sticky directory: only the file's owner, the directory's owner or root remove or rename
cases_sticky() {
    expect 0 mkdir t 01777
    expect 0 $U1 create t/a 0666
    expect EPERM $U2 unlink t/a
    expect EPERM $U2 rename t/a t/b
    expect 0 $U2 create t/c 0644
    expect EPERM $U2 rename t/c t/a
    expect 0 $U1 rename t/a t/b
    expect 0 $U1 unlink t/b
    expect 0 $U1 create t/a 0644
    expect 0 unlink t/a
    expect 0 $U1 mkdir t/d 0777
    expect EPERM $U2 rmdir t/d
    expect 0 $U1 rmdir t/d
    expect 0 chown t 65533 65533
    expect 0 $U1 create t/e 0644
    expect 0 $U2 unlink t/e
    expect 0 $U2 unlink t/c
    expect 0 mkdir u 01777 : create u/f 0644 : chown u/f 65534 65534
    expect 0 mkdir v 0777
    expect EPERM $U2 rename u/f v/f
    expect 0 $U1 rename u/f v/f
}

# set-group-ID directories hand their group (and the bit, to subdirectories) down
cases_setgid() {
    expect 0 mkdir sg 0755 : chown sg 0 65533 : chmod sg 02777
    expect 02777 stat sg mode
    expect 0 $U1 mkdir sg/d 0755
    expect 65534,65533,02755 stat sg/d uid,gid,mode
    expect 0 $U1 create sg/f 0644
    expect 65534,65533,0644 stat sg/f uid,gid,mode
    expect 0 $U1 mkfifo sg/p 0644
    expect 65533 stat sg/p gid
    expect 0 $U1 symlink x sg/s
    expect 65533 lstat sg/s gid
    expect 0 $U1 mkdir sg/d/e 0700
    expect 65533,02700 stat sg/d/e gid,mode
    expect 0 mkdir plain 0777
    expect 0 $U1 mkdir plain/d 0755
    expect 65534,0755 stat plain/d gid,mode
    # a set-group-ID file written by someone else loses the bit (group-executable only)
    expect 0 create w 02775 : chown w 65534 65533 : chmod w 02775
    expect 0 $U1 open w O_WRONLY : write 0 data
    expect 0775 stat w mode
}

# who is who: sixteen supplementary groups (AUTH_SYS's most), root's bypass (execute needs
# some x bit), owners setting bits on their own files
cases_creds() {
    G16="65534,1,2,3,4,5,6,7,8,9,10,11,12,13,14,65533"
    expect 0 create f 0640 : chown f 0 65533 : write 0 data
    expect 0 -u 65534 -g $G16 open f O_RDONLY
    expect EACCES -u 65534 -g $G16 open f O_WRONLY
    expect EACCES -u 65534 -g 65534,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15 open f O_RDONLY
    expect 0 chmod f 0
    expect 0 open f O_RDWR
    expect EACCES access f x
    expect 0 access f rw
    expect 0 chmod f 0010
    expect 0 access f x
    expect 0 truncate f 1
    expect 0 mkdir d 0 : create d/x 0644
    expect regular stat d/x type
    expect EACCES $U1 stat d/x type
    expect 0 chmod d 0755 : chown d 65534 65534
    expect 0 $U1 create d/y 0644 : chmod d/y 07777
    expect 07777 stat d/y mode
    expect 0 chown d/y 65534 65533 : chmod d/y 0644
    expect 0 $U1 chmod d/y 07777
    expect 05777 stat d/y mode
    expect 0 $U1G chmod d/y 06777
    expect 06777,65533 stat d/y mode,gid
    expect 0 $U1 mkdir d/z 03777
    expect 01777 stat d/z mode
    expect 0 $U1 symlink y d/s : lchown d/s -1 65534
    expect EPERM $U1 lchown d/s -1 65533
    expect 0 $U1G lchown d/s -1 65533
    expect 65533,65533 lstat d/s gid : stat d/y gid
}

# paths: component length, symlink loops, a symlink in the middle of a path
cases_names() {
    expect 0 create $N255 0644
    expect regular stat $N255 type
    expect ENAMETOOLONG stat $N256 type
    expect ENAMETOOLONG create $N256 0644
    expect 0 mkdir d 0755 : create d/f 0644
    expect 0 symlink d sd
    expect regular stat sd/f type
    expect 0 symlink sd sd2
    expect regular stat sd2/f type
    expect 0 symlink self self
    expect ELOOP stat self type
    expect ELOOP stat self/x type
    expect ELOOP create self/x 0644
    expect 0 symlink a b : symlink b c : symlink c a
    expect ELOOP open a O_RDONLY
    expect ELOOP unlink a/x
    expect 0 unlink a
    expect ENOENT stat c type
    expect 0 symlink /nonexistent-root-target abs
    expect ENOENT stat abs type
    expect 0 create .hidden 0644 : create ..x 0644
    expect regular,regular stat .hidden type : stat ..x type
    expect 0 create "sp ace" 0644 : create "tab	x" 0644 : create é 0644
    expect regular,regular,regular stat "sp ace" type : stat "tab	x" type : stat é type
    expect ENOTDIR stat d/f/.. type
}

# utimes: explicit times need the owner (or root); "now" needs write permission
cases_utimes() {
    expect 0 create f 0666 : chown f 65534 65534
    expect 0 utimes f 1000000000 1200000000
    expect 1000000000,1200000000 stat f atime,mtime
    expect 0 $U1 utimes f 1100000000 1300000000
    expect 1100000000,1300000000 stat f atime,mtime
    expect EPERM $U2 utimes f 1000000000 1000000000
    expect 1300000000 stat f mtime
    expect 0 $U2 utimes f now now
    expect 0 chmod f 0644
    expect EACCES $U2 utimes f now now
    expect 0 $U1 utimes f now now
    expect 0 chmod f 0444
    expect 0 $U1 utimes f 1000000000 1000000001
    expect 1000000001 stat f mtime
    expect ENOENT utimes nx 0 0
    expect 0 symlink f s : utimes s 1400000000 1500000000
    expect 1500000000 stat f mtime
    expect 0 mkdir d 0755 : utimes d 1000000000 1600000000
    expect 1600000000 stat d mtime
    expect 0 utimes f 0 0
    expect 0,0 stat f atime,mtime
}

# what the server decides for an unprivileged caller: privileges dropped on write and on
# create in a set-group-ID directory, a dangling symlink followed by O_CREAT, chown -1 -1
cases_privs() {
    expect 0 mkdir w 0777
    expect 0 create w/u 04777 : chown w/u 65534 65534 : chmod w/u 04777
    expect 0 $U2 open w/u O_WRONLY : write 0 data
    expect 0777 stat w/u mode
    expect 0 create w/o 04755 : chown w/o 65534 65534 : chmod w/o 04755
    expect 0 $U1 open w/o O_WRONLY : write 0 data
    expect 0755 stat w/o mode
    expect 0 create w/t 06777 : chown w/t 65534 65533 : chmod w/t 06777
    expect 0 $U2 truncate w/t 2
    expect 0777 stat w/t mode
    expect 0 mkdir sg 0777 : chown sg 0 65533 : chmod sg 02777
    expect 0 $U1 create sg/x 02755
    expect 65533,0755 stat sg/x gid,mode
    expect 0 $U1G create sg/y 02755
    expect 65533,02755 stat sg/y gid,mode
    expect 0 $U1 mkdir sg/d 0755
    expect 02755 stat sg/d mode
    expect 0 symlink tgt dangling
    expect 0 open dangling O_CREAT,O_WRONLY 0640
    expect regular,0640 stat tgt type,mode
    expect 0 symlink tgt2 dangling2
    expect EEXIST open dangling2 O_CREAT,O_EXCL,O_WRONLY 0640
    expect ENOENT stat tgt2 type
    expect 0 $U2 chown w/u -1 -1
    expect 0 chown w/u 100000 4000000000
    expect 100000,4000000000 stat w/u uid,gid
    expect 0 chmod w/u 07777
    expect 07777 stat w/u mode
    # (a file with data: truncating an empty one changes no size, and the client then
    # sends only the times, which keep the bit, whatever the server)
    expect 0 create w/tr 04666 : write 0 data : chown w/tr 65534 65534 : chmod w/tr 04666
    expect 0 $U2 open w/tr O_WRONLY,O_TRUNC
    expect 0666 stat w/tr mode
    expect 0 mkdir w/gd 0755 : chown w/gd 65534 65533
    expect 0 $U1 chmod w/gd 02755
    expect 0755 stat w/gd mode
    expect 0 mkdir t 01777 : create t/a 0644 : chown t/a 65534 65534
    expect 0 $U2 create t/b 0644
    expect EPERM $U2 rename t/b t/a
    expect 65534 stat t/a uid
    expect 0 $U1 mkdir w/m0 0
    expect EACCES $U1 create w/m0/x 0644
    expect 0 create w/m0/x 0644
    expect 0 $U1 chmod w/m0 0700 : create w/m0/y 0644
}

# what the server left on its disk, seen by the host (checked now: cleanup removes it)
host_view() {
    : > /tmp/pjd.bad
    for _check in "mode $REL/setgid/sg/d 2755" "mode $REL/privs/w/t 777" "mode $REL/creds/d/y 6777" \
                  "mode $REL/sticky/t 1777" "mtime $REL/utimes/d 1600000000" "nlink $REL/link/w/l 4" \
                  "symlink $REL/names/sd d" "absent $REL/rename/e" "size $REL/truncate/f 7"; do
        # shellcheck disable=SC2086
        hostcheck_now $_check > /tmp/pjd.hv 2>&1 || grep "failed" /tmp/pjd.hv >> /tmp/pjd.bad
    done
    cat /tmp/pjd.bad
    [ ! -s /tmp/pjd.bad ]
}

setup() {
    rm -rf "${MNT:?}/$REL" && mkdir "$MNT/$REL" && chmod 0755 "$MNT/$REL"
}

step mount nfs_mount "${VM_MOUNT_OPTS:-}"
step setup setup
for g in chmod chown link mkdir open rename rmdir symlink truncate ftruncate unlink mknod \
         dirperm sticky setgid utimes privs creds names; do
    step "pjd_$g" group "$g" "cases_$g"
done
report "INFO pjd done"
step host_view host_view
step cleanup rm -rf "${MNT:?}/$REL"
hostcheck absent "$REL"
step umount umount "$MNT"
finish
