/* Threads stalled for 3 s in a signal handler in the middle of msgsnd/msgrcv and semop
 * while their queues and sets are removed (and, under ipcshim, the handles retired and
 * swept after their 2 s grace), then resumed: no crash; the interrupted call completes or
 * fails with EIDRM, and the next call on the removed id fails with EINVAL. The kernel runs
 * a handler between system calls; ipcshim may run it inside one, where the thread still
 * holds the object's mapping. */
#include "../common.h"
#include <pthread.h>
#include <sys/msg.h>
#include <sys/sem.h>

#define NMSG 3
#define NSEM 3

struct msg {
    long mtype;
    char text[4096];
};

struct worker {
    pthread_t thread;
    int id;
    long done;  /* successful calls before the first failure */
    int err;    /* errno of the first failure */
};

static struct worker msgw[NMSG], semw[NSEM];

static int stalling; /* workers in the handler (atomic) */

static void stall(int sig) {
    (void)sig;
    int e = errno;
    __atomic_add_fetch(&stalling, 1, __ATOMIC_SEQ_CST);
    sleep_ms(3000);
    errno = e;
}

static void *msg_loop(void *arg) {
    struct worker *w = arg;
    static __thread struct msg m;
    m.mtype = 1;
    for (;;) {
        if (msgsnd(w->id, &m, 4000, IPC_NOWAIT) == -1 || msgrcv(w->id, &m, sizeof m.text, 0, IPC_NOWAIT) == -1)
            break;
        __atomic_add_fetch(&w->done, 1, __ATOMIC_SEQ_CST);
    }
    w->err = errno;
    return NULL;
}

static void *sem_loop(void *arg) {
    struct worker *w = arg;
    struct sembuf v = {0, 1, IPC_NOWAIT}, p = {0, -1, IPC_NOWAIT};
    for (;;) {
        if (semop(w->id, &v, 1) == -1 || semop(w->id, &p, 1) == -1)
            break;
        __atomic_add_fetch(&w->done, 1, __ATOMIC_SEQ_CST);
    }
    w->err = errno;
    return NULL;
}

/* 1 once every worker has made at least `calls` calls (within 10 s). */
static int wait_until_all_count(long calls) {
    long long end = now_ms() + 10000;
    for (;;) {
        int all = 1;
        for (int i = 0; i < NMSG; i++)
            all &= __atomic_load_n(&msgw[i].done, __ATOMIC_SEQ_CST) >= calls;
        for (int i = 0; i < NSEM; i++)
            all &= __atomic_load_n(&semw[i].done, __ATOMIC_SEQ_CST) >= calls;
        if (all)
            return 1;
        if (now_ms() > end)
            return 0;
        sleep_ms(1);
    }
}

/* 1 once n workers are in the handler (within 10 s). */
static int wait_until_stalling(int n) {
    long long end = now_ms() + 10000;
    while (__atomic_load_n(&stalling, __ATOMIC_SEQ_CST) < n) {
        if (now_ms() > end)
            return 0;
        sleep_ms(1);
    }
    return 1;
}

static void stalled(void *arg) {
    (void)arg;
    struct sigaction sa = {0};
    sa.sa_handler = stall;
    CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);
    for (int i = 0; i < NMSG; i++) {
        msgw[i].id = EXPECT_OK(msgget(IPC_PRIVATE, IPC_CREAT | 0600));
        CHECK(pthread_create(&msgw[i].thread, NULL, msg_loop, &msgw[i]) == 0);
    }
    for (int i = 0; i < NSEM; i++) {
        semw[i].id = EXPECT_OK(semget(IPC_PRIVATE, 1, IPC_CREAT | 0600));
        CHECK(pthread_create(&semw[i].thread, NULL, sem_loop, &semw[i]) == 0);
    }
    /* Every worker busy with its calls (a fixed 50 ms is no proof on a loaded machine:
     * a worker that had not run yet made its first call after the removal), ... */
    CHECK(wait_until_all_count(1));
    /* ... then stopped where it is, in the handler, for 3 s. */
    for (int i = 0; i < NMSG; i++)
        CHECK(pthread_kill(msgw[i].thread, SIGUSR1) == 0);
    for (int i = 0; i < NSEM; i++)
        CHECK(pthread_kill(semw[i].thread, SIGUSR1) == 0);
    CHECK(wait_until_stalling(NMSG + NSEM));
    struct msg m = {1, "x"};
    struct sembuf v = {0, 1, IPC_NOWAIT};
    for (int i = 0; i < NMSG; i++) {
        EXPECT_OK(msgctl(msgw[i].id, IPC_RMID, NULL));
        EXPECT_ERR(msgsnd(msgw[i].id, &m, 1, IPC_NOWAIT), EINVAL);
    }
    for (int i = 0; i < NSEM; i++) {
        EXPECT_OK(semctl(semw[i].id, 0, IPC_RMID));
        EXPECT_ERR(semop(semw[i].id, &v, 1), EINVAL);
    }
    /* Past ipcshim's grace period, while the workers still stall: removing other objects
     * sweeps the retired handles. */
    sleep_ms(2200);
    int q = EXPECT_OK(msgget(IPC_PRIVATE, IPC_CREAT | 0600));
    EXPECT_OK(msgsnd(q, &m, 1, 0));
    EXPECT_OK(msgctl(q, IPC_RMID, NULL));
    EXPECT_ERR(msgsnd(q, &m, 1, IPC_NOWAIT), EINVAL);
    int s = EXPECT_OK(semget(IPC_PRIVATE, 1, IPC_CREAT | 0600));
    EXPECT_OK(semop(s, &v, 1));
    EXPECT_OK(semctl(s, 0, IPC_RMID));
    EXPECT_ERR(semop(s, &v, 1), EINVAL);
    /* The workers resume, finish their call, and fail on the removed ids. */
    for (int i = 0; i < NMSG; i++) {
        CHECK(pthread_join(msgw[i].thread, NULL) == 0);
        CHECK(msgw[i].done > 0);
        CHECK(msgw[i].err == EINVAL || msgw[i].err == EIDRM);
    }
    for (int i = 0; i < NSEM; i++) {
        CHECK(pthread_join(semw[i].thread, NULL) == 0);
        CHECK(semw[i].done > 0);
        CHECK(semw[i].err == EINVAL || semw[i].err == EIDRM);
    }
}

int main(void) {
    watchdog(30, NULL);
    run_in_child(stalled, NULL);
    return TEST_DONE();
}
