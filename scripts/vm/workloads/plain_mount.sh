# Plain-mount workload: the kernel finds NFS and MOUNT through the portmapper.
#
#     mount -t nfs -o vers=3,nolock 10.0.2.2:EXPORT /mnt
#
# No port=, mountport=, proto= or addr= options: for NFSv3 the kernel asks the
# portmapper at 10.0.2.2:111 (the host's 127.0.0.1:111: a system rpcbind the
# server registered with, or pysfsd's own --portmap) for the ports of NFS v3
# and MOUNT v3 (portmap v2 GETPORT, over TCP like the mount).  busybox mount
# adds addr= itself (the host is an address), so nothing else is needed.
# /proc/mounts does not show ports found this way; the host checks the
# server's trace for the GETPORT calls when it can.
#
# Then a small read/write check, and a second mount with mountproto=udp: MOUNT
# over UDP, its port again from the portmapper (this kernel has no NFS over
# UDP: CONFIG_NFS_DISABLE_UDP_SUPPORT).
. /vm/lib.sh

REL=plain
W=$MNT/$REL
HELLO="found through the portmapper"

md5_of() { md5sum "$1" | cut -d' ' -f1; }

plain_mount() {
    mount -t nfs -o "vers=3,nolock$1" "$NFS_SERVER:$VM_EXPORT" "$MNT" || return 1
    _line=$(grep " $MNT nfs " /proc/mounts) || return 1
    echo "$_line"
    report "INFO mounted: $(echo "$_line" | cut -d' ' -f4 | tr ',' '\n' \
        | grep -E '^(vers|proto|port|mountport|mountproto|addr|mountaddr)=' | tr '\n' ' ')"
}

read_write() {
    rm -rf "$W" && mkdir "$W" || return 1
    echo "$HELLO" > "$W/hello.txt" || return 1
    cp /srcdata/blob/busybox.bin "$W/blob.bin" || return 1
    drop_caches
    expect_eq "$(cat "$W/hello.txt")" "$HELLO" "hello.txt" || return 1
    expect_eq "$(md5_of "$W/blob.bin")" "$(md5_of /srcdata/blob/busybox.bin)" "md5 of blob.bin" || return 1
    expect_eq "$(ls "$W" | tr '\n' ' ')" "blob.bin hello.txt " "listing" || return 1
    hostcheck md5 "$REL/blob.bin" "$(md5_of /srcdata/blob/busybox.bin)"
    hostcheck size "$REL/hello.txt" 29
}

read_again() {
    grep " $MNT nfs " /proc/mounts | grep -q "mountproto=udp" || return 1
    drop_caches
    expect_eq "$(cat "$W/hello.txt")" "$HELLO" "hello.txt" || return 1
    expect_eq "$(md5_of "$W/blob.bin")" "$(md5_of /srcdata/blob/busybox.bin)" "md5 of blob.bin"
}

step plain_mount plain_mount ""
step read_write read_write
step umount umount "$MNT"
step mount_mountproto_udp plain_mount ",mountproto=udp"
step read_again read_again
step umount_again umount "$MNT"
finish
