/* fsx: a random file-operation exerciser with a shadow copy in memory, for the VM tests.
 *
 *   fsx [-S seed] [-N ops] [-l maxlen] [-o maxoplen] [-W shadowfile] [-q] [-Z] FILE
 *
 * Our own code after the idea of Apple's/XFS's fsx: a seeded, deterministic sequence of
 * write (random offset and length, past EOF too), read (compared with the shadow, short
 * reads at EOF checked), truncate up and down, mmap read, mmap write + msync, fsync,
 * "invalidate" (fsync, then POSIX_FADV_DONTNEED: the next read goes to the server, not the
 * client's page cache) and close/reopen (close-to-open), each followed by an fstat size
 * check; at the end the file is reopened and compared whole.  On a mismatch it prints the
 * first bad offset, the bytes expected and found, and the last operations, and exits 1.
 * Written data names the operation that wrote it: even offsets hold (op % 255) + 1, so a
 * stale byte tells which write it came from.  -W writes the expected content to a file
 * (for md5 checks of the server's copy).  -Z adds O_DIRECT reads and writes (any offset and
 * length: the NFS client sends them to the server as they are) through a second descriptor.  Built statically on the host by
 * scripts/vm/vm_mount_test.py; nothing like it is packaged in Debian. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

enum { OP_READ, OP_WRITE, OP_TRUNCATE, OP_MAPREAD, OP_MAPWRITE, OP_DREAD, OP_DWRITE, OP_FSYNC,
       OP_INVALIDATE, OP_REOPEN, OP_COUNT };
static const char *op_names[OP_COUNT] = {"read", "write", "truncate", "mapread", "mapwrite",
                                         "dread", "dwrite",
                                         "fsync", "invalidate", "reopen"};
/* Relative weights of the operations (fsx's mix: mostly reads and writes); the O_DIRECT
 * ones only with -Z (weight 0 otherwise, so the other ops' sequence for a seed is the same). */
static unsigned op_weights[OP_COUNT] = {20, 24, 8, 12, 12, 0, 0, 4, 6, 4};
#define DIRECT_WEIGHT 6

#define LOG_SIZE 40
struct logent { unsigned long n; int op; long off, len, size_before; };
static struct logent oplog[LOG_SIZE];
static unsigned long opnum;

static uint64_t rng_state, seed = 1;
static const char *path;
static int fd = -1, dfd = -1;  /* dfd: O_DIRECT, a second open file description (-Z) */
static long maxlen = 256 * 1024, maxoplen = 64 * 1024, file_size;
static unsigned char *good, *buf, *dbuf;  /* dbuf: page-aligned, for O_DIRECT */
static long pagesize;
static int quiet, direct;

/* splitmix64: the same sequence from the same seed on every machine. */
static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static long rnd_below(long n) { return n > 0 ? (long)(rnd() % (uint64_t)n) : 0; }

static void log_op(int op, long off, long len)
{
    struct logent *e = &oplog[opnum % LOG_SIZE];
    e->n = opnum; e->op = op; e->off = off; e->len = len; e->size_before = file_size;
}

static void dump_log(void)
{
    unsigned long first = opnum + 1 > LOG_SIZE ? opnum + 1 - LOG_SIZE : 0;
    fprintf(stderr, "fsx: last operations (op offset length, file size before):\n");
    for (unsigned long n = first; n <= opnum; n++) {
        struct logent *e = &oplog[n % LOG_SIZE];
        if (e->n != n || n == 0)
            continue;
        fprintf(stderr, "fsx:   %6lu %-10s 0x%06lx 0x%06lx size 0x%06lx\n", e->n, op_names[e->op],
                e->off, e->len, e->size_before);
    }
}

static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fsx: FAIL at op %lu (seed %" PRIu64 "): ", opnum, seed);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    dump_log();
    exit(1);
}

static void sys_fail(const char *what) { fail("%s: %s", what, strerror(errno)); }

/* Compare got[0..len) with the shadow at off; on a mismatch report the first bad byte. */
static void check(const unsigned char *got, long off, long len, const char *what)
{
    for (long i = 0; i < len; i++) {
        if (got[i] != good[off + i]) {
            long end = i;
            while (end < len && got[end] != good[off + end])
                end++;
            fprintf(stderr, "fsx: %s: first bad offset 0x%lx (%ld bad bytes from there in 0x%lx+0x%lx):"
                    " expected", what, off + i, end - i, off, len);
            for (long j = i; j < len && j < i + 16; j++)
                fprintf(stderr, " %02x", good[off + j]);
            fprintf(stderr, ", got");
            for (long j = i; j < len && j < i + 16; j++)
                fprintf(stderr, " %02x", got[j]);
            fputc('\n', stderr);
            if (got[i] && !((off + i) & 1))
                fprintf(stderr, "fsx: the bad byte 0x%02x was written by an op n with n %% 255 + 1 == it\n",
                        got[i]);
            fail("%s mismatch", what);
        }
    }
}

