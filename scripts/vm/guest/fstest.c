/* fstest: one or more file-system system calls, as pjdfstest's driver of that name does
 * (our own code), for the VM conformance workload (workloads/pjd.sh).
 *
 *   fstest [-u UID] [-g GID[,GID...]] [-m UMASK] OP ARGS... [: OP ARGS...]
 *
 * -g sets the supplementary groups (the first is also the effective gid), -u the
 * effective uid, in that order and before the first operation, so permission checks run
 * as that user: the NFS client sends the caller's fsuid/fsgid/groups in AUTH_SYS.  umask
 * is 0 unless -m.  Operations run in order; the first that fails prints its errno's
 * NAME (ENOENT, EACCES, ...) and ends the run; when all succeed it prints the values
 * of the operations that give one (stat/lstat/fstat: the fields asked for; readlink: the
 * target), comma-separated, or "0" when none does.
 * Descriptors opened by open/create are numbered 0, 1, ... for fchmod, fchown,
 * ftruncate, fstat, write.  Exit status 0 whatever the result (the caller compares the
 * text), 2 on a usage error.
 *
 * Operations:
 *   open PATH FLAG[,FLAG...] [MODE]   (O_RDONLY O_WRONLY O_RDWR O_CREAT O_EXCL O_TRUNC
 *                                      O_APPEND O_NOFOLLOW O_DIRECTORY O_NONBLOCK)
 *   create PATH MODE      mkdir PATH MODE      mkfifo PATH MODE
 *   mknod PATH TYPE(f|c|b) MODE MAJOR MINOR
 *   rmdir PATH   unlink PATH   link FROM TO   symlink TARGET PATH   rename FROM TO
 *   chmod PATH MODE   chown PATH UID GID   lchown PATH UID GID   truncate PATH LENGTH
 *   fchmod FD MODE   fchown FD UID GID   ftruncate FD LENGTH   write FD TEXT   close FD
 *   stat PATH FIELDS   lstat PATH FIELDS   fstat FD FIELDS
 *        FIELDS: comma-separated of mode (st_mode & 07777, octal), type (regular, dir,
 *        fifo, symlink, char, block, socket), nlink, uid, gid, size, atime, mtime
 *   utimes PATH ATIME MTIME   (seconds since the epoch; "now now": utimes(PATH, NULL))
 *   readlink PATH   access PATH r|w|x|f (combined, e.g. rw; as the effective user)
 * Built statically on the host by scripts/vm/vm_mount_test.py (a workload line
 * "# vm: helper fstest"); the guest has no compiler. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/types.h>
#include <unistd.h>

#define MAXFDS 16

static int fds[MAXFDS];
static int nfds;
static char out[PATH_MAX + 64];   /* the current operation's value, if it gives one */
static char values[4 * PATH_MAX]; /* every value so far, comma-separated */

static const struct { int e; const char *name; } ERRNOS[] = {
    {EPERM, "EPERM"}, {ENOENT, "ENOENT"}, {EIO, "EIO"}, {ENXIO, "ENXIO"}, {EBADF, "EBADF"},
    {EACCES, "EACCES"}, {EBUSY, "EBUSY"}, {EEXIST, "EEXIST"}, {EXDEV, "EXDEV"},
    {ENODEV, "ENODEV"}, {ENOTDIR, "ENOTDIR"}, {EISDIR, "EISDIR"}, {EINVAL, "EINVAL"},
    {EFBIG, "EFBIG"}, {ENOSPC, "ENOSPC"}, {EROFS, "EROFS"}, {EMLINK, "EMLINK"},
    {ENAMETOOLONG, "ENAMETOOLONG"}, {ENOTEMPTY, "ENOTEMPTY"}, {ELOOP, "ELOOP"},
    {ETXTBSY, "ETXTBSY"}, {EOPNOTSUPP, "EOPNOTSUPP"}, {ESTALE, "ESTALE"}, {EDQUOT, "EDQUOT"},
    {EOVERFLOW, "EOVERFLOW"}, {ENOTSUP, "ENOTSUP"}, {ENOSYS, "ENOSYS"}, {EAGAIN, "EAGAIN"},
};

static const char *errname(int e)
{
    static char buf[32];
    for (size_t i = 0; i < sizeof ERRNOS / sizeof ERRNOS[0]; i++)
        if (ERRNOS[i].e == e)
            return ERRNOS[i].name;
    snprintf(buf, sizeof buf, "errno%d", e);
    return buf;
}

static void usage(const char *why)
{
    fprintf(stderr, "fstest: %s\n", why);
    exit(2);
}

static long num(const char *s, int base)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, base);
    if (errno != 0 || *end != '\0' || end == s)
        usage("bad number");
    return v;
}

static int fd_arg(const char *s)
{
    long i = num(s, 10);
    if (i < 0 || i >= nfds)
        usage("no such descriptor number");
    return fds[i];
}

