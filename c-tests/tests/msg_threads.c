/* Threads and fork around one queue:
 *  - two sender threads and two receiver threads (blocking on a small queue, so both sides
 *    block often) move 20000 numbered messages; each is received exactly once, intact;
 *  - a forked child sends on a queue its parent had already used (inherited id), the
 *    parent receives;
 *  - a thread blocked in msgrcv and one blocked in msgsnd fail with EIDRM when another
 *    thread removes the queue;
 *  - the queue is empty and its counters are zero at the end. */
#include "../common.h"
#include <pthread.h>
#include <stdatomic.h>
#include <sys/ipc.h>
#include <sys/msg.h>

#define PER_SENDER 10000
#define NSENDERS 2
#define NRECEIVERS 2

struct mbuf {
    long mtype;
    char mtext[64];
};

static int q;
static unsigned char seen[NSENDERS * PER_SENDER];
static atomic_int received, dup_or_bad, errors;

static int len_of(int id) { return 8 + id % 50; }

static void *sender(void *arg) {
    int who = (int)(long)arg;
    struct mbuf m;
    for (int i = 0; i < PER_SENDER; i++) {
        int id = who * PER_SENDER + i;
        m.mtype = 1 + id % 3;
        memcpy(m.mtext, &id, sizeof id);
        for (int k = (int)sizeof id; k < len_of(id); k++)
            m.mtext[k] = (char)(id + k);
        if (msgsnd(q, &m, (size_t)len_of(id), 0) != 0) {
            atomic_fetch_add(&errors, 1);
            return NULL;
        }
    }
    return NULL;
}

static void *receiver(void *arg) {
    (void)arg;
    struct mbuf m;
    for (;;) {
        if (atomic_load(&received) >= NSENDERS * PER_SENDER)
            return NULL;
        long n = msgrcv(q, &m, sizeof m.mtext, 0, IPC_NOWAIT);
        if (n < 0 && errno == ENOMSG) {
            /* block, but not forever: the other receiver may take the last message */
            n = msgrcv(q, &m, sizeof m.mtext, -3, 0);
        }
        if (n < 0) {
            if (errno == EIDRM)
                return NULL;
            atomic_fetch_add(&errors, 1);
            return NULL;
        }
        int id;
        memcpy(&id, m.mtext, sizeof id);
        if (id == -1 && n == (long)sizeof id)
            return NULL; /* the other receiver's stop message */
        int ok = id >= 0 && id < NSENDERS * PER_SENDER && n == len_of(id) && m.mtype == 1 + id % 3;
        for (int k = (int)sizeof id; ok && k < n; k++)
            ok = m.mtext[k] == (char)(id + k);
        if (!ok || __atomic_fetch_add(&seen[id], 1, __ATOMIC_SEQ_CST) != 0)
            atomic_fetch_add(&dup_or_bad, 1);
        if (atomic_fetch_add(&received, 1) + 1 >= NSENDERS * PER_SENDER) {
            /* wake the other receiver, blocked on an empty queue */
            struct mbuf stop = {3, {0}};
            int last = -1;
            memcpy(stop.mtext, &last, sizeof last);
            msgsnd(q, &stop, sizeof last, IPC_NOWAIT);
            return NULL;
        }
    }
}

