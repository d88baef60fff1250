/* Stress: 4 processes hammer one set of 3 semaphores for about 2 s with random
 * multi-operation semop/semtimedop calls, all with SEM_UNDO (acquire -k, later release
 * +k, sometimes several operations on the same semaphore, sometimes IPC_NOWAIT or a
 * wait-for-zero).  Each process tracks what it holds.  One process is SIGKILLed in the
 * middle while it holds units of every semaphore; of the others, two release what they
 * hold before exiting and one exits holding.  The parent checks throughout that no value
 * exceeds its initial value, and at the end that every value is back at its initial
 * value (all holds released or undone), with nobody left waiting. */
#include "../common.h"
#include "../sem_common.h"

#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/sem.h>

#define NSEMS 3
#define NKIDS 4
#define VICTIM 3
#define RUN_MS 2000
#define VICTIM_HOLD_MS 900
#define KILL_AFTER_MS 1000

static const unsigned short init_vals[NSEMS] = {6, 4, 3};

struct shared {
    volatile int held[NKIDS][NSEMS];
    volatile long ops_done[NKIDS];
    volatile int victim_ready;
};

static int set_id = -1;
static pid_t kids[NKIDS];

/* Watchdog cleanup (the set is removed by remove_all()). */
static void kill_children(void) {
    kill_kids(kids, NKIDS);
    remove_all();
}

static int total_held(const int *held) {
    int t = 0;
    for (int s = 0; s < NSEMS; s++)
        t += held[s];
    return t;
}

/* Build a random call from what the process holds; returns nops. */
static int build_call(unsigned *seed, const int *held, struct sembuf *ops) {
    int tent[NSEMS];
    memcpy(tent, held, sizeof(tent));
    int nops = 1 + (int)(rand_r(seed) % 4);
    int n = 0;
    for (int i = 0; i < nops; i++) {
        unsigned short s = (unsigned short)(rand_r(seed) % NSEMS);
        short flg = SEM_UNDO;
        if (rand_r(seed) % 4 == 0)
            flg |= IPC_NOWAIT;
        int pick = (int)(rand_r(seed) % 10);
        if (pick == 0) {
            /* wait-for-zero: only without waiting */
            ops[n++] = (struct sembuf){s, 0, (short)(flg | IPC_NOWAIT)};
        } else if (tent[s] > 0 && pick < 6) {
            int r = 1 + (int)(rand_r(seed) % (unsigned)tent[s]);
            tent[s] -= r;
            ops[n++] = (struct sembuf){s, (short)r, flg};
        } else {
            /* at most half of a semaphore (rounded up) per process */
            int cap = (init_vals[s] + 1) / 2;
            int k = 1 + (int)(rand_r(seed) % 2);
            if (tent[s] + k > cap)
                k = cap - tent[s];
            if (k <= 0)
                continue;
            tent[s] += k;
            ops[n++] = (struct sembuf){s, (short)-k, flg};
        }
    }
    return n;
}

/* One call: blocking semop while holding nothing, otherwise a short semtimedop (a
 * holder never waits long, so holders cannot deadlock). 1 if it succeeded. */
static int do_call(int id, struct sembuf *ops, int n, const int *held, int *bad) {
    int r;
    if (total_held(held) == 0) {
        r = semop(id, ops, (size_t)n);
    } else {
        struct timespec ts = {0, 2000000L};
        r = semtimedop(id, ops, (size_t)n, &ts);
    }
    if (r == 0)
        return 1;
    if (errno != EAGAIN && errno != EINTR) {
        if (*bad == 0)
            fprintf(stderr, "  pid %d: semop failed: %s\n", (int)getpid(), strerror(errno));
        (*bad)++;
    }
    return 0;
}

static void apply(int *held, const struct sembuf *ops, int n) {
    for (int i = 0; i < n; i++)
        held[ops[i].sem_num] -= ops[i].sem_op;
}

static void publish(struct shared *sh, int me, const int *held) {
    for (int s = 0; s < NSEMS; s++)
        sh->held[me][s] = held[s];
}

