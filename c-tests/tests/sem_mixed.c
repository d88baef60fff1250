/* Single operations and multi-operation calls on the same semaphores at once, from threads
 * of two processes, for about a second: every call is atomic, so units are neither lost nor
 * made.  Semaphore 2 is a pool of 5 units taken and given back one at a time (alone, or
 * together with a transfer between semaphores 0 and 1, whose sum stays 20; sometimes with
 * SEM_UNDO); the others wait for it or poll with IPC_NOWAIT.  At the end every value is back
 * where it started and nobody waits. */
#include "../common.h"
#include "../sem_common.h"

#include <pthread.h>
#include <sys/ipc.h>
#include <sys/sem.h>

#define POOL 5
#define SUM 20
#define THREADS 3
#define RUN_MS 1000

static int id;
static long long end_at;
static volatile int errors;

static void *single_ops(void *arg) {
    unsigned seed = (unsigned)(long)arg;
    while (now_ms() < end_at) {
        short flg = (rand_r(&seed) % 4 == 0) ? IPC_NOWAIT : 0;
        if (rand_r(&seed) % 3 == 0)
            flg |= SEM_UNDO;
        struct sembuf p = {2, -1, flg}, v = {2, 1, (short)(flg & SEM_UNDO)};
        int r = semop(id, &p, 1);
        if (r == 0) {
            if (semop(id, &v, 1) != 0)
                errors++;
        } else if (errno != EAGAIN) {
            errors++;
        }
    }
    return NULL;
}

static void *multi_ops(void *arg) {
    unsigned seed = (unsigned)(long)arg;
    while (now_ms() < end_at) {
        unsigned short from = (unsigned short)(rand_r(&seed) % 2), to = (unsigned short)(1 - from);
        struct sembuf take[3] = {{2, -1, 0}, {from, -1, IPC_NOWAIT}, {to, 1, 0}};
        struct timespec ts = {0, 2000000L};
        if (semtimedop(id, take, 3, &ts) == 0) {
            struct sembuf give = {2, 1, 0};
            if (semop(id, &give, 1) != 0)
                errors++;
        } else if (errno != EAGAIN) {
            errors++;
        }
        /* Waits for the pool to be full (rarely true), never blocking. */
        struct sembuf z[2] = {{2, -POOL, IPC_NOWAIT}, {2, POOL, 0}};
        if (semop(id, z, 2) != 0 && errno != EAGAIN)
            errors++;
    }
    return NULL;
}

static int run_threads(unsigned salt) {
    pthread_t t[2 * THREADS];
    for (long i = 0; i < THREADS; i++) {
        pthread_create(&t[2 * i], NULL, single_ops, (void *)(long)(salt * 100 + 2 * i));
        pthread_create(&t[2 * i + 1], NULL, multi_ops, (void *)(long)(salt * 100 + 2 * i + 1));
    }
    for (int i = 0; i < 2 * THREADS; i++)
        pthread_join(t[i], NULL);
    return errors;
}

int main(void) {
    sem_watchdog(14);
    id = new_set(3);
    unsigned short init[3] = {SUM / 2, SUM / 2, POOL};
    union semun u;
    u.array = init;
    EXPECT_OK(semctl(id, 0, SETALL, u));
    end_at = now_ms() + RUN_MS;
    pid_t pid = fork_child();
    if (pid == 0) {
        _exit(run_threads(2) ? 1 : 0);
    }
    int bad = 0;
    CHECK(run_threads(1) == 0);
    int st = 0;
    CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    unsigned short v[3];
    u.array = v;
    CHECK(semctl(id, 0, GETALL, u) == 0);
    if (v[0] + v[1] != SUM || v[2] != POOL) {
        bad++;
        fprintf(stderr, "  values %u %u %u, want a sum of %d and %d\n", v[0], v[1], v[2], SUM, POOL);
    }
    CHECK(bad == 0);
    for (int s = 0; s < 3; s++)
        CHECK(semctl(id, s, GETNCNT) == 0 && semctl(id, s, GETZCNT) == 0);
    EXPECT_OK(semctl(id, 0, IPC_RMID));
    return TEST_DONE();
}
