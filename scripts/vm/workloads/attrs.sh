# Attributes as knfsd sets them, through the Linux NFSv3 client, as users
# other than root (busybox su; the guest writes its own /etc/passwd and
# /etc/group): owner 1000, member 1001 (in group 2000), other 1002.
#
# * touch -a / touch -m by a group member who may write the file but does not
#   own it: the client sends SETATTR with one time SET_TO_SERVER_TIME and the
#   other DONT_CHANGE; it must succeed and leave the other time alone.  By a
#   user without write permission: "Permission denied" (ACCES), not
#   "Operation not permitted".
# * two clients racing open(O_CREAT): a second mount (nosharecache, long
#   attribute cache) still believes "race" does not exist when it is created
#   through the first, so its open(O_CREAT) sends CREATE UNCHECKED with the
#   creator's mode to an existing file: only the size may be applied (the
#   owner's 0640 stays, a group member who may write it is not refused).
. /vm/lib.sh

REL=attrs
W=$MNT/$REL
MNT2=/mnt2
W2=$MNT2/$REL
OLD='2001-02-03 04:05:06'
OLD_EPOCH=981173106

users() {
    mkdir -p /etc
    printf 'root:x:0:0::/:/bin/sh\nowner:x:1000:1000::/tmp:/bin/sh\nmember:x:1001:1001::/tmp:/bin/sh\nother:x:1002:1002::/tmp:/bin/sh\n' > /etc/passwd
    printf 'root:x:0:\nowner:x:1000:\nmember:x:1001:\nother:x:1002:\nshared:x:2000:member\n' > /etc/group
    expect_eq "$(su member -s /bin/sh -c 'id -G' | tr ' ' '\n' | sort -n | tr '\n' ' ')" "1001 2000 " "groups of member"
}

# as USER COMMAND: run a shell command as USER (with its supplementary groups)
as() {
    _user=$1
    shift
    su "$_user" -s /bin/sh -c "$*"
}

setup() {
    rm -rf "$W" && mkdir "$W" && chmod 1777 "$W" || return 1
    echo "a log" > "$W/log" && chown 1000:2000 "$W/log" && chmod 0664 "$W/log" || return 1
    touch -d "$OLD" "$W/log"
}

touch_a_as_member() {
    as member "touch -a $W/log" || return 1
    expect_eq "$(stat -c %Y "$W/log")" "$OLD_EPOCH" "mtime after touch -a" || return 1
    [ "$(stat -c %X "$W/log")" -gt "$OLD_EPOCH" ] || { echo "atime did not move"; return 1; }
    touch -d "$OLD" "$W/log" || return 1
    as member "touch -m $W/log" || return 1
    expect_eq "$(stat -c %X "$W/log")" "$OLD_EPOCH" "atime after touch -m" || return 1
    [ "$(stat -c %Y "$W/log")" -gt "$OLD_EPOCH" ] || { echo "mtime did not move"; return 1; }
    touch -d "$OLD" "$W/log"
}

touch_a_as_other() {
    if as other "touch -a $W/log" 2> /tmp/touch.err; then
        echo "touch -a by a user who may not write the file succeeded"
        return 1
    fi
    cat /tmp/touch.err
    grep -q "Permission denied" /tmp/touch.err || return 1
    hostcheck mtime "$REL/log" "$OLD_EPOCH"
}

race_create() {
    mount -t nfs -o "vers=3,proto=tcp,mountproto=tcp,nolock,addr=$NFS_SERVER,mountaddr=$NFS_SERVER,port=$VM_NFS_PORT,mountport=$VM_MOUNT_PORT,nosharecache,acdirmin=600,acdirmax=600,acregmin=600,acregmax=600" \
        "$NFS_SERVER:$VM_EXPORT" "$MNT2" || return 1
    # the second client looks first: nothing there (a cached negative entry)
    [ ! -e "$W2/race" ] && [ ! -e "$W2/team" ] || return 1
    # the first creates them: the owner's 0640 file, and a group-writable one
    as owner "umask 027; echo 'first writer' > $W/race" || return 1
    as owner "umask 002; echo 'first writer' > $W/team" || return 1
    chgrp 2000 "$W/team" || return 1
    # the second, still believing they do not exist, creates them too
    as owner "umask 077; echo second > $W2/race" || return 1
    as member "umask 022; echo second > $W2/team" || return 1
    umount "$MNT2"
    hostcheck mode "$REL/race" 640
    hostcheck mode "$REL/team" 664
}

mkdir -p "$MNT2"
step users users
step mount nfs_mount
step setup setup
step touch_a_as_member touch_a_as_member
step touch_a_as_other touch_a_as_other
step race_create race_create
step umount umount "$MNT"
finish
