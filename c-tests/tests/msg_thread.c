/* Message queues and threads:
 *  - a thread blocked in msgrcv wakes when another thread sends; msg_lspid records the
 *    process id; msg_lrpid the process id for an ordinary receive but, as Linux does, the
 *    receiving thread's id when the message was handed to it while it was blocked;
 *  - two threads ping-pong 20,000 messages through one queue by type;
 *  - a signal sent to one blocked thread (handler with SA_RESTART) fails that thread's
 *    msgrcv with EINTR; another thread blocked on the same queue stays blocked;
 *  - msgrcv and msgsnd are cancellation points: pthread_cancel ends a blocked call, and
 *    the cancelled receiver takes no message. */
#include "../common.h"
#include <pthread.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/syscall.h>

struct mbuf {
    long mtype;
    char mtext[64];
};

static int q;

static int send_text(long type, const char *s, int flg) {
    struct mbuf b;
    memset(&b, 0, sizeof b);
    b.mtype = type;
    strcpy(b.mtext, s);
    return msgsnd(q, &b, strlen(s), flg);
}

static unsigned long qnum(void) {
    struct msqid_ds ds;
    return msgctl(q, IPC_STAT, &ds) == 0 ? ds.msg_qnum : (unsigned long)-1;
}

/* join with a bound; returns 1 and the thread's result if it ended in time */
static int join_within(pthread_t t, long ms, void **res) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return pthread_timedjoin_np(t, res, &ts) == 0;
}

static volatile int thread_started;
static volatile pid_t recv_tid, sender_tid;

static void *recv_type(void *arg) {
    long type = (long)arg;
    struct mbuf b;
    memset(&b, 0, sizeof b);
    recv_tid = (pid_t)syscall(SYS_gettid);
    thread_started = 1;
    long n = msgrcv(q, &b, sizeof b.mtext, type, 0);
    if (n < 0)
        return (void *)(long)-errno;
    return (void *)(b.mtype * 1000 + n);
}

/* in a thread: send two messages, receive one without blocking */
static void *send_recv_nowait(void *arg) {
    (void)arg;
    if (send_text(8, "abcd", IPC_NOWAIT) != 0 || send_text(9, "xyz", IPC_NOWAIT) != 0)
        return (void *)1;
    struct mbuf b;
    if (msgrcv(q, &b, sizeof b.mtext, 8, IPC_NOWAIT) != 4)
        return (void *)2;
    return NULL;
}

static void test_wake(void) {
    pthread_t t;
    thread_started = 0;
    CHECK(pthread_create(&t, NULL, recv_type, (void *)7L) == 0);
    while (!thread_started)
        sleep_ms(1);
    /* The hand-over below needs the receiver asleep in its call, not just started. */
    CHECK(wait_asleep(getpid(), recv_tid));
    EXPECT_OK(send_text(6, "other", IPC_NOWAIT));
    sleep_ms(100);
    CHECK(qnum() == 1);
    EXPECT_OK(send_text(7, "seven", IPC_NOWAIT));
    void *res = NULL;
    CHECK(join_within(t, 5000, &res));
    CHECK((long)res == 7005);
    struct msqid_ds ds;
    /* Linux quirk: a message handed straight to a blocked receiver records the receiving
     * thread's id (task_pid) in msg_lrpid; an ordinary receive records the process id
     * (task_tgid), as msgsnd always does for msg_lspid */
    CHECK(msgctl(q, IPC_STAT, &ds) == 0 && ds.msg_lrpid == recv_tid && ds.msg_lspid == getpid());
    CHECK(recv_tid != getpid());
    struct mbuf b;
    CHECK(msgrcv(q, &b, sizeof b.mtext, 6, IPC_NOWAIT) == 5);
    CHECK(msgctl(q, IPC_STAT, &ds) == 0 && ds.msg_lrpid == getpid());

    /* a thread's send and non-blocking receive record the process id */
    CHECK(pthread_create(&t, NULL, send_recv_nowait, NULL) == 0);
    CHECK(join_within(t, 5000, &res));
    CHECK(res == NULL);
    CHECK(msgctl(q, IPC_STAT, &ds) == 0 && ds.msg_lrpid == getpid() && ds.msg_lspid == getpid());
    CHECK(msgrcv(q, &b, sizeof b.mtext, 0, IPC_NOWAIT) == 3 && b.mtype == 9);
    CHECK(msgctl(q, IPC_STAT, &ds) == 0 && ds.msg_lrpid == getpid());
}

#define PINGS 10000
static void *ponger(void *arg) {
    (void)arg;
    struct mbuf b;
    for (long i = 0; i < PINGS; i++) {
        if (msgrcv(q, &b, sizeof b.mtext, 1, 0) != 8)
            return (void *)1;
        long v;
        memcpy(&v, b.mtext, 8);
        if (v != i)
            return (void *)2;
        v = -v;
        b.mtype = 2;
        memcpy(b.mtext, &v, 8);
        if (msgsnd(q, &b, 8, 0) != 0)
            return (void *)3;
    }
    return NULL;
}