static int open_flags(const char *spec)
{
    static const struct { const char *name; int flag; } FLAGS[] = {
        {"O_RDONLY", O_RDONLY}, {"O_WRONLY", O_WRONLY}, {"O_RDWR", O_RDWR}, {"O_CREAT", O_CREAT},
        {"O_EXCL", O_EXCL}, {"O_TRUNC", O_TRUNC}, {"O_APPEND", O_APPEND},
        {"O_NOFOLLOW", O_NOFOLLOW}, {"O_DIRECTORY", O_DIRECTORY}, {"O_NONBLOCK", O_NONBLOCK},
    };
    char copy[256];
    int flags = 0;
    snprintf(copy, sizeof copy, "%s", spec);
    for (char *save, *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        size_t i;
        for (i = 0; i < sizeof FLAGS / sizeof FLAGS[0]; i++)
            if (strcmp(tok, FLAGS[i].name) == 0)
                break;
        if (i == sizeof FLAGS / sizeof FLAGS[0])
            usage("unknown open flag");
        flags |= FLAGS[i].flag;
    }
    return flags;
}

static const char *type_name(mode_t m)
{
    switch (m & S_IFMT) {
    case S_IFREG: return "regular";
    case S_IFDIR: return "dir";
    case S_IFIFO: return "fifo";
    case S_IFLNK: return "symlink";
    case S_IFCHR: return "char";
    case S_IFBLK: return "block";
    case S_IFSOCK: return "socket";
    }
    return "unknown";
}

/* The fields of st asked for, comma-separated, into out. */
static void stat_fields(const struct stat *st, const char *spec)
{
    char copy[256];
    size_t used = 0;
    out[0] = '\0';
    snprintf(copy, sizeof copy, "%s", spec);
    for (char *save, *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        const struct { const char *name; long long value; } NUMBERS[] = {
            {"nlink", (long long)st->st_nlink}, {"uid", (long long)st->st_uid},
            {"gid", (long long)st->st_gid}, {"size", (long long)st->st_size},
            {"atime", (long long)st->st_atime}, {"mtime", (long long)st->st_mtime},
        };
        char v[64] = "";
        if (strcmp(tok, "mode") == 0)
            snprintf(v, sizeof v, (st->st_mode & 07777) ? "0%o" : "0", (unsigned)(st->st_mode & 07777));
        else if (strcmp(tok, "type") == 0)
            snprintf(v, sizeof v, "%s", type_name(st->st_mode));
        for (size_t i = 0; i < sizeof NUMBERS / sizeof NUMBERS[0]; i++)
            if (strcmp(tok, NUMBERS[i].name) == 0)
                snprintf(v, sizeof v, "%lld", NUMBERS[i].value);
        if (v[0] == '\0')
            usage("unknown stat field");
        used += snprintf(out + used, sizeof out - used, "%s%s", used ? "," : "", v);
    }
}

static int save_fd(int fd)
{
    if (fd < 0)
        return -1;
    if (nfds == MAXFDS)
        usage("too many descriptors");
    fds[nfds++] = fd;
    return 0;
}

static int access_mode(const char *s)
{
    int m = 0;
    for (; *s; s++)
        m |= *s == 'r' ? R_OK : *s == 'w' ? W_OK : *s == 'x' ? X_OK : *s == 'f' ? F_OK : (usage("bad access mode"), 0);
    return m;
}

