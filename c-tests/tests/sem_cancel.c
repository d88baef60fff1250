/* semop is not a thread cancellation point in glibc: a thread blocked in it stays blocked
 * after pthread_cancel (and is not interrupted: no handler of the program's runs), completes
 * its operation when it is woken, and is cancelled at its next cancellation point. Neither
 * are semget and semctl: a thread with a cancel pending goes through them unharmed. */
#include "../common.h"
#include "../sem_common.h"

#include <pthread.h>
#include <sys/ipc.h>
#include <sys/sem.h>

static int id;
static volatile int returned;

static void *blocked(void *arg) {
    (void)arg;
    struct sembuf p = {0, -1, 0};
    int r = semop(id, &p, 1);
    returned = r == 0 ? 1 : -1;
    pthread_testcancel();
    return NULL;
}

static void *blocked_timed(void *arg) {
    (void)arg;
    struct sembuf p = {0, -1, SEM_UNDO};
    struct timespec ts = {5, 0};
    int r = semtimedop(id, &p, 1, &ts);
    returned = r == 0 ? 1 : -1;
    pthread_testcancel();
    return NULL;
}

static void run(void *(*fn)(void *)) {
    returned = 0;
    pthread_t t;
    CHECK(pthread_create(&t, NULL, fn, NULL) == 0);
    CHECK(wait_for(id, 0, GETNCNT, 1));
    CHECK(pthread_cancel(t) == 0);
    sleep_ms(200);
    /* Still blocked, not cancelled, not interrupted. */
    CHECK(returned == 0);
    CHECK(semctl(id, 0, GETNCNT) == 1);
    struct sembuf v = {0, 1, 0};
    CHECK(semop(id, &v, 1) == 0);
    void *res = NULL;
    CHECK(pthread_join(t, &res) == 0);
    CHECK(res == PTHREAD_CANCELED);
    CHECK(returned == 1);
    CHECK(semctl(id, 0, GETVAL) == 0);
}

static volatile int go, pending_ok;

static void *with_cancel_pending(void *arg) {
    (void)arg;
    while (!go) {
    }
    struct semid_ds ds;
    union {
        struct semid_ds *buf;
    } u = {&ds};
    int ok = semctl(id, 0, IPC_STAT, u) == 0;
    int k = semget(IPC_PRIVATE, 1, 0600);
    ok = ok && k >= 0 && semctl(k, 0, GETVAL) == 0 && semctl(k, 0, IPC_RMID) == 0;
    pending_ok = ok ? 1 : -1;
    pthread_testcancel();
    return NULL;
}

int main(void) {
    sem_watchdog(14);
    id = new_set(1);
    run(blocked);
    run(blocked_timed);

    pthread_t t;
    CHECK(pthread_create(&t, NULL, with_cancel_pending, NULL) == 0);
    CHECK(pthread_cancel(t) == 0);
    go = 1;
    void *res = NULL;
    CHECK(pthread_join(t, &res) == 0);
    CHECK(res == PTHREAD_CANCELED);
    CHECK(pending_ok == 1);
    EXPECT_OK(semctl(id, 0, IPC_RMID));
    return TEST_DONE();
}
