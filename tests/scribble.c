/* Scribbles random bytes over a message queue's and a semaphore set's shared memory while
 * other processes use them (tests/scribble.rs runs it with libipcshim.so preloaded).
 *
 *   scribble SEED MILLISECONDS
 *
 * The parent makes a queue and a set, maps them by using them once, and finds the
 * mappings in /proc/self/maps by their memfd names (ipcshim.PID.msg.N / .sem.N). USERS
 * children call msgsnd/msgrcv/msgctl/semop/semtimedop/semctl on them in a loop (nothing
 * that may block without a bound), counting each errno; the parent writes random bytes
 * into random places of both mappings (the header more often) and SIGKILLs a random user
 * now and then (so the broker applies SEM_UNDO in a scribbled set, and lockers recover
 * from scribbled state). Then every user must end by itself: a crash (a signal) or a hang
 * (still running 10 s after its time) fails. Afterwards the objects are removed and a
 * fresh queue and set must work: the broker survived.
 *
 * Prints "crashes N", "hangs N", the errnos seen, and "ok" or "FAIL ..." lines; exits 0
 * only if nothing failed. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define USERS 4
#define NSEMS 4

union semun {
    int val;
    struct semid_ds *buf;
    unsigned short *array;
};

struct mbuf {
    long mtype;
    char mtext[2048];
};

struct shared {
    volatile int stop;
    long iterations[64];
    long errnos[USERS * 64][134]; /* per user instance, per errno (0: success) */
    int call[USERS * 64];         /* what each user instance is calling, for a hang report */
};

static const char *call_name[] = {"-", "msgsnd", "msgrcv", "msgctl", "semop", "semtimedop", "semctl"};

static struct shared *sh;
static int q, set;
static int failures;

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t rng;
static uint64_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void fail(const char *what) {
    printf("FAIL %s\n", what);
    failures++;
}

static void note(int inst, int call, long r) {
    int e = r < 0 ? errno : 0;
    if (e < 0 || e >= 134)
        e = 133;
    sh->errnos[inst][e]++;
    (void)call;
}

#define DO(inst, c, expr)                  \
    do {                                    \
        sh->call[inst] = c;                 \
        long _r = (long)(expr);             \
        note(inst, c, _r);                  \
        sh->call[inst] = 0;                 \
    } while (0)

static void user(int inst, long long until) {
    static struct mbuf m;
    rng = 0x9e3779b97f4a7c15ull * (uint64_t)(inst + 1) ^ (uint64_t)getpid();
    while (now_ms() < until && !sh->stop) {
        sh->iterations[inst % 64]++;
        size_t len = next() % 3000; /* more than the buffer's 2048 sometimes: E2BIG/EINVAL paths */
        if (len > sizeof m.mtext)
            len = sizeof m.mtext;
        m.mtype = 1 + (long)(next() % 4);
        memset(m.mtext, (int)inst, len);
        struct sembuf ops[3] = {
            {(unsigned short)(next() % NSEMS), (short)((int)(next() % 5) - 2), (short)(next() % 2 ? SEM_UNDO : 0) | IPC_NOWAIT},
            {(unsigned short)(next() % NSEMS), (short)((int)(next() % 3) - 1), SEM_UNDO},
            {(unsigned short)(next() % NSEMS), 0, 0},
        };
        struct timespec ts = {0, 1000000};
        union semun u;
        unsigned short vals[NSEMS];
        struct msqid_ds mds;
        struct semid_ds sds;
        switch (next() % 10) {
        case 0: DO(inst, 1, msgsnd(q, &m, len, IPC_NOWAIT)); break;
        case 1: DO(inst, 2, msgrcv(q, &m, sizeof m.mtext, (long)(next() % 5) - 2, IPC_NOWAIT | (next() % 2 ? MSG_NOERROR : 0))); break;
        case 2: DO(inst, 2, msgrcv(q, &m, 16, 0, IPC_NOWAIT)); break;
        case 3: DO(inst, 3, msgctl(q, IPC_STAT, &mds)); break;
        case 4: DO(inst, 4, semop(set, ops, 1)); break;
        case 5: DO(inst, 5, semtimedop(set, ops, 1 + next() % 3, &ts)); break;
        case 6: DO(inst, 6, semctl(set, (int)(next() % NSEMS), GETVAL)); break;
        case 7:
            u.array = vals;
            DO(inst, 6, semctl(set, 0, GETALL, u));
            break;
        case 8:
            u.val = (int)(next() % 4);
            DO(inst, 6, semctl(set, (int)(next() % NSEMS), SETVAL, u));
            break;
        default:
            u.buf = &sds;
            DO(inst, 6, semctl(set, 0, IPC_STAT, u));
            DO(inst, 6, semctl(set, (int)(next() % NSEMS), (next() % 2) ? GETNCNT : GETZCNT));
            break;
        }
    }
    _exit(0);
}

/* The start and length of the mapping whose name contains `what`. */
static int find_mapping(const char *what, char **start, size_t *len) {
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    int found = 0;
    while (f && fgets(line, sizeof line, f)) {
        unsigned long a, b;
        if (strstr(line, "/memfd:ipcshim.") && strstr(line, what) && sscanf(line, "%lx-%lx", &a, &b) == 2) {
            *start = (char *)a;
            *len = b - a;
            found = 1;
            break;
        }
    }
    if (f)
        fclose(f);
    return found;
}

/* One scribble: random bytes at a random place, the header most often (mostly sparing its
 * magic and version, which make the object EIDRM for good: the rest is the interesting
 * part). */
