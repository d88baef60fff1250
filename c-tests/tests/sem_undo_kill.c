/* SEM_UNDO under SIGKILL: single-threaded workers take and give back units of three
 * semaphores with SEM_UNDO in tight loops — single operations (under ipcshim, its lock-free
 * SEM_UNDO path), and two-operation calls (the locked path) — while the parent SIGKILLs them
 * at random moments and starts new ones, for about 2.5 s. Every unit a worker holds is
 * recorded in its adjustment, so whatever instant it dies at, exit's undo gives back exactly
 * what it held: no value ever exceeds its start, and once every worker is dead and reaped
 * each semaphore is back at its start, every adjustment gone. */
#include "../common.h"
#include "../sem_common.h"

#include <sys/ipc.h>
#include <sys/sem.h>

#define NW 4
#define NS 3
#define START 1000
#define RUN_MS 2500

static int set_id = -1;
static pid_t workers[NW];

static void kill_workers(void) {
    kill_kids(workers, NW);
    remove_all();
}

static void worker(unsigned seed) {
    for (;;) {
        unsigned short a = (unsigned short)(rand_r(&seed) % NS);
        short k = (short)(1 + rand_r(&seed) % 3);
        if (rand_r(&seed) % 8) {
            /* take, maybe take again, give back */
            struct sembuf p = {a, (short)-k, SEM_UNDO | IPC_NOWAIT}, v = {a, k, SEM_UNDO};
            if (semop(set_id, &p, 1) != 0)
                continue;
            int twice = rand_r(&seed) % 2 && semop(set_id, &p, 1) == 0;
            semop(set_id, &v, 1);
            if (twice)
                semop(set_id, &v, 1);
        } else {
            /* two semaphores in one call, given back one by one */
            unsigned short b = (unsigned short)((a + 1) % NS);
            struct sembuf p[2] = {{a, -1, SEM_UNDO | IPC_NOWAIT}, {b, (short)-k, SEM_UNDO | IPC_NOWAIT}};
            struct sembuf va = {a, 1, SEM_UNDO}, vb = {b, k, SEM_UNDO};
            if (semop(set_id, p, 2) == 0) {
                semop(set_id, &vb, 1);
                semop(set_id, &va, 1);
            }
        }
    }
}

static pid_t start(int i, unsigned round) {
    pid_t pid = fork_child();
    if (pid == 0) {
        worker((unsigned)getpid() * 2654435761u + round * 7919u + (unsigned)i);
        _exit(0);
    }
    return pid;
}

/* 1 if every value is at most START (at the end: exactly START). */
static int check_values(const char *when, int exact) {
    unsigned short v[NS];
    union semun u;
    u.array = v;
    if (semctl(set_id, 0, GETALL, u) != 0) {
        fprintf(stderr, "  GETALL failed %s: %s\n", when, strerror(errno));
        return 0;
    }
    for (int s = 0; s < NS; s++) {
        if (v[s] > START || (exact && v[s] != START)) {
            fprintf(stderr, "  %s: semaphore %d is %u (start %d)\n", when, s, v[s], START);
            return 0;
        }
    }
    return 1;
}

int main(void) {
    watchdog(30, kill_workers);
    set_id = new_set(NS);
    unsigned short init[NS] = {START, START, START};
    union semun u;
    u.array = init;
    EXPECT_OK(semctl(set_id, 0, SETALL, u));

    for (int i = 0; i < NW; i++) {
        workers[i] = start(i, 0);
        CHECK(workers[i] > 0);
    }
    unsigned seed = (unsigned)getpid();
    long long end = now_ms() + RUN_MS;
    int kills = 0, bad = 0;
    unsigned round = 1;
    while (now_ms() < end) {
        /* 0-2 ms: the workers are anywhere in their loops */
        struct timespec ts = {0, (long)(rand_r(&seed) % 2000) * 1000L};
        nanosleep(&ts, NULL);
        int i = (int)(rand_r(&seed) % NW);
        kill(workers[i], SIGKILL);
        waitpid(workers[i], NULL, 0);
        kills++;
        workers[i] = start(i, round++);
        if (kills % 16 == 0 && !check_values("while running", 0))
            bad++;
    }
    CHECK(bad == 0);
    for (int i = 0; i < NW; i++) {
        kill(workers[i], SIGKILL);
        waitpid(workers[i], NULL, 0);
        workers[i] = 0;
    }
    /* Every worker is dead and reaped: what each held is given back. */
    CHECK(check_values("at the end", 1));
    for (int s = 0; s < NS; s++) {
        CHECK(semctl(set_id, s, GETNCNT) == 0);
        CHECK(semctl(set_id, s, GETZCNT) == 0);
    }
    /* Adjustments of the dead are gone, and the set still works with and without SEM_UNDO:
     * a child that takes one unit of each and exits gives them back. */
    pid_t c = fork_child();
    if (c == 0) {
        struct sembuf p = {0, -5, SEM_UNDO}, q[2] = {{1, -1, SEM_UNDO}, {2, -2, SEM_UNDO}};
        _exit(semop(set_id, &p, 1) == 0 && semop(set_id, q, 2) == 0 && semctl(set_id, 0, GETVAL) == START - 5 ? 0 : 1);
    }
    int st = 0;
    CHECK(waitpid(c, &st, 0) == c && EXITED_OK(st));
    CHECK(check_values("after a child's undo", 1));
    struct sembuf one = {0, 1, 0}, minus = {0, -1, 0};
    CHECK(semop(set_id, &minus, 1) == 0 && semop(set_id, &one, 1) == 0);
    CHECK(check_values("after the checks", 1));
    printf("sem_undo_kill: %d workers killed\n", kills);

    EXPECT_OK(semctl(set_id, 0, IPC_RMID));
    return TEST_DONE();
}
