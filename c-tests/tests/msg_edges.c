/* Message-queue corners found by comparing ipcshim with the kernel call by call:
 *  - MSG_COPY loads min(msgsz, msgmax) bytes of the caller's buffer before it looks at the
 *    queue (prepare_copy): an unreadable buffer is EFAULT even for a removed id, an empty
 *    queue or a message too large for it;
 *  - msgctl takes `cmd` as given: cmd | IPC_64 is an unknown command on x86_64;
 *  - IPC_SET keeps only the low 32 bits of msg_qbytes (msgctl_down takes an int);
 *  - MSG_STAT / MSG_STAT_ANY use only the low 15 bits of the index (ipcid_to_idx);
 *  - new indexes cycle through a window that follows the number of queues in use;
 *  - IPC_SET re-checks the rights of blocked receivers (EACCES once read permission is
 *    gone), but wakes only the blocked senders whose message fits: one that still does not
 *    fit sleeps on without write permission, and fails with EACCES once there is room. */
#include "../common.h"
#include <limits.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/msg.h>

struct mbuf {
    long mtype;
    char mtext[256];
};

static int q;

static int snd(int id, long type, size_t len) {
    struct mbuf b;
    memset(&b, 'm', sizeof b);
    b.mtype = type;
    return msgsnd(id, &b, len, IPC_NOWAIT);
}

static struct msqid_ds stat_of(int id) {
    struct msqid_ds ds;
    memset(&ds, 0, sizeof ds);
    CHECK(msgctl(id, IPC_STAT, &ds) == 0);
    return ds;
}