static void test_threads(void) {
    q = EXPECT_OK(msgget(IPC_PRIVATE, 0600));
    struct msqid_ds ds;
    CHECK(msgctl(q, IPC_STAT, &ds) == 0);
    ds.msg_qbytes = 600; /* about ten messages: both sides block */
    EXPECT_OK(msgctl(q, IPC_SET, &ds));
    pthread_t s[NSENDERS], r[NRECEIVERS];
    for (int i = 0; i < NRECEIVERS; i++)
        pthread_create(&r[i], NULL, receiver, NULL);
    for (int i = 0; i < NSENDERS; i++)
        pthread_create(&s[i], NULL, sender, (void *)(long)i);
    for (int i = 0; i < NSENDERS; i++)
        pthread_join(s[i], NULL);
    for (int i = 0; i < NRECEIVERS; i++)
        pthread_join(r[i], NULL);
    CHECK(atomic_load(&errors) == 0);
    CHECK(atomic_load(&dup_or_bad) == 0);
    CHECK(atomic_load(&received) == NSENDERS * PER_SENDER);
    int missing = 0;
    for (int i = 0; i < NSENDERS * PER_SENDER; i++)
        missing += seen[i] != 1;
    CHECK(missing == 0);
    /* at most the stop message is left */
    struct mbuf m;
    while (msgrcv(q, &m, sizeof m.mtext, 0, IPC_NOWAIT) >= 0) {
        int id;
        memcpy(&id, m.mtext, sizeof id);
        CHECK(id == -1);
    }
    CHECK(errno == ENOMSG);
    CHECK(msgctl(q, IPC_STAT, &ds) == 0 && ds.msg_qnum == 0 && ds.msg_cbytes == 0);
    EXPECT_OK(msgctl(q, IPC_RMID, NULL));
}

static void test_fork(void) {
    int id = EXPECT_OK(msgget(IPC_PRIVATE, 0600));
    struct mbuf m = {7, "parent"};
    EXPECT_OK(msgsnd(id, &m, 6, 0));
    CHECK(msgrcv(id, &m, sizeof m.mtext, 7, 0) == 6);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        struct mbuf c = {8, "child!"};
        _exit(msgsnd(id, &c, 6, 0) == 0 ? 0 : 1);
    }
    memset(&m, 0, sizeof m);
    CHECK(msgrcv(id, &m, sizeof m.mtext, 8, 0) == 6 && memcmp(m.mtext, "child!", 6) == 0);
    int st = 0;
    CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    struct msqid_ds ds;
    CHECK(msgctl(id, IPC_STAT, &ds) == 0 && ds.msg_lspid == pid && ds.msg_lrpid == getpid());
    EXPECT_OK(msgctl(id, IPC_RMID, NULL));
}

static int rm_q;
static volatile pid_t rm_recv_tid, rm_send_tid;
static void *blocked_recv(void *arg) {
    (void)arg;
    rm_recv_tid = (pid_t)syscall(SYS_gettid);
    struct mbuf m;
    long n = msgrcv(rm_q, &m, sizeof m.mtext, 99, 0);
    return (void *)(long)(n < 0 ? errno : 0);
}
static void *blocked_send(void *arg) {
    (void)arg;
    rm_send_tid = (pid_t)syscall(SYS_gettid);
    struct mbuf m = {1, "x"};
    int r = msgsnd(rm_q, &m, 10, 0);
    return (void *)(long)(r < 0 ? errno : 0);
}

static void test_rmid_threads(void) {
    rm_q = EXPECT_OK(msgget(IPC_PRIVATE, 0600));
    struct msqid_ds ds;
    CHECK(msgctl(rm_q, IPC_STAT, &ds) == 0);
    ds.msg_qbytes = 10;
    EXPECT_OK(msgctl(rm_q, IPC_SET, &ds));
    struct mbuf m = {1, "full"};
    EXPECT_OK(msgsnd(rm_q, &m, 10, IPC_NOWAIT));
    pthread_t r, s;
    pthread_create(&r, NULL, blocked_recv, NULL);
    pthread_create(&s, NULL, blocked_send, NULL);
    /* Both asleep in their calls (one that had not begun would meet no queue: EINVAL). */
    while (!rm_recv_tid || !rm_send_tid)
        sleep_ms(1);
    CHECK(wait_asleep(getpid(), rm_recv_tid) && wait_asleep(getpid(), rm_send_tid));
    EXPECT_OK(msgctl(rm_q, IPC_RMID, NULL));
    void *rr, *sr;
    pthread_join(r, &rr);
    pthread_join(s, &sr);
    CHECK((long)rr == EIDRM);
    CHECK((long)sr == EIDRM);
}

int main(void) {
    alarm(60);
    test_threads();
    test_fork();
    test_rmid_threads();
    return TEST_DONE();
}
