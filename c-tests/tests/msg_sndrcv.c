/* msgsnd / msgrcv without blocking: argument errors, EFAULT, queue-full by bytes and by
 * message count (the kernel caps the number of messages at msg_qbytes too), type
 * selection (0, >0, <0, MSG_EXCEPT), E2BIG and MSG_NOERROR, zero-length messages,
 * ENOMSG, bad and removed ids. */
#include "../common.h"
#include <limits.h>
#include <stdint.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/msg.h>

struct mbuf {
    long mtype;
    char mtext[];
};

static struct mbuf *sb, *rb; /* send / receive buffers, msgmax + slack bytes of text */
static long msgmax;

static int snd(int q, long type, size_t len, int flg) {
    sb->mtype = type;
    for (size_t i = 0; i < len; i++)
        sb->mtext[i] = (char)(type * 7 + i);
    return msgsnd(q, sb, len, flg);
}

/* receive with IPC_NOWAIT and check type/length/content */
static int rcv_is(int q, long msgtyp, int flg, long want_type, long want_len) {
    memset(rb, 0, sizeof(long) + 64);
    errno = 0;
    long n = msgrcv(q, rb, (size_t)msgmax, msgtyp, flg | IPC_NOWAIT);
    if (n != want_len || rb->mtype != want_type) {
        fprintf(stderr, "  rcv(msgtyp %ld): got len %ld type %ld (errno %d), want len %ld type %ld\n",
                msgtyp, n, rb->mtype, errno, want_len, want_type);
        return 0;
    }
    for (long i = 0; i < n; i++)
        if (rb->mtext[i] != (char)(want_type * 7 + i))
            return 0;
    return 1;
}

static void qstate(int q, unsigned long *qnum, unsigned long *cbytes) {
    struct msqid_ds ds;
    memset(&ds, 0, sizeof ds);
    CHECK(msgctl(q, IPC_STAT, &ds) == 0);
    *qnum = ds.msg_qnum;
    *cbytes = ds.msg_cbytes;
}

static int qis(int q, unsigned long qnum, unsigned long cbytes) {
    unsigned long n, b;
    qstate(q, &n, &b);
    if (n != qnum || b != cbytes) {
        fprintf(stderr, "  queue has %lu msgs %lu bytes, want %lu / %lu\n", n, b, qnum, cbytes);
        return 0;
    }
    return 1;
}

static void set_qbytes(int q, unsigned long qbytes) {
    struct msqid_ds ds;
    CHECK(msgctl(q, IPC_STAT, &ds) == 0);
    ds.msg_qbytes = qbytes;
    EXPECT_OK(msgctl(q, IPC_SET, &ds));
    CHECK(msgctl(q, IPC_STAT, &ds) == 0 && ds.msg_qbytes == qbytes);
}