static void test_pingpong(void) {
    pthread_t t;
    CHECK(pthread_create(&t, NULL, ponger, NULL) == 0);
    int bad = 0;
    struct mbuf b;
    for (long i = 0; i < PINGS && !bad; i++) {
        b.mtype = 1;
        memcpy(b.mtext, &i, 8);
        if (msgsnd(q, &b, 8, 0) != 0)
            bad = 1;
        long v = 0;
        if (!bad && (msgrcv(q, &b, sizeof b.mtext, 2, 0) != 8 || (memcpy(&v, b.mtext, 8), v != -i)))
            bad = 2;
    }
    CHECK(bad == 0);
    void *res = (void *)-1;
    CHECK(join_within(t, 5000, &res));
    CHECK(res == NULL);
    CHECK(qnum() == 0);
}

static volatile sig_atomic_t handled;
static void on_usr1(int s) {
    (void)s;
    handled++;
}

static volatile pid_t tid_a;
static void *recv_a(void *arg) {
    (void)arg;
    tid_a = (pid_t)syscall(SYS_gettid);
    struct mbuf b;
    long n = msgrcv(q, &b, sizeof b.mtext, 31, 0);
    return (void *)(n < 0 ? (long)-errno : n);
}

static void test_thread_signal(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    /* SIGUSR1 is blocked in this thread (and inherited by B), so it goes to A only */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    pthread_t b;
    thread_started = 0;
    CHECK(pthread_create(&b, NULL, recv_type, (void *)32L) == 0);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    pthread_t a;
    tid_a = 0;
    CHECK(pthread_create(&a, NULL, recv_a, NULL) == 0);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    while (!tid_a || !thread_started)
        sleep_ms(1);
    CHECK(wait_asleep(getpid(), tid_a) && wait_asleep(getpid(), recv_tid));
    /* signal A until it returns (a signal that lands before A blocks is just handled) */
    void *res = NULL;
    int done = 0;
    long long end = now_ms() + 5000;
    while (!done && now_ms() < end) {
        pthread_kill(a, SIGUSR1);
        done = join_within(a, 50, &res);
    }
    CHECK(done);
    CHECK((long)res == -EINTR);
    CHECK(handled >= 1);
    /* B is still waiting for its type */
    sleep_ms(50);
    CHECK(pthread_tryjoin_np(b, &res) == EBUSY);
    EXPECT_OK(send_text(31, "for-a", IPC_NOWAIT)); /* A is gone: stays queued */
    EXPECT_OK(send_text(32, "for-b", IPC_NOWAIT));
    CHECK(join_within(b, 5000, &res));
    CHECK((long)res == 32005);
    CHECK(qnum() == 1);
    struct mbuf m;
    CHECK(msgrcv(q, &m, sizeof m.mtext, 31, IPC_NOWAIT) == 5);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

static void *send_blocked(void *arg) {
    (void)arg;
    sender_tid = (pid_t)syscall(SYS_gettid);
    thread_started = 1;
    struct mbuf b;
    memset(&b, 'z', sizeof b);
    b.mtype = 50;
    long r = msgsnd(q, &b, 40, 0);
    return (void *)(r < 0 ? (long)-errno : 0);
}

static void test_cancel(void) {
    pthread_t t;
    void *res = NULL;
    /* receiver */
    thread_started = 0;
    CHECK(pthread_create(&t, NULL, recv_type, (void *)41L) == 0);
    while (!thread_started)
        sleep_ms(1);
    CHECK(wait_asleep(getpid(), recv_tid));
    CHECK(pthread_cancel(t) == 0);
    CHECK(join_within(t, 5000, &res));
    CHECK(res == PTHREAD_CANCELED);
    EXPECT_OK(send_text(41, "late", IPC_NOWAIT));
    sleep_ms(20);
    CHECK(qnum() == 1); /* nobody took it */
    struct mbuf m;
    CHECK(msgrcv(q, &m, sizeof m.mtext, 41, IPC_NOWAIT) == 4);

    /* sender on a full queue */
    struct msqid_ds ds;
    CHECK(msgctl(q, IPC_STAT, &ds) == 0);
    ds.msg_qbytes = 50;
    EXPECT_OK(msgctl(q, IPC_SET, &ds));
    EXPECT_OK(send_text(49, "0123456789012345678901234567890123456789", IPC_NOWAIT));
    thread_started = 0;
    CHECK(pthread_create(&t, NULL, send_blocked, NULL) == 0);
    while (!thread_started)
        sleep_ms(1);
    CHECK(wait_asleep(getpid(), sender_tid));
    CHECK(pthread_cancel(t) == 0);
    CHECK(join_within(t, 5000, &res));
    CHECK(res == PTHREAD_CANCELED);
    CHECK(msgrcv(q, &m, sizeof m.mtext, 0, IPC_NOWAIT) == 40 && m.mtype == 49);
    CHECK(qnum() == 0); /* the cancelled send did not happen */
}

int main(void) {
    alarm(30);
    q = EXPECT_OK(msgget(IPC_PRIVATE, 0600));
    test_wake();
    test_pingpong();
    test_thread_signal();
    test_cancel();
    EXPECT_OK(msgctl(q, IPC_RMID, NULL));
    return TEST_DONE();
}
