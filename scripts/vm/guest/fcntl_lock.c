/* fcntl_lock: take a POSIX byte-range lock the way programs do, for the VM lock workload.
 *
 *   fcntl_lock FILE r|w START LEN wait|nowait SECONDS
 *
 * Opens FILE (created if missing), sets a read (r) or write (w) lock on [START, START+LEN)
 * (LEN 0: to the end of the file) with F_SETLKW (wait) or F_SETLK (nowait), prints
 * "LOCKED" and holds it SECONDS seconds (the lock goes with the process).  Exit status:
 * 0 locked, 1 refused (EAGAIN/EACCES: someone holds a conflicting lock), 2 other errors
 * (printed: ENOLCK means no lock manager answered).  Built statically on the host by
 * scripts/vm/vm_mount_test.py; busybox has no such tool. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: fcntl_lock FILE r|w START LEN wait|nowait SECONDS\n");
        return 2;
    }
    int fd = open(argv[1], O_RDWR | O_CREAT, 0666);
    if (fd < 0) {
        fprintf(stderr, "open %s: %s\n", argv[1], strerror(errno));
        return 2;
    }
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = argv[2][0] == 'w' ? F_WRLCK : F_RDLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = strtoll(argv[3], NULL, 10);
    fl.l_len = strtoll(argv[4], NULL, 10);
    int cmd = strcmp(argv[5], "wait") == 0 ? F_SETLKW : F_SETLK;
    if (fcntl(fd, cmd, &fl) != 0) {
        int e = errno;
        printf("%s\n", (e == EAGAIN || e == EACCES) ? "DENIED" : strerror(e));
        fflush(stdout);
        return (e == EAGAIN || e == EACCES) ? 1 : 2;
    }
    printf("LOCKED\n");
    fflush(stdout);
    sleep((unsigned)atoi(argv[6]));
    return 0;
}