/* Run the operation in argv[0..argc); return the system call's result (-1 with errno set). */
static int run(int argc, char **argv)
{
    const char *op = argv[0];
    struct stat st;
    int rc;
#define NEED(n) do { if (argc != (n) + 1) usage(op); } while (0)
    out[0] = '\0';
    if (strcmp(op, "open") == 0) {
        if (argc != 3 && argc != 4)
            usage(op);
        return save_fd(open(argv[1], open_flags(argv[2]), argc == 4 ? (mode_t)num(argv[3], 8) : 0));
    }
    if (strcmp(op, "create") == 0) { NEED(2); return save_fd(open(argv[1], O_CREAT | O_EXCL | O_RDWR, (mode_t)num(argv[2], 8))); }
    if (strcmp(op, "mkdir") == 0) { NEED(2); return mkdir(argv[1], (mode_t)num(argv[2], 8)); }
    if (strcmp(op, "mkfifo") == 0) { NEED(2); return mkfifo(argv[1], (mode_t)num(argv[2], 8)); }
    if (strcmp(op, "mknod") == 0) {
        NEED(5);
        mode_t type = argv[2][0] == 'c' ? S_IFCHR : argv[2][0] == 'b' ? S_IFBLK : S_IFIFO;
        return mknod(argv[1], type | (mode_t)num(argv[3], 8), makedev(num(argv[4], 10), num(argv[5], 10)));
    }
    if (strcmp(op, "rmdir") == 0) { NEED(1); return rmdir(argv[1]); }
    if (strcmp(op, "unlink") == 0) { NEED(1); return unlink(argv[1]); }
    if (strcmp(op, "link") == 0) { NEED(2); return link(argv[1], argv[2]); }
    if (strcmp(op, "symlink") == 0) { NEED(2); return symlink(argv[1], argv[2]); }
    if (strcmp(op, "rename") == 0) { NEED(2); return rename(argv[1], argv[2]); }
    if (strcmp(op, "chmod") == 0) { NEED(2); return chmod(argv[1], (mode_t)num(argv[2], 8)); }
    if (strcmp(op, "chown") == 0) { NEED(3); return chown(argv[1], (uid_t)num(argv[2], 10), (gid_t)num(argv[3], 10)); }
    if (strcmp(op, "lchown") == 0) { NEED(3); return lchown(argv[1], (uid_t)num(argv[2], 10), (gid_t)num(argv[3], 10)); }
    if (strcmp(op, "truncate") == 0) { NEED(2); return truncate(argv[1], num(argv[2], 10)); }
    if (strcmp(op, "fchmod") == 0) { NEED(2); return fchmod(fd_arg(argv[1]), (mode_t)num(argv[2], 8)); }
    if (strcmp(op, "fchown") == 0) { NEED(3); return fchown(fd_arg(argv[1]), (uid_t)num(argv[2], 10), (gid_t)num(argv[3], 10)); }
    if (strcmp(op, "ftruncate") == 0) { NEED(2); return ftruncate(fd_arg(argv[1]), num(argv[2], 10)); }
    if (strcmp(op, "write") == 0) {
        NEED(2);
        ssize_t n = write(fd_arg(argv[1]), argv[2], strlen(argv[2]));
        return n < 0 ? -1 : 0;
    }
    if (strcmp(op, "close") == 0) { NEED(1); return close(fd_arg(argv[1])); }
    if (strcmp(op, "stat") == 0 || strcmp(op, "lstat") == 0 || strcmp(op, "fstat") == 0) {
        NEED(2);
        rc = op[0] == 's' ? stat(argv[1], &st) : op[0] == 'l' ? lstat(argv[1], &st) : fstat(fd_arg(argv[1]), &st);
        if (rc == 0)
            stat_fields(&st, argv[2]);
        return rc;
    }
    if (strcmp(op, "utimes") == 0) {
        NEED(3);
        if (strcmp(argv[2], "now") == 0)
            return utimes(argv[1], NULL);
        struct timeval tv[2] = {{num(argv[2], 10), 0}, {num(argv[3], 10), 0}};
        return utimes(argv[1], tv);
    }
    if (strcmp(op, "readlink") == 0) {
        NEED(1);
        ssize_t n = readlink(argv[1], out, sizeof out - 1);
        if (n < 0)
            return -1;
        out[n] = '\0';
        return 0;
    }
    if (strcmp(op, "access") == 0) { NEED(2); return faccessat(AT_FDCWD, argv[1], access_mode(argv[2]), AT_EACCESS); }
    usage("unknown operation");
    return -1;
}

static void credentials(const char *uid, const char *groups)
{
    if (groups) {
        gid_t list[32];
        int n = 0;
        char copy[512];
        snprintf(copy, sizeof copy, "%s", groups);
        for (char *save, *tok = strtok_r(copy, ",", &save); tok && n < 32; tok = strtok_r(NULL, ",", &save))
            list[n++] = (gid_t)num(tok, 10);
        if (setgroups(n, list) != 0 || setegid(list[0]) != 0) {
            perror("fstest: setgroups/setegid");
            exit(2);
        }
    }
    if (uid && seteuid((uid_t)num(uid, 10)) != 0) {
        perror("fstest: seteuid");
        exit(2);
    }
}

int main(int argc, char **argv)
{
    const char *uid = NULL, *groups = NULL;
    mode_t mask = 0;
    int opt;
    while ((opt = getopt(argc, argv, "+u:g:m:")) != -1) {
        if (opt == 'u')
            uid = optarg;
        else if (opt == 'g')
            groups = optarg;
        else if (opt == 'm')
            mask = (mode_t)num(optarg, 8);
        else
            usage("fstest [-u UID] [-g GID,...] [-m UMASK] OP ARGS... [: OP ARGS...]");
    }
    if (optind >= argc)
        usage("no operation");
    umask(mask);
    credentials(uid, groups);
    for (int i = optind; i < argc;) {
        int j = i;
        while (j < argc && strcmp(argv[j], ":") != 0)
            j++;
        if (j == i)
            usage("empty operation");
        if (run(j - i, argv + i) != 0) {
            printf("%s\n", errname(errno));
            return 0;
        }
        if (out[0] != '\0') {
            size_t used = strlen(values);
            snprintf(values + used, sizeof values - used, "%s%s", used ? "," : "", out);
        }
        i = j + 1;
    }
    printf("%s\n", values[0] ? values : "0");
    return 0;
}
