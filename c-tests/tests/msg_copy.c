/* msgrcv MSG_COPY (Linux >= 3.8, CONFIG_CHECKPOINT_RESTORE): copy the message at a
 * position without removing it.  Requires IPC_NOWAIT, excludes MSG_EXCEPT, ENOMSG past the
 * end, E2BIG for a small buffer; leaves the queue and its statistics alone. */
#include "../common.h"
#include <limits.h>
#include <sys/ipc.h>
#include <sys/msg.h>

struct mbuf {
    long mtype;
    char mtext[512];
};

static struct mbuf rb;

static int snd(int q, long type, size_t len) {
    struct mbuf b;
    b.mtype = type;
    for (size_t i = 0; i < len; i++)
        b.mtext[i] = (char)(type * 13 + len + i);
    return msgsnd(q, &b, len, IPC_NOWAIT);
}

static int content_ok(long type, long len) {
    for (long i = 0; i < len; i++)
        if (rb.mtext[i] != (char)(type * 13 + len + i))
            return 0;
    return 1;
}

static int copy_is(int q, long pos, long type, long len) {
    memset(&rb, 0, sizeof rb);
    long n = msgrcv(q, &rb, sizeof rb.mtext, pos, MSG_COPY | IPC_NOWAIT);
    if (n != len || rb.mtype != type || !content_ok(type, len)) {
        fprintf(stderr, "  copy at %ld: len %ld type %ld errno %d, want %ld/%ld\n", pos, n, rb.mtype,
                errno, len, type);
        return 0;
    }
    return 1;
}

static struct msqid_ds st(int q) {
    struct msqid_ds ds;
    memset(&ds, 0, sizeof ds);
    CHECK(msgctl(q, IPC_STAT, &ds) == 0);
    return ds;
}

int main(void) {
    alarm(20);
    int q = EXPECT_OK(msgget(IPC_PRIVATE, 0600));

    EXPECT_ERR(msgrcv(q, &rb, sizeof rb.mtext, 0, MSG_COPY | IPC_NOWAIT), ENOMSG); /* empty */

    long types[] = {3, 1, 3, 2, 9};
    long lens[] = {10, 0, 30, 7, 100};
    for (int i = 0; i < 5; i++)
        EXPECT_OK(snd(q, types[i], (size_t)lens[i]));
    struct msqid_ds before = st(q);
    CHECK(before.msg_qnum == 5 && before.msg_cbytes == 147);

    /* by position, in queue order, whatever the type */
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < 5; i++)
            CHECK(copy_is(q, i, types[i], lens[i]));
    /* in any order */
    CHECK(copy_is(q, 4, 9, 100));
    CHECK(copy_is(q, 0, 3, 10));
    CHECK(copy_is(q, 2, 3, 30));
    /* past the end */
    EXPECT_ERR(msgrcv(q, &rb, sizeof rb.mtext, 5, MSG_COPY | IPC_NOWAIT), ENOMSG);
    EXPECT_ERR(msgrcv(q, &rb, sizeof rb.mtext, 1000, MSG_COPY | IPC_NOWAIT), ENOMSG);
    EXPECT_ERR(msgrcv(q, &rb, sizeof rb.mtext, LONG_MAX, MSG_COPY | IPC_NOWAIT), ENOMSG);
    /* a negative position matches nothing */
    EXPECT_ERR(msgrcv(q, &rb, sizeof rb.mtext, -1, MSG_COPY | IPC_NOWAIT), ENOMSG);
    /* MSG_COPY needs IPC_NOWAIT and excludes MSG_EXCEPT */
    EXPECT_ERR(msgrcv(q, &rb, sizeof rb.mtext, 0, MSG_COPY), EINVAL);
    EXPECT_ERR(msgrcv(q, &rb, sizeof rb.mtext, 0, MSG_COPY | MSG_NOERROR), EINVAL);
    EXPECT_ERR(msgrcv(q, &rb, sizeof rb.mtext, 1, MSG_COPY | MSG_EXCEPT | IPC_NOWAIT), EINVAL);
    EXPECT_ERR(msgrcv(q, &rb, sizeof rb.mtext, 0, MSG_COPY | MSG_EXCEPT), EINVAL);
    /* a buffer too small: E2BIG; with MSG_NOERROR the kernel reports EINVAL (it cannot
     * truncate a copy) */
    EXPECT_ERR(msgrcv(q, &rb, 9, 0, MSG_COPY | IPC_NOWAIT), E2BIG);
    EXPECT_ERR(msgrcv(q, &rb, 99, 4, MSG_COPY | IPC_NOWAIT), E2BIG);
    EXPECT_ERR(msgrcv(q, &rb, 9, 0, MSG_COPY | IPC_NOWAIT | MSG_NOERROR), EINVAL);
    /* exactly large enough is fine; a zero-length message copies into a zero-size buffer */
    CHECK(msgrcv(q, &rb, 10, 0, MSG_COPY | IPC_NOWAIT) == 10 && rb.mtype == 3);
    CHECK(msgrcv(q, &rb, 0, 1, MSG_COPY | IPC_NOWAIT) == 0 && rb.mtype == 1);
    CHECK(msgrcv(q, &rb, 100, 4, MSG_COPY | IPC_NOWAIT | MSG_NOERROR) == 100 && rb.mtype == 9);
    /* argument errors */
    EXPECT_ERR(msgrcv(q, &rb, (size_t)-1, 0, MSG_COPY | IPC_NOWAIT), EINVAL);
    EXPECT_ERR(msgrcv(-1, &rb, sizeof rb.mtext, 0, MSG_COPY | IPC_NOWAIT), EINVAL);

    /* nothing changed: same messages, and MSG_COPY is not a receive (no lrpid / rtime) */
    struct msqid_ds after = st(q);
    CHECK(after.msg_qnum == 5 && after.msg_cbytes == 147);
    CHECK(after.msg_lrpid == 0 && after.msg_rtime == 0);
    CHECK(after.msg_lspid == getpid());

    /* positions follow the queue after a real receive */
    memset(&rb, 0, sizeof rb);
    CHECK(msgrcv(q, &rb, sizeof rb.mtext, 1, IPC_NOWAIT) == 0 && rb.mtype == 1);
    CHECK(copy_is(q, 0, 3, 10));
    CHECK(copy_is(q, 1, 3, 30));
    CHECK(copy_is(q, 2, 2, 7));
    CHECK(copy_is(q, 3, 9, 100));
    EXPECT_ERR(msgrcv(q, &rb, sizeof rb.mtext, 4, MSG_COPY | IPC_NOWAIT), ENOMSG);
    EXPECT_OK(snd(q, 4, 3));
    CHECK(copy_is(q, 4, 4, 3));
    /* a normal receive still gets the messages, in order */
    long rest[] = {3, 3, 2, 9, 4};
    for (int i = 0; i < 5; i++) {
        memset(&rb, 0, sizeof rb);
        CHECK(msgrcv(q, &rb, sizeof rb.mtext, 0, IPC_NOWAIT) >= 0 && rb.mtype == rest[i]);
    }
    EXPECT_ERR(msgrcv(q, &rb, sizeof rb.mtext, 0, MSG_COPY | IPC_NOWAIT), ENOMSG);

    EXPECT_OK(msgctl(q, IPC_RMID, NULL));
    EXPECT_ERR(msgrcv(q, &rb, sizeof rb.mtext, 0, MSG_COPY | IPC_NOWAIT), EINVAL);
    return TEST_DONE();
}