static void test_send_errors(void) {
    int q = EXPECT_OK(msgget(IPC_PRIVATE, 0600));
    EXPECT_ERR(snd(q, 0, 4, IPC_NOWAIT), EINVAL);
    EXPECT_ERR(snd(q, -1, 4, IPC_NOWAIT), EINVAL);
    EXPECT_ERR(snd(q, LONG_MIN, 0, 0), EINVAL);
    EXPECT_ERR(snd(q, 1, (size_t)msgmax + 1, IPC_NOWAIT), EINVAL);
    EXPECT_ERR(snd(q, 1, (size_t)msgmax + 1, 0), EINVAL);
    sb->mtype = 1;
    EXPECT_ERR(msgsnd(q, sb, (size_t)-1, IPC_NOWAIT), EINVAL);        /* "negative" size */
    EXPECT_ERR(msgsnd(q, sb, (size_t)LONG_MAX + 1, IPC_NOWAIT), EINVAL);
    EXPECT_ERR(msgsnd(q, sb, SIZE_MAX / 2, IPC_NOWAIT), EINVAL);
    CHECK(qis(q, 0, 0));
    /* exactly msgmax bytes is fine (msgmnb >= msgmax on any sane system) */
    if (read_kernel_long("msgmnb") >= msgmax) {
        EXPECT_OK(snd(q, 3, (size_t)msgmax, IPC_NOWAIT));
        CHECK(qis(q, 1, (unsigned long)msgmax));
        CHECK(rcv_is(q, 0, 0, 3, msgmax));
    }
    /* EFAULT: NULL buffer, and a text that runs into an unmapped page */
    EXPECT_ERR(msgsnd(q, NULL, 4, IPC_NOWAIT), EFAULT);
    EXPECT_ERR(msgsnd(q, NULL, 0, IPC_NOWAIT), EFAULT); /* mtype itself is unreadable */
    EXPECT_ERR(msgsnd(q, NULL, 0, 0), EFAULT);
    long pg = sysconf(_SC_PAGESIZE);
    char *map = mmap(NULL, 2 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(map != MAP_FAILED);
    if (map != MAP_FAILED) {
        CHECK(mprotect(map + pg, pg, PROT_NONE) == 0);
        struct mbuf *edge = (struct mbuf *)(map + pg - sizeof(long) - 8); /* 8 readable text bytes */
        edge->mtype = 9;
        memcpy(edge->mtext, "ABCDEFGH", 8);
        EXPECT_ERR(msgsnd(q, edge, 9, IPC_NOWAIT), EFAULT);
        EXPECT_ERR(msgsnd(q, edge, 200, 0), EFAULT);
        CHECK(qis(q, 0, 0)); /* nothing was queued */
        EXPECT_OK(msgsnd(q, edge, 8, IPC_NOWAIT));
        memset(rb, 0, 32);
        CHECK(msgrcv(q, rb, 64, 0, IPC_NOWAIT) == 8 && rb->mtype == 9 && memcmp(rb->mtext, "ABCDEFGH", 8) == 0);
        /* a mtype in an unmapped page */
        EXPECT_ERR(msgsnd(q, (struct mbuf *)(map + pg), 0, IPC_NOWAIT), EFAULT);
        munmap(map, 2 * pg);
    }
    /* bad ids */
    EXPECT_ERR(snd(-1, 1, 4, IPC_NOWAIT), EINVAL);
    EXPECT_ERR(snd(INT_MIN, 1, 4, 0), EINVAL);
    EXPECT_OK(msgctl(q, IPC_RMID, NULL));
    EXPECT_ERR(snd(q, 1, 4, IPC_NOWAIT), EINVAL); /* removed */
    EXPECT_ERR(snd(q, 1, 4, 0), EINVAL);
}

static void test_full(void) {
    unsigned long n, b;
    int q = EXPECT_OK(msgget(IPC_PRIVATE, 0600));

    /* full by bytes */
    set_qbytes(q, 100);
    EXPECT_OK(snd(q, 1, 60, IPC_NOWAIT));
    EXPECT_ERR(snd(q, 2, 41, IPC_NOWAIT), EAGAIN);
    CHECK(qis(q, 1, 60));
    EXPECT_OK(snd(q, 2, 40, IPC_NOWAIT)); /* exactly fills it */
    CHECK(qis(q, 2, 100));
    EXPECT_ERR(snd(q, 3, 1, IPC_NOWAIT), EAGAIN);
    EXPECT_OK(snd(q, 4, 0, IPC_NOWAIT)); /* a zero-length message still fits */
    CHECK(qis(q, 3, 100));
    CHECK(rcv_is(q, 0, 0, 1, 60));
    EXPECT_ERR(snd(q, 5, 61, IPC_NOWAIT), EAGAIN);
    EXPECT_OK(snd(q, 5, 60, IPC_NOWAIT));
    CHECK(rcv_is(q, 0, 0, 2, 40));
    CHECK(rcv_is(q, 0, 0, 4, 0));
    CHECK(rcv_is(q, 0, 0, 5, 60));
    CHECK(qis(q, 0, 0));
    /* a message larger than msg_qbytes never fits, even in an empty queue */
    EXPECT_ERR(snd(q, 1, 101, IPC_NOWAIT), EAGAIN);
    CHECK(qis(q, 0, 0));

    /* full by count: at most msg_qbytes messages, whatever their size */
    set_qbytes(q, 5);
    for (int i = 0; i < 5; i++)
        EXPECT_OK(snd(q, 10 + i, 0, IPC_NOWAIT));
    EXPECT_ERR(snd(q, 20, 0, IPC_NOWAIT), EAGAIN);
    CHECK(qis(q, 5, 0));
    CHECK(rcv_is(q, 0, 0, 10, 0));
    EXPECT_OK(snd(q, 20, 0, IPC_NOWAIT));
    EXPECT_ERR(snd(q, 21, 0, IPC_NOWAIT), EAGAIN);
    for (int i = 1; i < 5; i++)
        CHECK(rcv_is(q, 0, 0, 10 + i, 0));
    CHECK(rcv_is(q, 0, 0, 20, 0));
    CHECK(qis(q, 0, 0));
    /* count and bytes together: 5 slots, 3 bytes */
    EXPECT_OK(snd(q, 1, 3, IPC_NOWAIT));
    EXPECT_ERR(snd(q, 1, 3, IPC_NOWAIT), EAGAIN);
    for (int i = 0; i < 4; i++)
        EXPECT_OK(snd(q, 2, 0, IPC_NOWAIT));
    EXPECT_ERR(snd(q, 2, 0, IPC_NOWAIT), EAGAIN);
    CHECK(qis(q, 5, 3));

    /* lowering msg_qbytes below the current content is allowed; nothing fits until it drains */
    set_qbytes(q, 1);
    CHECK(qis(q, 5, 3));
    EXPECT_ERR(snd(q, 3, 0, IPC_NOWAIT), EAGAIN);
    CHECK(rcv_is(q, 1, 0, 1, 3));
    EXPECT_ERR(snd(q, 3, 0, IPC_NOWAIT), EAGAIN); /* still 4 messages >= 1 */
    for (int i = 0; i < 4; i++)
        CHECK(rcv_is(q, 0, 0, 2, 0));
    EXPECT_OK(snd(q, 3, 1, IPC_NOWAIT));
    EXPECT_ERR(snd(q, 3, 0, IPC_NOWAIT), EAGAIN);
    CHECK(rcv_is(q, 0, 0, 3, 1));

    /* msg_qbytes 0: nothing at all fits */
    set_qbytes(q, 0);
    EXPECT_ERR(snd(q, 1, 0, IPC_NOWAIT), EAGAIN);
    qstate(q, &n, &b);
    CHECK(n == 0 && b == 0);
    EXPECT_OK(msgctl(q, IPC_RMID, NULL));
}

static void test_receive(void) {
    int q = EXPECT_OK(msgget(IPC_PRIVATE, 0600));
    /* empty queue */
    EXPECT_ERR(msgrcv(q, rb, 64, 0, IPC_NOWAIT), ENOMSG);
    EXPECT_ERR(msgrcv(q, rb, 64, 5, IPC_NOWAIT), ENOMSG);
    EXPECT_ERR(msgrcv(q, rb, 64, -5, IPC_NOWAIT), ENOMSG);
    EXPECT_ERR(msgrcv(q, rb, 64, 5, IPC_NOWAIT | MSG_EXCEPT), ENOMSG);
    EXPECT_ERR(msgrcv(q, NULL, 64, 0, IPC_NOWAIT), ENOMSG); /* buffer not touched */

    /* queue: 3/10 5/20 1/5 3/11 2/0 5/21 4/7   (type/len) */
    long types[] = {3, 5, 1, 3, 2, 5, 4};
    long lens[] = {10, 20, 5, 11, 0, 21, 7};
    for (int i = 0; i < 7; i++)
        EXPECT_OK(snd(q, types[i], (size_t)lens[i], IPC_NOWAIT));
    CHECK(qis(q, 7, 74));
    /* type not present */
    EXPECT_ERR(msgrcv(q, rb, 64, 6, IPC_NOWAIT), ENOMSG);
    EXPECT_ERR(msgrcv(q, rb, 64, LONG_MAX, IPC_NOWAIT), ENOMSG);
    /* > 0: first of that type */
    CHECK(rcv_is(q, 5, 0, 5, 20));
    /* < 0: lowest type <= |msgtyp| */
    CHECK(rcv_is(q, -4, 0, 1, 5));
    CHECK(rcv_is(q, -4, 0, 2, 0));
    CHECK(rcv_is(q, -4, 0, 3, 10)); /* first of the two type-3 messages */
    EXPECT_ERR(msgrcv(q, rb, 64, -2, IPC_NOWAIT), ENOMSG);
    /* MSG_EXCEPT with > 0: first message not of that type */
    CHECK(rcv_is(q, 3, MSG_EXCEPT, 5, 21)); /* queue now 3/11 5/21 4/7 */
    /* MSG_EXCEPT is ignored for msgtyp < 0 */
    CHECK(rcv_is(q, -4, MSG_EXCEPT, 3, 11));
    /* MSG_EXCEPT with 0 means "any" */
    CHECK(rcv_is(q, 0, MSG_EXCEPT, 4, 7));
    CHECK(qis(q, 0, 0));
    EXPECT_ERR(msgrcv(q, rb, 64, 0, IPC_NOWAIT), ENOMSG);

    /* MSG_EXCEPT when every message has the excluded type */
    EXPECT_OK(snd(q, 8, 1, IPC_NOWAIT));
    EXPECT_ERR(msgrcv(q, rb, 64, 8, IPC_NOWAIT | MSG_EXCEPT), ENOMSG);
    CHECK(rcv_is(q, 8, 0, 8, 1));

    /* msgtyp LONG_MIN: "lowest type of all" (|LONG_MIN| taken as LONG_MAX) */
    EXPECT_OK(snd(q, LONG_MAX, 2, IPC_NOWAIT));
    EXPECT_OK(snd(q, 1000, 3, IPC_NOWAIT));
    EXPECT_OK(snd(q, LONG_MAX, 4, IPC_NOWAIT));
    memset(rb, 0, 16);
    CHECK(msgrcv(q, rb, 64, LONG_MIN, IPC_NOWAIT) == 3 && rb->mtype == 1000);
    CHECK(msgrcv(q, rb, 64, -LONG_MAX, IPC_NOWAIT) == 2 && rb->mtype == LONG_MAX);
    CHECK(msgrcv(q, rb, 64, LONG_MAX, IPC_NOWAIT) == 4 && rb->mtype == LONG_MAX);

    /* E2BIG: the message stays queued; MSG_NOERROR truncates and removes it */
    EXPECT_OK(snd(q, 7, 50, IPC_NOWAIT));
    EXPECT_OK(snd(q, 8, 5, IPC_NOWAIT));
    EXPECT_ERR(msgrcv(q, rb, 49, 0, IPC_NOWAIT), E2BIG);
    EXPECT_ERR(msgrcv(q, rb, 0, 0, IPC_NOWAIT), E2BIG);
    EXPECT_ERR(msgrcv(q, rb, 10, 7, IPC_NOWAIT), E2BIG);
    EXPECT_ERR(msgrcv(q, rb, 10, -7, IPC_NOWAIT), E2BIG);
    CHECK(qis(q, 2, 55));
    /* the E2BIG message blocks nothing else: another type is still receivable */
    CHECK(rcv_is(q, 8, 0, 8, 5));
    EXPECT_OK(snd(q, 8, 5, IPC_NOWAIT));
    memset(rb->mtext, 0x55, 64);
    CHECK(msgrcv(q, rb, 20, 0, IPC_NOWAIT | MSG_NOERROR) == 20 && rb->mtype == 7);
    int ok = 1;
    for (int i = 0; i < 20; i++)
        ok &= rb->mtext[i] == (char)(7 * 7 + i);
    for (int i = 20; i < 64; i++)
        ok &= rb->mtext[i] == 0x55; /* nothing written past the requested size */
    CHECK(ok);
    CHECK(qis(q, 1, 5));
    /* MSG_NOERROR with size 0 consumes the message and returns 0 */
    CHECK(msgrcv(q, rb, 0, 0, IPC_NOWAIT | MSG_NOERROR) == 0 && rb->mtype == 8);
    CHECK(qis(q, 0, 0));
    /* a message exactly the buffer size is not E2BIG */
    EXPECT_OK(snd(q, 9, 33, IPC_NOWAIT));
    CHECK(msgrcv(q, rb, 33, 0, IPC_NOWAIT) == 33 && rb->mtype == 9);

    /* zero-length messages */
    for (int i = 1; i <= 3; i++)
        EXPECT_OK(snd(q, i, 0, IPC_NOWAIT));
    CHECK(qis(q, 3, 0));
    for (int i = 1; i <= 3; i++)
        CHECK(rcv_is(q, 0, 0, i, 0));
    EXPECT_OK(snd(q, 4, 0, IPC_NOWAIT));
    CHECK(msgrcv(q, rb, 0, 0, IPC_NOWAIT) == 0 && rb->mtype == 4);

    /* argument errors */
    EXPECT_OK(snd(q, 1, 4, IPC_NOWAIT));
    EXPECT_ERR(msgrcv(q, rb, (size_t)-1, 0, IPC_NOWAIT), EINVAL);
    EXPECT_ERR(msgrcv(q, rb, (size_t)LONG_MAX + 1, 0, 0), EINVAL);
    EXPECT_ERR(msgrcv(-1, rb, 64, 0, IPC_NOWAIT), EINVAL);
    EXPECT_ERR(msgrcv(INT_MIN, rb, 64, 0, 0), EINVAL);
    CHECK(qis(q, 1, 4));
    /* NULL buffer with a matching message: EFAULT (what happens to the message is not
     * asserted) */
    EXPECT_ERR(msgrcv(q, NULL, 64, 0, IPC_NOWAIT), EFAULT);
    /* A buffer that cannot be written: read-only, or whose text runs into an unmapped page
     * (a message is sent before each, so that one is there whatever became of the last;
     * the second is received by its type, which no earlier message has) */
    long page = sysconf(_SC_PAGESIZE);
    char *ro = mmap(NULL, 2 * page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(ro != MAP_FAILED);
    if (ro != MAP_FAILED) {
        EXPECT_OK(snd(q, 1, 4, IPC_NOWAIT));
        EXPECT_ERR(msgrcv(q, ro, 64, 0, IPC_NOWAIT), EFAULT);
        CHECK(mprotect(ro, page, PROT_READ | PROT_WRITE) == 0);
        CHECK(mprotect(ro + page, page, PROT_NONE) == 0);
        EXPECT_OK(snd(q, 7, 64, IPC_NOWAIT));
        EXPECT_ERR(msgrcv(q, ro + page - sizeof(long) - 8, 64, 7, IPC_NOWAIT), EFAULT);
        munmap(ro, 2 * page);
    }

    EXPECT_OK(msgctl(q, IPC_RMID, NULL));
    EXPECT_ERR(msgrcv(q, rb, 64, 0, IPC_NOWAIT), EINVAL);
    EXPECT_ERR(msgrcv(q, rb, 64, 0, 0), EINVAL);
}

int main(void) {
    alarm(20);
    msgmax = read_kernel_long("msgmax");
    CHECK(msgmax > 0);
    if (msgmax <= 0)
        return TEST_DONE();
    sb = calloc(1, sizeof(long) + (size_t)msgmax + 256);
    rb = calloc(1, sizeof(long) + (size_t)msgmax + 256);
    test_send_errors();
    test_full();
    test_receive();
    return TEST_DONE();
}
