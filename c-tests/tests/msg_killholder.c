/* A process SIGKILLed in the middle of msgsnd / msgrcv (large messages, so that the kill
 * often lands while the call is under way) leaves the queue consistent and usable:
 * IPC_STAT right after the kill reports exactly the messages that can then be received,
 * each intact, and sending and receiving work at once.  Repeated 60 times. */
#include "../common.h"
#include <stdint.h>
#include <sys/ipc.h>
#include <sys/msg.h>

#define TEXT 7000

struct mbuf {
    long mtype;
    char mtext[TEXT];
};

static void fill(struct mbuf *m, uint64_t seq) {
    m->mtype = 1 + (long)(seq % 3);
    memcpy(m->mtext, &seq, 8);
    for (int i = 8; i < TEXT; i++)
        m->mtext[i] = (char)(seq * 131 + (uint64_t)i);
}

static int intact(const struct mbuf *m, long n) {
    uint64_t seq;
    if (n != TEXT)
        return 0;
    memcpy(&seq, m->mtext, 8);
    if (m->mtype != 1 + (long)(seq % 3))
        return 0;
    for (int i = 8; i < TEXT; i++)
        if (m->mtext[i] != (char)(seq * 131 + (uint64_t)i))
            return 0;
    return 1;
}

static void churn(int q, int seed) {
    static struct mbuf m;
    uint64_t seq = (uint64_t)seed << 32;
    for (;;) {
        fill(&m, seq++);
        msgsnd(q, &m, TEXT, IPC_NOWAIT);
        if (seq % 2)
            msgrcv(q, &m, TEXT, 0, IPC_NOWAIT);
        msgsnd(q, &m, TEXT, IPC_NOWAIT);
        msgrcv(q, &m, TEXT, -2, IPC_NOWAIT);
    }
}

int main(void) {
    alarm(60);
    int q = EXPECT_OK(msgget(IPC_PRIVATE, 0600));
    static struct mbuf m;
    int bad = 0, count_mismatch = 0, stuck = 0;
    unsigned seed = (unsigned)getpid();
    for (int round = 0; round < 60; round++) {
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            alarm(10);
            churn(q, round);
        }
        seed = seed * 1103515245u + 12345u;
        sleep_ms(1 + (long)(seed >> 16) % 4);
        kill(pid, SIGKILL);
        int st;
        waitpid(pid, &st, 0);

        struct msqid_ds ds;
        CHECK(msgctl(q, IPC_STAT, &ds) == 0);
        unsigned long got = 0;
        long n;
        while ((n = msgrcv(q, &m, TEXT, 0, IPC_NOWAIT)) >= 0) {
            bad += !intact(&m, n);
            got++;
        }
        CHECK(errno == ENOMSG);
        if (got != ds.msg_qnum) {
            if (count_mismatch++ < 3)
                fprintf(stderr, "  round %d: IPC_STAT said %lu messages, received %lu\n", round, (unsigned long)ds.msg_qnum, got);
        }
        CHECK(msgctl(q, IPC_STAT, &ds) == 0 && ds.msg_qnum == 0 && ds.msg_cbytes == 0);
        /* the queue works for everyone */
        fill(&m, 42);
        if (msgsnd(q, &m, TEXT, IPC_NOWAIT) != 0 || msgrcv(q, &m, TEXT, 0, IPC_NOWAIT) != TEXT || !intact(&m, TEXT))
            stuck++;
    }
    CHECK(bad == 0);
    CHECK(count_mismatch == 0);
    CHECK(stuck == 0);
    EXPECT_OK(msgctl(q, IPC_RMID, NULL));
    return TEST_DONE();
}
