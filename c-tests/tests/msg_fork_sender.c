/* A sender forks while it streams: parent and child then send at the same time through
 * the same queue, each its own type, texts of 300..1000 bytes, and a third process
 * receives both streams and checks each for order and contents.
 *
 * Under ipcshim the parent has set aside a slot and blocks of the queue for its texts
 * (its stash) before the fork; the child inherits the parent's memory, including what it
 * knows of that stash, and must not write into it. */
#include "../common.h"
#include <sys/ipc.h>
#include <sys/msg.h>

#define N 20000 /* per sender */
#define TEXT 1000

struct mbuf {
    long mtype;
    char mtext[TEXT];
};

static int q;

static size_t len_of(long seq) { return 300 + (size_t)((seq * 7919) % (TEXT - 299)); }
static char byte_of(long type, long seq, size_t i) { return (char)(type * 91 + seq * 31 + (long)i * 11); }

static void send_one(long type, long seq) {
    struct mbuf b;
    size_t len = len_of(seq);
    b.mtype = type;
    memcpy(b.mtext, &seq, sizeof seq);
    for (size_t i = sizeof seq; i < len; i++)
        b.mtext[i] = byte_of(type, seq, i);
    if (msgsnd(q, &b, len, 0) != 0) {
        fprintf(stderr, "  type %ld #%ld: msgsnd: %s\n", type, seq, strerror(errno));
        _exit(3);
    }
}

static void receiver(void) {
    long next[3] = {0, 0, 0};
    int errors = 0;
    struct mbuf b;
    for (long got = 0; got < 2 * N && errors < 10; got++) {
        long n = msgrcv(q, &b, TEXT, 0, 0);
        long seq = -1;
        if (n >= (long)sizeof seq)
            memcpy(&seq, b.mtext, sizeof seq);
        int ok = n >= 0 && (b.mtype == 1 || b.mtype == 2) && seq == next[b.mtype] && n == (long)len_of(seq);
        for (size_t i = sizeof seq; ok && i < (size_t)n; i++)
            ok = b.mtext[i] == byte_of(b.mtype, seq, i);
        if (!ok) {
            fprintf(stderr, "  received #%ld: n %ld type %ld seq %ld: wrong\n", got, n, b.mtype, seq);
            errors++;
            if (n < 0)
                break;
        } else {
            next[b.mtype]++;
        }
    }
    _exit(errors == 0 && next[1] == N && next[2] == N ? 0 : 1);
}

int main(void) {
    alarm(60);
    q = EXPECT_OK(msgget(IPC_PRIVATE, 0600));
    fflush(NULL);
    pid_t r = fork();
    if (r == 0)
        receiver();
    CHECK(r > 0);
    long seq = 0;
    for (; seq < N / 2; seq++)
        send_one(1, seq);
    fflush(NULL);
    pid_t c = fork();
    if (c == 0) {
        for (long s = 0; s < N; s++)
            send_one(2, s);
        _exit(0);
    }
    CHECK(c > 0);
    for (; seq < N; seq++)
        send_one(1, seq);
    int st;
    CHECK(waitpid(c, &st, 0) == c && EXITED_OK(st));
    CHECK(waitpid(r, &st, 0) == r && EXITED_OK(st));
    struct msqid_ds ds;
    EXPECT_OK(msgctl(q, IPC_STAT, &ds));
    CHECK(ds.msg_qnum == 0);
    EXPECT_OK(msgctl(q, IPC_RMID, NULL));
    return TEST_DONE();
}