static void check_size(const char *after)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        sys_fail("fstat");
    if (st.st_size != file_size)
        fail("size after %s: %lld, expected %ld", after, (long long)st.st_size, file_size);
}

static void open_file(int flags)
{
    fd = open(path, O_RDWR | flags, 0644);
    if (fd < 0)
        sys_fail("open");
    if (direct && (dfd = open(path, O_RDWR | O_DIRECT)) < 0)
        sys_fail("open O_DIRECT");
}

static void fill(long off, long len)
{
    for (long i = 0; i < len; i++)
        good[off + i] = ((off + i) & 1) ? (unsigned char)rnd() : (unsigned char)(opnum % 255 + 1);
}

/* pread through descriptor d into b (the client's page cache, or O_DIRECT: the server). */
static void read_via(int d, unsigned char *b, long off, long len, const char *what)
{
    long want = off >= file_size ? 0 : (off + len > file_size ? file_size - off : len);
    ssize_t got = pread(d, b, len, off);
    if (got < 0)
        sys_fail(what);
    if (got != want)
        fail("%s 0x%lx+0x%lx returned %zd, expected %ld (size %ld)", what, off, len, got, want, file_size);
    check(b, off, want, what);
}

static void do_read(long off, long len) { read_via(fd, buf, off, len, "read"); }

static void grow_shadow(long new_size)
{
    if (new_size > file_size)
        memset(good + file_size, 0, new_size - file_size);
}

/* pwrite len new bytes at off through descriptor d (from b when given: O_DIRECT's aligned
 * buffer), the shadow first. */
static void write_via(int d, unsigned char *b, long off, long len, const char *what)
{
    grow_shadow(off);
    fill(off, len);
    if (b)
        memcpy(b, good + off, len);
    ssize_t put = pwrite(d, b ? b : good + off, len, off);
    if (put != len)
        put < 0 ? sys_fail(what) : fail("%s wrote %zd of %ld", what, put, len);
    if (off + len > file_size)
        file_size = off + len;
}

static void do_write(long off, long len) { write_via(fd, NULL, off, len, "write"); }

static void do_truncate(long size)
{
    grow_shadow(size);
    if (ftruncate(fd, size) < 0)
        sys_fail("ftruncate");
    file_size = size;
}

static void do_mapread(long off, long len)
{
    if (off + len > file_size)
        len = file_size - off;
    long pg = off & ~(pagesize - 1);
    unsigned char *p = mmap(NULL, off - pg + len, PROT_READ, MAP_SHARED, fd, pg);
    if (p == MAP_FAILED)
        sys_fail("mmap read");
    check(p + (off - pg), off, len, "mapread");
    if (munmap(p, off - pg + len) < 0)
        sys_fail("munmap");
}

static void do_mapwrite(long off, long len)
{
    if (off + len > file_size) {  /* a mapping cannot extend a file: fsx grows it first */
        grow_shadow(off + len);
        if (ftruncate(fd, off + len) < 0)
            sys_fail("ftruncate before mapwrite");
        file_size = off + len;
    }
    fill(off, len);
    long pg = off & ~(pagesize - 1);
    unsigned char *p = mmap(NULL, off - pg + len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, pg);
    if (p == MAP_FAILED)
        sys_fail("mmap write");
    memcpy(p + (off - pg), good + off, len);
    if (msync(p, off - pg + len, MS_SYNC) < 0)
        sys_fail("msync");
    if (munmap(p, off - pg + len) < 0)
        sys_fail("munmap");
}

static int pick_op(void)
{
    unsigned total = 0;
    for (int i = 0; i < OP_COUNT; i++)
        total += op_weights[i];
    unsigned r = (unsigned)rnd_below(total);
    for (int i = 0; i < OP_COUNT; i++) {
        if (r < op_weights[i])
            return i;
        r -= op_weights[i];
    }
    return OP_READ;
}