static void scribble(char *base, size_t len) {
    size_t off, n = 1 + next() % 16;
    switch (next() % 5) {
    case 0: off = next() % 512; break;
    case 1: off = 16 + next() % 496; break; /* the header past magic and version */
    case 2: off = next() % (len < 16384 ? len : 16384); break;
    default: off = next() % len; break;
    }
    if (off + n > len)
        n = len - off;
    for (size_t i = 0; i < n; i++) {
        /* small numbers and all-ones are likelier to pass a naive bound than noise */
        switch (next() % 4) {
        case 0: base[off + i] = 0; break;
        case 1: base[off + i] = (char)0xff; break;
        default: base[off + i] = (char)next(); break;
        }
    }
}

static pid_t spawn_user(int inst, long long until) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0)
        user(inst, until);
    return pid;
}

int main(int argc, char **argv) {
    if (argc < 3)
        return 2;
    rng = strtoull(argv[1], NULL, 0) | 1;
    long ms = strtol(argv[2], NULL, 0);
    sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    q = msgget(IPC_PRIVATE, 0600);
    set = semget(IPC_PRIVATE, NSEMS, 0600);
    if (sh == MAP_FAILED || q < 0 || set < 0) {
        perror("setup");
        return 2;
    }
    /* Map both in this process: the library maps an object at its first use. */
    struct mbuf m = {1, "x"};
    struct sembuf up = {0, 1, 0};
    if (msgsnd(q, &m, 1, 0) != 0 || semop(set, &up, 1) != 0) {
        perror("first use");
        return 2;
    }
    char *qmap, *smap;
    size_t qlen, slen;
    if (!find_mapping(".msg.", &qmap, &qlen) || !find_mapping(".sem.", &smap, &slen)) {
        printf("FAIL no ipcshim mappings (is libipcshim.so preloaded?)\n");
        return 2;
    }

    long long until = now_ms() + ms;
    pid_t users[USERS];
    int inst_of[USERS], next_inst = 0, kills = 0, scribbles = 0;
    for (int i = 0; i < USERS; i++) {
        inst_of[i] = next_inst;
        users[i] = spawn_user(next_inst++, until);
    }
    while (now_ms() < until) {
        for (int k = 0; k < 4; k++, scribbles++) {
            if (next() % 2)
                scribble(qmap, qlen);
            else
                scribble(smap, slen);
        }
        usleep(200 + next() % 800);
        if (next() % 16 == 0 && next_inst < USERS * 64) {
            int i = (int)(next() % USERS);
            kill(users[i], SIGKILL);
            waitpid(users[i], NULL, 0);
            kills++;
            inst_of[i] = next_inst;
            users[i] = spawn_user(next_inst++, until);
        }
    }
    sh->stop = 1;

    /* Everyone ends by itself, within 10 s. */
    int crashes = 0, hangs = 0;
    long long deadline = now_ms() + 10000;
    for (int i = 0; i < USERS; i++) {
        int st = 0;
        pid_t r;
        while ((r = waitpid(users[i], &st, WNOHANG)) == 0 && now_ms() < deadline)
            usleep(1000);
        if (r == 0) {
            char path[64], wchan[64] = "?";
            snprintf(path, sizeof path, "/proc/%d/wchan", users[i]);
            FILE *f = fopen(path, "r");
            if (f) {
                if (!fgets(wchan, sizeof wchan, f))
                    strcpy(wchan, "?");
                fclose(f);
            }
            printf("FAIL user %d hangs in %s (wchan %s)\n", inst_of[i], call_name[sh->call[inst_of[i]]], wchan);
            hangs++;
            failures++;
            kill(users[i], SIGKILL);
            waitpid(users[i], &st, 0);
        } else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            printf("FAIL user %d ended with status 0x%x (in %s)\n", inst_of[i], st, call_name[sh->call[inst_of[i]]]);
            crashes++;
            failures++;
        }
    }
    long calls = 0, errs[134] = {0};
    for (int i = 0; i < next_inst; i++)
        for (int e = 0; e < 134; e++) {
            errs[e] += sh->errnos[i][e];
            calls += sh->errnos[i][e];
        }
    printf("seed %s: %ld calls, %d scribbles, %d users killed, crashes %d, hangs %d; results:", argv[1], calls, scribbles, kills, crashes, hangs);
    for (int e = 0; e < 134; e++)
        if (errs[e])
            printf(" %s=%ld", e ? strerrorname_np(e) : "ok", errs[e]);
    printf("\n");
    if (calls < 100)
        fail("the users made almost no calls");

    /* The scribbled objects can be removed (or are gone already); new ones work. */
    if (msgctl(q, IPC_RMID, NULL) != 0 && errno != EINVAL && errno != EIDRM)
        fail("msgctl IPC_RMID of the scribbled queue");
    if (semctl(set, 0, IPC_RMID) != 0 && errno != EINVAL && errno != EIDRM)
        fail("semctl IPC_RMID of the scribbled set");
    int q2 = msgget(IPC_PRIVATE, 0600), s2 = semget(IPC_PRIVATE, 2, 0600);
    struct sembuf ops[2] = {{0, 1, SEM_UNDO}, {1, 2, 0}};
    union semun u;
    u.val = 0;
    if (q2 < 0 || s2 < 0)
        fail("new objects after the scribbling");
    else {
        m.mtype = 7;
        if (msgsnd(q2, &m, 1, 0) != 0 || msgrcv(q2, &m, 10, 7, IPC_NOWAIT) != 1)
            fail("a new queue works");
        if (semop(s2, ops, 2) != 0 || semctl(s2, 1, GETVAL, u) != 2)
            fail("a new set works");
        msgctl(q2, IPC_RMID, NULL);
        semctl(s2, 0, IPC_RMID);
    }
    printf(failures ? "FAIL\n" : "ok\n");
    return failures ? 1 : 0;
}
