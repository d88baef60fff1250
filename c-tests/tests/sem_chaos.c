/* Chaos: workers hammer one set with multi-operation calls while the parent SIGKILLs them at
 * random moments (so, under ipcshim, often inside the set's internal critical section) and
 * starts new ones, for about 2.5 s.  Semaphores 0 and 1 only ever exchange units in atomic
 * two-operation calls, so their sum never changes; semaphore 2 is a resource of 3 units
 * taken with SEM_UNDO, so it never exceeds 3 and returns to 3 once every worker is dead.
 * Checked throughout (GETALL) and at the end, when nobody may be left waiting and the set
 * must still work: no lost or duplicated unit, no half-applied call, no stuck lock. */
#include "../common.h"
#include "../sem_common.h"

#include <sys/ipc.h>
#include <sys/sem.h>

#define NW 6
#define SUM 40
#define RES 3
#define RUN_MS 2500

static int set_id = -1;
static pid_t workers[NW];

/* Watchdog cleanup (the set is removed by remove_all()). */
static void kill_workers(void) {
    kill_kids(workers, NW);
    remove_all();
}

static int timed(struct sembuf *ops, size_t n, long ms) {
    struct timespec ts = {0, ms * 1000000L};
    return semtimedop(set_id, ops, n, &ts);
}

static void worker(unsigned seed) {
    for (;;) {
        unsigned short from = (unsigned short)(rand_r(&seed) % 2), to = (unsigned short)(1 - from);
        short k = (short)(1 + rand_r(&seed) % 3);
        switch (rand_r(&seed) % 5) {
        case 0: { /* a transfer, waiting a little */
            struct sembuf t[2] = {{from, (short)-k, 0}, {to, k, 0}};
            timed(t, 2, 2);
            break;
        }
        case 1: { /* a transfer that never waits, written the other way round */
            struct sembuf t[2] = {{to, k, IPC_NOWAIT}, {from, (short)-k, IPC_NOWAIT}};
            semop(set_id, t, 2);
            break;
        }
        case 2: { /* take the resource, transfer while holding it, give it back */
            struct sembuf p = {2, -1, SEM_UNDO}, v = {2, 1, SEM_UNDO};
            if (timed(&p, 1, 5) == 0) {
                struct sembuf t[2] = {{from, -1, 0}, {to, 1, 0}};
                timed(t, 2, 1);
                semop(set_id, &v, 1);
            }
            break;
        }
        case 3: { /* take the resource and a transfer in one call */
            struct sembuf t[3] = {{2, -1, SEM_UNDO}, {from, (short)-k, 0}, {to, k, 0}};
            if (timed(t, 3, 3) == 0) {
                struct sembuf v = {2, 1, SEM_UNDO};
                semop(set_id, &v, 1);
            }
            break;
        }
        default: { /* a multi-operation wait-for-zero that may block */
            struct sembuf z[2] = {{from, 0, 0}, {2, 0, IPC_NOWAIT}};
            timed(z, 2, 1);
            break;
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

static int check_values(const char *when) {
    unsigned short v[3];
    union semun u;
    u.array = v;
    if (semctl(set_id, 0, GETALL, u) != 0) {
        fprintf(stderr, "  GETALL failed %s: %s\n", when, strerror(errno));
        return 0;
    }
    if (v[0] + v[1] != SUM || v[2] > RES) {
        fprintf(stderr, "  %s: values %u %u %u (sum %d, want %d; resource at most %d)\n", when,
                v[0], v[1], v[2], v[0] + v[1], SUM, RES);
        return 0;
    }
    return 1;
}

int main(void) {
    watchdog(20, kill_workers);
    set_id = new_set(3);
    unsigned short init[3] = {SUM / 2, SUM / 2, RES};
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
        sleep_ms(1 + rand_r(&seed) % 4);
        int i = (int)(rand_r(&seed) % NW);
        kill(workers[i], SIGKILL);
        waitpid(workers[i], NULL, 0);
        kills++;
        workers[i] = start(i, round++);
        if (!check_values("while running"))
            bad++;
    }
    CHECK(bad == 0);
    for (int i = 0; i < NW; i++) {
        kill(workers[i], SIGKILL);
        waitpid(workers[i], NULL, 0);
        workers[i] = 0;
    }
    /* Every worker is dead and reaped: its adjustments are applied, its waits gone. */
    CHECK(check_values("at the end"));
    CHECK(semctl(set_id, 2, GETVAL) == RES);
    for (int s = 0; s < 3; s++) {
        CHECK(semctl(set_id, s, GETNCNT) == 0);
        CHECK(semctl(set_id, s, GETZCNT) == 0);
    }
    /* The set still works, for every kind of call. */
    struct sembuf all[3] = {{0, -1, IPC_NOWAIT}, {1, -1, IPC_NOWAIT}, {2, -1, SEM_UNDO | IPC_NOWAIT}};
    unsigned short before[3];
    u.array = before;
    EXPECT_OK(semctl(set_id, 0, GETALL, u));
    if (before[0] > 0 && before[1] > 0) {
        CHECK(semop(set_id, all, 3) == 0);
        struct sembuf back[3] = {{0, 1, 0}, {1, 1, 0}, {2, 1, SEM_UNDO}};
        CHECK(semop(set_id, back, 3) == 0);
    }
    struct sembuf one = {0, 1, 0}, minus = {0, -1, 0};
    CHECK(semop(set_id, &one, 1) == 0 && semop(set_id, &minus, 1) == 0);
    struct timespec ts = {0, 1000000L};
    struct sembuf z = {2, 0, 0};
    EXPECT_ERR(semtimedop(set_id, &z, 1, &ts), EAGAIN);
    CHECK(check_values("after the checks"));
    printf("sem_chaos: %d workers killed\n", kills);

    EXPECT_OK(semctl(set_id, 0, IPC_RMID));
    return TEST_DONE();
}
