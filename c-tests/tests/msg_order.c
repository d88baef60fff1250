/* Message order: FIFO within a type over many messages, and type selection (0, >0, <0,
 * MSG_EXCEPT) on a queue mixing types, checked against a simple model of the queue. */
#include "../common.h"
#include <sys/ipc.h>
#include <sys/msg.h>

struct mbuf {
    long mtype;
    char mtext[64];
};

#define MAXQ 4096
static struct {
    long type;
    unsigned seq;
    unsigned len;
} model[MAXQ];
static int mlen;

static unsigned rnd_state = 12345;
static unsigned rnd(void) {
    rnd_state = rnd_state * 1103515245u + 12345u;
    return rnd_state >> 8;
}

/* index in the model of the message msgrcv(msgtyp, flg) must return, or -1 */
static int model_pick(long msgtyp, int except) {
    if (msgtyp == 0)
        return mlen ? 0 : -1;
    if (msgtyp < 0) {
        int best = -1;
        for (int i = 0; i < mlen; i++)
            if (model[i].type <= -msgtyp && (best < 0 || model[i].type < model[best].type))
                best = i;
        return best;
    }
    for (int i = 0; i < mlen; i++)
        if (except ? model[i].type != msgtyp : model[i].type == msgtyp)
            return i;
    return -1;
}

static int send_one(int q, long type, unsigned seq) {
    struct mbuf b;
    b.mtype = type;
    unsigned len = 4 + seq % 29;
    memcpy(b.mtext, &seq, 4);
    for (unsigned i = 4; i < len; i++)
        b.mtext[i] = (char)(seq + i);
    if (msgsnd(q, &b, len, IPC_NOWAIT) != 0)
        return 0;
    model[mlen].type = type;
    model[mlen].seq = seq;
    model[mlen].len = len;
    mlen++;
    return 1;
}

/* receive with a selector and compare with the model; returns 1 if consistent */
static int recv_one(int q, long msgtyp, int except) {
    int want = model_pick(msgtyp, except);
    struct mbuf b;
    memset(&b, 0, sizeof b);
    errno = 0;
    long n = msgrcv(q, &b, sizeof b.mtext, msgtyp, IPC_NOWAIT | (except ? MSG_EXCEPT : 0));
    if (want < 0) {
        if (n == -1 && errno == ENOMSG)
            return 1;
        fprintf(stderr, "  msgrcv(%ld,%d) returned %ld errno %d, want ENOMSG\n", msgtyp, except, n, errno);
        return 0;
    }
    unsigned seq = 0;
    memcpy(&seq, b.mtext, 4);
    int ok = n == (long)model[want].len && b.mtype == model[want].type && seq == model[want].seq;
    for (long i = 4; ok && i < n; i++)
        ok = b.mtext[i] == (char)(seq + i);
    if (!ok)
        fprintf(stderr, "  msgrcv(%ld,%d): got type %ld seq %u len %ld, want type %ld seq %u len %u\n",
                msgtyp, except, b.mtype, seq, n, model[want].type, model[want].seq, model[want].len);
    memmove(&model[want], &model[want + 1], (size_t)(mlen - want - 1) * sizeof model[0]);
    mlen--;
    return ok;
}

int main(void) {
    alarm(20);
    int q = EXPECT_OK(msgget(IPC_PRIVATE, 0600));

    /* 1. pure FIFO, one type, many messages, refilling as we go */
    {
        unsigned next_send = 0, next_recv = 0;
        int bad = 0;
        struct mbuf b;
        while (next_recv < 20000) {
            while (next_send < 20000 && next_send - next_recv < 300) {
                b.mtype = 7;
                memcpy(b.mtext, &next_send, 4);
                if (msgsnd(q, &b, 4, IPC_NOWAIT) != 0) {
                    bad++;
                    break;
                }
                next_send++;
            }
            unsigned got = ~0u;
            if (msgrcv(q, &b, sizeof b.mtext, (next_recv & 1) ? 7 : 0, IPC_NOWAIT) != 4 || b.mtype != 7)
                bad++;
            memcpy(&got, b.mtext, 4);
            if (got != next_recv)
                bad++;
            next_recv++;
            if (bad > 5)
                break;
        }
        CHECK(bad == 0);
        CHECK(next_recv == 20000);
    }

    /* 2. FIFO within each type with eight interleaved types: receiving by type yields each
     *    type's messages in sending order */
    {
        unsigned seqs[9] = {0};
        int bad = 0;
        struct msqid_ds ds0;
        CHECK(msgctl(q, IPC_STAT, &ds0) == 0);
        int nmsg = (int)(ds0.msg_qbytes / 32); /* messages are at most 32 bytes */
        if (nmsg > 600)
            nmsg = 600;
        CHECK(nmsg >= 100);
        for (int i = 0; i < nmsg; i++) {
            long t = 1 + rnd() % 8;
            if (!send_one(q, t, seqs[t]++))
                bad++;
        }
        CHECK(bad == 0);
        CHECK(mlen == nmsg);
        unsigned expect[9] = {0};
        for (long t = 8; t >= 1; t--) {
            struct mbuf b;
            while (msgrcv(q, &b, sizeof b.mtext, t, IPC_NOWAIT) >= 0) {
                unsigned s;
                memcpy(&s, b.mtext, 4);
                if (b.mtype != t || s != expect[t]++)
                    bad++;
            }
            if (errno != ENOMSG)
                bad++;
        }
        for (int t = 1; t <= 8; t++)
            if (expect[t] != seqs[t])
                bad++;
        CHECK(bad == 0);
        mlen = 0;
        struct msqid_ds ds;
        CHECK(msgctl(q, IPC_STAT, &ds) == 0 && ds.msg_qnum == 0 && ds.msg_cbytes == 0);
    }

    /* 3. random mix of sends and selector receives, against the model */
    {
        unsigned seq = 0;
        int bad = 0, sends = 0, recvs = 0;
        for (int op = 0; op < 30000 && bad < 5; op++) {
            unsigned r = rnd() % 100;
            if (r < 50 && mlen < 400) {
                if (!send_one(q, 1 + rnd() % 10, seq++))
                    bad++;
                sends++;
            } else {
                long t = 1 + rnd() % 11;
                int sel = rnd() % 4;
                int ok;
                if (sel == 0)
                    ok = recv_one(q, 0, 0);
                else if (sel == 1)
                    ok = recv_one(q, t, 0);
                else if (sel == 2)
                    ok = recv_one(q, -t, 0);
                else
                    ok = recv_one(q, t, 1);
                if (!ok)
                    bad++;
                recvs++;
            }
        }
        CHECK(bad == 0);
        CHECK(sends > 1000 && recvs > 1000);
        /* the queue holds exactly the model's messages, in order */
        struct msqid_ds ds;
        unsigned long bytes = 0;
        for (int i = 0; i < mlen; i++)
            bytes += model[i].len;
        CHECK(msgctl(q, IPC_STAT, &ds) == 0 && ds.msg_qnum == (unsigned long)mlen && ds.msg_cbytes == bytes);
        while (mlen > 0 && bad < 5)
            if (!recv_one(q, 0, 0))
                bad++;
        CHECK(bad == 0);
        EXPECT_ERR(msgrcv(q, &(struct mbuf){0}, 64, 0, IPC_NOWAIT), ENOMSG);
    }

    EXPECT_OK(msgctl(q, IPC_RMID, NULL));
    return TEST_DONE();
}