static void test_copy_reads_buffer_first(void) {
    long msgmax = read_kernel_long("msgmax");
    long pg = sysconf(_SC_PAGESIZE);
    size_t span = ((size_t)msgmax + sizeof(long) + (size_t)pg - 1) / (size_t)pg * (size_t)pg;
    /* [readable span][PROT_NONE page] */
    char *map = mmap(NULL, span + (size_t)pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(map != MAP_FAILED);
    if (map == MAP_FAILED)
        return;
    CHECK(mprotect(map + span, (size_t)pg, PROT_NONE) == 0);
    char *end = map + span; /* first unreadable byte */
    int dead = EXPECT_OK(msgget(IPC_PRIVATE, 0600));
    EXPECT_OK(msgctl(dead, IPC_RMID, NULL));
    q = EXPECT_OK(msgget(IPC_PRIVATE, 0600));
    /* before the id is looked up */
    EXPECT_ERR(msgrcv(dead, NULL, 10, 0, MSG_COPY | IPC_NOWAIT), EFAULT);
    EXPECT_ERR(msgrcv(dead, end, 1, 0, MSG_COPY | IPC_NOWAIT), EFAULT);
    EXPECT_ERR(msgrcv(dead, NULL, 0, 0, MSG_COPY | IPC_NOWAIT), EINVAL); /* nothing to load */
    /* ... and before the queue is searched */
    EXPECT_ERR(msgrcv(q, NULL, 10, 0, MSG_COPY | IPC_NOWAIT), EFAULT);
    EXPECT_ERR(msgrcv(q, end, 10, 0, MSG_COPY | IPC_NOWAIT), EFAULT);
    EXPECT_ERR(msgrcv(q, NULL, 0, 0, MSG_COPY | IPC_NOWAIT), ENOMSG);
    EXPECT_OK(snd(q, 4, 10));
    EXPECT_ERR(msgrcv(q, NULL, 10, 7, MSG_COPY | IPC_NOWAIT), EFAULT); /* past the end */
    EXPECT_ERR(msgrcv(q, NULL, 5, 0, MSG_COPY | IPC_NOWAIT), EFAULT);  /* before E2BIG */
    /* all of msgsz is loaded, not only what the message needs */
    EXPECT_ERR(msgrcv(q, end - 64, 100, 0, MSG_COPY | IPC_NOWAIT), EFAULT);
    CHECK(msgrcv(q, end - 64, 56, 0, MSG_COPY | IPC_NOWAIT) == 10);
    /* but never more than msgmax bytes: a larger msgsz is fine with msgmax readable */
    struct mbuf *b = (struct mbuf *)(end - msgmax);
    b->mtype = 0;
    CHECK(msgrcv(q, b, (size_t)msgmax + 100, 0, MSG_COPY | IPC_NOWAIT) == 10 && b->mtype == 4);
    CHECK(msgrcv(q, b, LONG_MAX, 0, MSG_COPY | IPC_NOWAIT) == 10);
    EXPECT_ERR(msgrcv(q, end - msgmax + 1, (size_t)msgmax, 0, MSG_COPY | IPC_NOWAIT), EFAULT);
    /* a buffer that can be read but not written: E2BIG if too small, else EFAULT */
    CHECK(mprotect(map, span, PROT_READ) == 0);
    EXPECT_ERR(msgrcv(q, map, 5, 0, MSG_COPY | IPC_NOWAIT), E2BIG);
    EXPECT_ERR(msgrcv(q, map, 10, 0, MSG_COPY | IPC_NOWAIT), EFAULT);
    /* a normal receive does not load the buffer: an empty selection is ENOMSG */
    EXPECT_ERR(msgrcv(q, NULL, 10, 9, IPC_NOWAIT), ENOMSG);
    struct msqid_ds ds = stat_of(q);
    CHECK(ds.msg_qnum == 1 && ds.msg_lrpid == 0 && ds.msg_rtime == 0);
    EXPECT_OK(msgctl(q, IPC_RMID, NULL));
    munmap(map, span + (size_t)pg);
}

static void test_ipc64_cmd(void) {
#if defined(__x86_64__)
    struct msqid_ds ds;
    struct msginfo mi;
    q = EXPECT_OK(msgget(IPC_PRIVATE, 0600));
    ds = stat_of(q);
    EXPECT_ERR(msgctl(q, IPC_STAT | 0x100, &ds), EINVAL);
    EXPECT_ERR(msgctl(q, IPC_SET | 0x100, &ds), EINVAL);
    EXPECT_ERR(msgctl(q, IPC_INFO | 0x100, (struct msqid_ds *)&mi), EINVAL);
    EXPECT_ERR(msgctl(q, MSG_INFO | 0x100, (struct msqid_ds *)&mi), EINVAL);
    EXPECT_ERR(msgctl(0, MSG_STAT | 0x100, &ds), EINVAL);
    EXPECT_ERR(msgctl(0, MSG_STAT_ANY | 0x100, &ds), EINVAL);
    EXPECT_ERR(msgctl(q, IPC_RMID | 0x100, NULL), EINVAL);
    CHECK(msgctl(q, IPC_STAT, &ds) == 0); /* still there */
    EXPECT_OK(msgctl(q, IPC_RMID, NULL));
#endif
}

/* IPC_SET msg_qbytes = v: returns msgctl's result, *now the msg_qbytes IPC_STAT reports */
static int set_qbytes(unsigned long v, unsigned long *now) {
    struct msqid_ds ds = stat_of(q);
    ds.msg_qbytes = v;
    errno = 0;
    int r = msgctl(q, IPC_SET, &ds);
    int e = errno;
    *now = stat_of(q).msg_qbytes;
    errno = e;
    return r;
}

static void test_qbytes_is_an_int(void) {
    unsigned long now;
    q = EXPECT_OK(msgget(IPC_PRIVATE, 0600));
    unsigned long start = stat_of(q).msg_qbytes;
    /* the low 32 bits are kept: no EPERM for "huge" values whose low half is small */
    CHECK(set_qbytes((1UL << 32) + 100, &now) == 0 && now == 100);
    EXPECT_OK(snd(q, 1, 100));
    EXPECT_ERR(snd(q, 1, 1), EAGAIN); /* 100 bytes: full */
    CHECK(set_qbytes(1UL << 32, &now) == 0 && now == 0);
    CHECK(set_qbytes((1UL << 63) | 7, &now) == 0 && now == 7);
    CHECK(set_qbytes(0xffffffff00000000UL + start, &now) == 0 && now == start);
    /* the EPERM check sees the truncated value, so a bad uid is what fails here */
    struct msqid_ds ds = stat_of(q);
    ds.msg_perm.uid = (uid_t)-1;
    ds.msg_qbytes = 1UL << 40;
    EXPECT_ERR(msgctl(q, IPC_SET, &ds), EINVAL);
    CHECK(stat_of(q).msg_qbytes == start);
    /* a low half above INT_MAX is a negative int: above msgmnb compared unsigned, and
     * stored sign-extended */
    if (has_cap(24 /* CAP_SYS_RESOURCE */)) {
        CHECK(set_qbytes(0x80000000UL, &now) == 0 && now == 0xffffffff80000000UL);
        CHECK(set_qbytes(0xffffffffUL, &now) == 0 && now == ULONG_MAX);
    } else {
        CHECK(set_qbytes(0x80000000UL, &now) == -1 && errno == EPERM && now == start);
        CHECK(set_qbytes(0x1ffffffffUL, &now) == -1 && errno == EPERM && now == start);
    }
    EXPECT_OK(msgctl(q, IPC_RMID, NULL));
}

static void test_stat_index_bits(void) {
    struct msqid_ds ds;
    struct msginfo mi;
    q = EXPECT_OK(msgget(IPC_PRIVATE, 0600));
    int maxidx = (int)EXPECT_OK(msgctl(0, IPC_INFO, (struct msqid_ds *)&mi));
    int idx = -1;
    for (int i = 0; i <= maxidx && idx < 0; i++)
        if (msgctl(i, MSG_STAT_ANY, &ds) == q)
            idx = i;
    CHECK(idx >= 0);
    if (idx >= 0) {
        /* our queue's slot, whatever the bits above the low 15 */
        CHECK(msgctl(idx + 32768, MSG_STAT, &ds) == q);
        CHECK(msgctl(idx + 5 * 32768, MSG_STAT_ANY, &ds) == q);
        memset(&ds, 0, sizeof ds);
        CHECK(msgctl(idx | 0x7fff8000, MSG_STAT, &ds) == q && ds.msg_perm.mode == 0600);
    }
    /* IPC_STAT checks the sequence number in those bits */
    EXPECT_ERR(msgctl(q ^ 0x8000, IPC_STAT, &ds), EINVAL);
    EXPECT_ERR(msgctl(q ^ 0x40000000, IPC_STAT, &ds), EINVAL);
    EXPECT_OK(msgctl(q, IPC_RMID, NULL));
    if (idx >= 0) {
        errno = 0;
        int r = msgctl(idx + 32768, MSG_STAT, &ds);
        CHECK((r == -1 && errno == EINVAL) || (r >= 0 && r != q)); /* free, or reused */
    }
}

/* the first free index of [0, window) in cyclic order from `from` (0 if outside) */
static int first_free(int from, int window) {
    struct msqid_ds ds;
    if (from >= window)
        from = 0;
    for (int k = 0; k < window; k++) {
        int i = (from + k) % window;
        errno = 0;
        if (msgctl(i, MSG_STAT_ANY, &ds) == -1 && errno == EINVAL)
            return i;
    }
    return -1;
}

/* New ids: the kernel picks the next free index after the last one handed out, but only
 * within [0, max(in_use * 3 / 2, 64)), starting over at 0 when the last one lies beyond,
 * so that with few queues indexes are soon reused. (Window and free indexes are read just
 * before; this assumes no other program creates queues meanwhile, as in the suite's own
 * namespaces.) */
static void test_index_window(void) {
    enum { N = 100 };
    int ids[N], hi = 0;
    struct msginfo mi;
    for (int i = 0; i < N; i++) {
        ids[i] = EXPECT_OK(msgget(IPC_PRIVATE, 0600));
        if (ids[i] % 32768 > ids[hi] % 32768)
            hi = i;
    }
    CHECK(ids[hi] % 32768 >= 64); /* 100 distinct indexes */
    for (int i = 0; i < N; i++)
        if (i != hi)
            EXPECT_OK(msgctl(ids[i], IPC_RMID, NULL));
    int last = ids[N - 1] % 32768, seq = ids[N - 1] / 32768;
    for (int round = 0; round < 3; round++) {
        memset(&mi, 0, sizeof mi);
        EXPECT_OK(msgctl(0, MSG_INFO, (struct msqid_ds *)&mi));
        int window = mi.msgpool * 3 / 2 > 64 ? mi.msgpool * 3 / 2 : 64;
        int want = first_free(last + 1, window);
        q = EXPECT_OK(msgget(IPC_PRIVATE, 0600));
        if (q % 32768 != want)
            fprintf(stderr, "  new index %d, want %d (%d queues in use, last index %d)\n", q % 32768, want,
                    mi.msgpool, last);
        CHECK(q % 32768 == want && want >= 0);
        /* the sequence number moves on when the index did not grow */
        CHECK(q / 32768 == seq + (q % 32768 <= last ? 1 : 0));
        last = q % 32768;
        seq = q / 32768;
        EXPECT_OK(msgctl(q, IPC_RMID, NULL));
    }
    q = ids[hi];
    EXPECT_OK(msgctl(q, IPC_RMID, NULL));
}

/* A queue this process has used is removed by another, which makes queues until one gets
 * the same index (the window makes that quick): the old id is dead here, the new one is
 * another queue. */
static int reuse_pipe[2];
static void child_reuse_index(void *old) {
    int a = *(int *)old, b = -1;
    EXPECT_OK(msgctl(a, IPC_RMID, NULL));
    for (int i = 0; i <= 32768; i++) {
        b = msgget(IPC_PRIVATE, 0600);
        if (b < 0 || b % 32768 == a % 32768)
            break;
        EXPECT_OK(msgctl(b, IPC_RMID, NULL));
    }
    CHECK(b >= 0 && b % 32768 == a % 32768 && b != a);
    CHECK(write(reuse_pipe[1], &b, sizeof b) == (ssize_t)sizeof b);
}

static void test_index_reused_by_another(void) {
    struct mbuf b;
    struct msqid_ds ds;
    int a = EXPECT_OK(msgget(IPC_PRIVATE, 0600)), nb = -1;
    EXPECT_OK(snd(a, 1, 3)); /* used here first */
    CHECK(pipe(reuse_pipe) == 0);
    run_in_child(child_reuse_index, &a);
    CHECK(read(reuse_pipe[0], &nb, sizeof nb) == (ssize_t)sizeof nb);
    close(reuse_pipe[0]);
    close(reuse_pipe[1]);
    q = nb;
    EXPECT_ERR(snd(a, 1, 3), EINVAL);
    EXPECT_ERR(msgrcv(a, &b, sizeof b.mtext, 0, IPC_NOWAIT), EINVAL);
    EXPECT_ERR(msgctl(a, IPC_STAT, &ds), EINVAL);
    EXPECT_ERR(msgctl(a, IPC_RMID, NULL), EINVAL);
    if (nb >= 0) {
        CHECK(stat_of(nb).msg_qnum == 0); /* not the old queue */
        EXPECT_OK(snd(nb, 2, 5));
        CHECK(msgrcv(nb, &b, sizeof b.mtext, 0, IPC_NOWAIT) == 5 && b.mtype == 2);
        EXPECT_OK(msgctl(nb, IPC_RMID, NULL));
    }
}

/* ---- blocked callers and IPC_SET. Children run as uid 1001 ("other" for our queues). */

static void child_recv(void *want) {
    drop_to(1001, 1001);
    struct mbuf b;
    long w = (long)want;
    errno = 0;
    long n = msgrcv(q, &b, sizeof b.mtext, 0, 0);
    if (w < 0)
        CHECK(n == -1 && errno == -w);
    else
        CHECK(n == w);
}

static void child_send(void *want_errno) {
    drop_to(1001, 1001);
    struct mbuf b;
    memset(&b, 's', sizeof b);
    b.mtype = 2;
    errno = 0;
    int r = msgsnd(q, &b, 5, 0);
    if ((long)want_errno)
        CHECK(r == -1 && errno == (int)(long)want_errno);
    else
        CHECK(r == 0);
}

static void set_mode_qbytes(unsigned mode, unsigned long qbytes) {
    struct msqid_ds ds = stat_of(q);
    ds.msg_perm.mode = (unsigned short)mode;
    ds.msg_qbytes = qbytes;
    EXPECT_OK(msgctl(q, IPC_SET, &ds));
}

/* still waiting after a while (a wrongly woken caller fails at once and exits) */
static int still_waits(pid_t pid) {
    sleep_ms(200);
    return child_alive(pid) && wait_asleep(pid, pid);
}

/* A new queue in q, of msg_qbytes 10, holding 8 bytes, and a child (uid 1001) blocked
 * sending 5 more: child_send(want_errno). */
static pid_t sender_blocked_on_full_queue(long want_errno) {
    q = EXPECT_OK(msgget(IPC_PRIVATE, 0666));
    set_mode_qbytes(0666, 10);
    EXPECT_OK(snd(q, 1, 8));
    pid_t pid = spawn_child(child_send, (void *)want_errno);
    CHECK(wait_asleep(pid, pid));
    return pid;
}

static void test_blocked_and_ipc_set(void) {
    struct mbuf b;
    pid_t pid;
    /* a receiver that loses read permission: EACCES */
    q = EXPECT_OK(msgget(IPC_PRIVATE, 0666));
    pid = spawn_child(child_recv, (void *)(long)-EACCES);
    CHECK(wait_asleep(pid, pid));
    set_mode_qbytes(0660, 16384);
    CHECK(EXITED_OK(reap_child(pid, 5000)));
    EXPECT_OK(msgctl(q, IPC_RMID, NULL));

    /* one that keeps it waits on through IPC_SET and gets the next message */
    q = EXPECT_OK(msgget(IPC_PRIVATE, 0666));
    pid = spawn_child(child_recv, (void *)7L);
    CHECK(wait_asleep(pid, pid));
    set_mode_qbytes(0664, 16384);
    CHECK(still_waits(pid));
    EXPECT_OK(snd(q, 1, 7));
    CHECK(EXITED_OK(reap_child(pid, 5000)));
    CHECK(stat_of(q).msg_qnum == 0);
    EXPECT_OK(msgctl(q, IPC_RMID, NULL));

    /* a sender whose message does not fit is not woken by IPC_SET: it sleeps on without
     * write permission, and fails once a receive makes room */
    pid = sender_blocked_on_full_queue(EACCES);
    set_mode_qbytes(0664, 10);
    CHECK(still_waits(pid));
    CHECK(msgrcv(q, &b, sizeof b.mtext, 0, IPC_NOWAIT) == 8);
    CHECK(EXITED_OK(reap_child(pid, 5000)));
    CHECK(stat_of(q).msg_qnum == 0);
    EXPECT_OK(msgctl(q, IPC_RMID, NULL));

    /* one whose message fits after the IPC_SET is woken by it, and fails */
    pid = sender_blocked_on_full_queue(EACCES);
    set_mode_qbytes(0664, 20);
    CHECK(EXITED_OK(reap_child(pid, 5000)));
    CHECK(stat_of(q).msg_qnum == 1);
    EXPECT_OK(msgctl(q, IPC_RMID, NULL));

    /* a sender that keeps write permission sleeps through a lowered msg_qbytes and a
     * receive that leaves too little room, and sends once msg_qbytes allows it */
    pid = sender_blocked_on_full_queue(0);
    set_mode_qbytes(0666, 4);
    CHECK(still_waits(pid));
    CHECK(msgrcv(q, &b, sizeof b.mtext, 0, IPC_NOWAIT) == 8);
    CHECK(still_waits(pid)); /* 5 bytes > 4 */
    set_mode_qbytes(0666, 5);
    CHECK(EXITED_OK(reap_child(pid, 5000)));
    struct msqid_ds ds = stat_of(q);
    CHECK(ds.msg_qnum == 1 && ds.msg_cbytes == 5);
    EXPECT_OK(msgctl(q, IPC_RMID, NULL));
}

static void cleanup(void) {
    if (q > 0)
        msgctl(q, IPC_RMID, NULL);
}

int main(void) {
    watchdog(50, cleanup);
    test_copy_reads_buffer_first();
    test_ipc64_cmd();
    test_qbytes_is_an_int();
    test_stat_index_bits();
    test_index_window();
    test_index_reused_by_another();
    test_blocked_and_ipc_set();
    return TEST_DONE();
}