static void one_op(void)
{
    int op = pick_op();
    long off = rnd_below(maxlen);
    long len = 1 + rnd_below(maxoplen);
    if (off + len > maxlen)
        len = maxlen - off;
    if ((op == OP_READ || op == OP_MAPREAD || op == OP_DREAD) && file_size == 0)
        op = OP_WRITE;  /* nothing to read yet */
    if (op == OP_READ || op == OP_MAPREAD || op == OP_DREAD)
        off = rnd_below(file_size);
    if (op == OP_MAPREAD && off + len > file_size)
        len = file_size - off;
    if (op == OP_TRUNCATE)
        off = rnd_below(maxlen + 1), len = 0;
    if (op >= OP_FSYNC)
        off = len = 0;  /* the log shows no offset for them */
    log_op(op, off, len);
    switch (op) {
    case OP_READ: do_read(off, len); break;
    case OP_WRITE: do_write(off, len); break;
    case OP_TRUNCATE: do_truncate(off); break;
    case OP_MAPREAD: do_mapread(off, len); break;
    case OP_MAPWRITE: do_mapwrite(off, len); break;
    case OP_DREAD: read_via(dfd, dbuf, off, len, "dread"); break;
    case OP_DWRITE: write_via(dfd, dbuf, off, len, "dwrite"); break;
    case OP_FSYNC:
        if (fsync(fd) < 0)
            sys_fail("fsync");
        break;
    case OP_INVALIDATE:
        if (fsync(fd) < 0)
            sys_fail("fsync before invalidate");
        errno = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        if (errno)
            sys_fail("posix_fadvise DONTNEED");
        break;
    case OP_REOPEN:
        if (close(fd) < 0 || (direct && close(dfd) < 0))
            sys_fail("close");
        open_file(0);
        break;
    }
    check_size(op_names[op]);
}

static void write_shadow(const char *shadow)
{
    int out = open(shadow, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (out < 0 || write(out, good, file_size) != file_size || close(out) < 0)
        sys_fail("writing the shadow file");
}

int main(int argc, char **argv)
{
    unsigned long ops = 10000;
    const char *shadow = NULL;
    int c;
    while ((c = getopt(argc, argv, "S:N:l:o:W:qZ")) != -1) {
        switch (c) {
        case 'S': seed = strtoull(optarg, NULL, 0); break;
        case 'N': ops = strtoul(optarg, NULL, 0); break;
        case 'l': maxlen = strtol(optarg, NULL, 0); break;
        case 'o': maxoplen = strtol(optarg, NULL, 0); break;
        case 'W': shadow = optarg; break;
        case 'q': quiet = 1; break;
        case 'Z': direct = 1; op_weights[OP_DREAD] = op_weights[OP_DWRITE] = DIRECT_WEIGHT; break;
        default:
            fprintf(stderr, "usage: fsx [-S seed] [-N ops] [-l maxlen] [-o maxoplen] [-W shadowfile] [-q] [-Z] FILE\n");
            return 2;
        }
    }
    if (optind != argc - 1 || maxlen < 1 || maxoplen < 1) {
        fprintf(stderr, "fsx: one FILE, maxlen and maxoplen > 0\n");
        return 2;
    }
    if (maxoplen > maxlen)
        maxoplen = maxlen;
    path = argv[optind];
    rng_state = seed;
    pagesize = sysconf(_SC_PAGESIZE);
    good = calloc(1, maxlen);
    buf = malloc(maxlen);
    if (!good || !buf || posix_memalign((void **)&dbuf, pagesize, maxlen))
        sys_fail("malloc");
    open_file(O_CREAT | O_TRUNC);
    unsigned long counts[OP_COUNT] = {0};
    for (opnum = 1; opnum <= ops; opnum++) {
        one_op();
        counts[oplog[opnum % LOG_SIZE].op]++;
        if (!quiet && opnum % 1000 == 0)
            fprintf(stderr, "fsx: %lu ops, size %ld\n", opnum, file_size);
    }
    opnum = ops;
    if (close(fd) < 0 || (direct && close(dfd) < 0))
        sys_fail("final close");
    open_file(0);
    check_size("final reopen");
    if (file_size)
        do_read(0, file_size);
    if (close(fd) < 0 || (direct && close(dfd) < 0))
        sys_fail("close");
    if (shadow)
        write_shadow(shadow);
    printf("fsx: PASS seed %" PRIu64 " ops %lu size %ld", seed, ops, file_size);
    for (int i = 0; i < OP_COUNT; i++)
        printf(" %s=%lu", op_names[i], counts[i]);
    printf("\n");
    return 0;
}
