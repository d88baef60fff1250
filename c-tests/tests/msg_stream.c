/* A stream of 100,000 messages (sizes 0..1099, sequence number in mtype and payload) from
 * one process to another through the default-sized queue, so the sender blocks on a full
 * queue and the receiver on an empty one many times.  The receiver checks order,
 * completeness, sizes and contents, switching between msgtyp 0, the exact type, and a
 * negative type. (Under ipcshim most texts are long enough to be written before the
 * queue's lock is taken and read ahead of it.) */
#include "../common.h"
#include <limits.h>
#include <sys/ipc.h>
#include <sys/msg.h>

#define N 100000

struct mbuf {
    long mtype;
    char mtext[1104];
};

static int q;

static size_t size_of(unsigned seq) { return (size_t)((seq * 7919u) % 1100u); }
static char byte_of(unsigned seq, size_t i) { return (char)(seq * 131u + i * 7u); }

static void sender(void) {
    struct mbuf b;
    for (unsigned seq = 0; seq < N; seq++) {
        size_t len = size_of(seq);
        b.mtype = (long)seq + 1;
        for (size_t i = 0; i < len; i++)
            b.mtext[i] = byte_of(seq, i);
        if (len >= 4)
            memcpy(b.mtext, &seq, 4);
        if (msgsnd(q, &b, len, 0) != 0) {
            fprintf(stderr, "  sender: msgsnd #%u: %s\n", seq, strerror(errno));
            _exit(1);
        }
    }
    _exit(0);
}

static void receiver(void) {
    struct mbuf b;
    int errors = 0;
    for (unsigned seq = 0; seq < N && errors < 10; seq++) {
        long sel = seq % 3 == 0 ? 0 : seq % 3 == 1 ? (long)seq + 1 : -LONG_MAX;
        memset(b.mtext, 0, 8);
        long n = msgrcv(q, &b, sizeof b.mtext, sel, 0);
        size_t len = size_of(seq);
        if (n != (long)len || b.mtype != (long)seq + 1) {
            fprintf(stderr, "  receiver: #%u: got len %ld type %ld (%s), want len %zu type %u\n", seq, n,
                    b.mtype, n < 0 ? strerror(errno) : "", len, seq + 1);
            errors++;
            if (n < 0)
                break;
            continue;
        }
        unsigned inner = seq;
        if (len >= 4)
            memcpy(&inner, b.mtext, 4);
        int ok = inner == seq;
        for (size_t i = 4; i < len; i++)
            ok &= b.mtext[i] == byte_of(seq, i);
        if (len < 4)
            for (size_t i = 0; i < len; i++)
                ok &= b.mtext[i] == byte_of(seq, i);
        if (!ok) {
            fprintf(stderr, "  receiver: #%u: payload corrupt\n", seq);
            errors++;
        }
    }
    _exit(errors ? 1 : 0);
}

static int reap(pid_t pid, long long deadline) {
    int st = 0;
    pid_t r;
    while ((r = waitpid(pid, &st, WNOHANG)) == 0 && now_ms() < deadline)
        sleep_ms(5);
    if (r == 0) {
        fprintf(stderr, "  child %d timed out\n", (int)pid);
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        return 0;
    }
    return r == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

int main(void) {
    alarm(30);
    q = EXPECT_OK(msgget(IPC_PRIVATE, 0600));
    fflush(NULL);
    pid_t rp = fork();
    if (rp == 0) {
        alarm(14);
        receiver();
    }
    pid_t sp = fork();
    if (sp == 0) {
        alarm(14);
        sender();
    }
    CHECK(rp > 0 && sp > 0);
    long long deadline = now_ms() + 15000;
    CHECK(reap(sp, deadline));
    CHECK(reap(rp, deadline));
    struct msqid_ds ds;
    memset(&ds, 0, sizeof ds);
    EXPECT_OK(msgctl(q, IPC_STAT, &ds));
    CHECK(ds.msg_qnum == 0 && ds.msg_cbytes == 0);
    CHECK(ds.msg_lspid == sp && ds.msg_lrpid == rp);
    EXPECT_OK(msgctl(q, IPC_RMID, NULL));
    return TEST_DONE();
}