static void child(int me, struct shared *sh, long long start) {
    unsigned seed = (unsigned)getpid() * 2654435761u;
    int held[NSEMS] = {0, 0, 0};
    int bad = 0;
    long done = 0;
    long long end = start + (me == VICTIM ? VICTIM_HOLD_MS : RUN_MS);
    struct sembuf ops[4];

    while (now_ms() < end) {
        int n = build_call(&seed, held, ops);
        if (n == 0)
            continue;
        if (do_call(set_id, ops, n, held, &bad)) {
            apply(held, ops, n);
            publish(sh, me, held);
            sh->ops_done[me] = ++done;
        }
        for (int s = 0; s < NSEMS; s++)
            if (held[s] < 0 || held[s] > init_vals[s]) {
                fprintf(stderr, "  pid %d holds %d of semaphore %d\n", (int)getpid(), held[s], s);
                bad++;
                held[s] = 0;
            }
    }

    if (me == VICTIM) {
        /* Hold at least one unit of each semaphore, then wait to be killed. */
        for (unsigned short s = 0; s < NSEMS; s++) {
            if (held[s] > 0)
                continue;
            struct sembuf b = {s, -1, SEM_UNDO};
            if (semop(set_id, &b, 1) == 0) {
                held[s]++;
                publish(sh, me, held);
            } else {
                bad++;
            }
        }
        sh->victim_ready = 1;
        for (;;)
            pause();
    }

    if (me < 2 && total_held(held) > 0) {
        /* Release everything explicitly (the adjustments go back to zero). */
        struct sembuf rel[NSEMS];
        int n = 0;
        for (unsigned short s = 0; s < NSEMS; s++)
            if (held[s] > 0)
                rel[n++] = (struct sembuf){s, (short)held[s], SEM_UNDO};
        if (semop(set_id, rel, (size_t)n) == 0) {
            memset(held, 0, sizeof(held));
            publish(sh, me, held);
        } else {
            bad++;
        }
    }
    _exit(bad ? 1 : 0);
}

int main(void) {
    watchdog(14, kill_children);

    struct shared *sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
                             MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) {
        perror("mmap");
        return 2;
    }
    memset((void *)sh, 0, sizeof(*sh));
    set_id = new_set(NSEMS);
    union semun u;
    unsigned short vals[NSEMS];
    memcpy(vals, init_vals, sizeof(vals));
    u.array = vals;
    EXPECT_OK(semctl(set_id, 0, SETALL, u));

    long long start = now_ms();
    for (int i = 0; i < NKIDS; i++) {
        pid_t pid = fork_child();
        if (pid == 0) {
            alarm(10);
            child(i, sh, start);
        }
        kids[i] = pid;
        CHECK(pid > 0);
    }

    /* Watch the values while the children run; kill the victim once it holds. */
    int over = 0, killed = 0;
    long long deadline = start + RUN_MS + 5000;
    int running = NKIDS;
    int status[NKIDS];
    int reaped[NKIDS] = {0, 0, 0, 0};
    while (running > 0 && now_ms() < deadline) {
        unsigned short cur[NSEMS];
        u.array = cur;
        if (semctl(set_id, 0, GETALL, u) == 0) {
            for (int s = 0; s < NSEMS; s++)
                if (cur[s] > init_vals[s]) {
                    if (over == 0)
                        fprintf(stderr, "  value %d of semaphore %d exceeds %d\n", cur[s], s,
                                init_vals[s]);
                    over++;
                }
        }
        if (!killed && sh->victim_ready && now_ms() - start >= KILL_AFTER_MS) {
            kill(kids[VICTIM], SIGKILL);
            killed = 1;
        }
        for (int i = 0; i < NKIDS; i++) {
            if (!reaped[i] && waitpid(kids[i], &status[i], WNOHANG) == kids[i]) {
                reaped[i] = 1;
                running--;
            }
        }
        sleep_ms(2);
    }
    CHECK(running == 0);
    CHECK(killed);
    CHECK(over == 0);
    for (int i = 0; i < NKIDS; i++) {
        if (!reaped[i]) {
            fprintf(stderr, "  child %d still running\n", i);
            kill(kids[i], SIGKILL);
            waitpid(kids[i], &status[i], 0);
            continue;
        }
        if (i == VICTIM) {
            CHECK(WIFSIGNALED(status[i]) && WTERMSIG(status[i]) == SIGKILL);
        } else {
            CHECK(WIFEXITED(status[i]) && WEXITSTATUS(status[i]) == 0);
            if (!(WIFEXITED(status[i]) && WEXITSTATUS(status[i]) == 0))
                fprintf(stderr, "  child %d status 0x%x\n", i, status[i]);
        }
        /* Everyone made progress. */
        CHECK(sh->ops_done[i] > 0);
    }
    /* The victim died holding units of every semaphore; child 2 exited holding
     * whatever it held; children 0 and 1 released. */
    for (int s = 0; s < NSEMS; s++)
        CHECK(sh->held[VICTIM][s] > 0);
    CHECK(total_held((const int *)sh->held[0]) == 0);
    CHECK(total_held((const int *)sh->held[1]) == 0);

    /* Every hold was released or undone. */
    unsigned short fin[NSEMS];
    u.array = fin;
    CHECK(semctl(set_id, 0, GETALL, u) == 0);
    for (int s = 0; s < NSEMS; s++) {
        CHECK(fin[s] == init_vals[s]);
        if (fin[s] != init_vals[s])
            fprintf(stderr, "  semaphore %d ends at %d, want %d\n", s, fin[s], init_vals[s]);
        CHECK(semctl(set_id, s, GETNCNT) == 0);
        CHECK(semctl(set_id, s, GETZCNT) == 0);
    }
    long total = 0;
    for (int i = 0; i < NKIDS; i++)
        total += sh->ops_done[i];
    printf("sem_stress: %ld successful calls\n", total);

    semctl(set_id, 0, IPC_RMID);
    munmap((void *)sh, sizeof(*sh));
    return TEST_DONE();
}
