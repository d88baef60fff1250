/* Scale: every family filled to its limit at once in one namespace (with the kernel's
 * defaults that is 32,000 queues, 32,000 semaphore sets and 4,096 segments), all by key.
 * At the limit creation fails with ENOSPC; every key still finds its own object; the
 * objects work (IPC_STAT, msgsnd/msgrcv, semop, shmat) also from a process that connects
 * only then; removing one frees a slot. The limits come from IPC_INFO and the objects
 * already present from MSG_INFO/SEM_INFO/SHM_INFO, not assumed.
 *
 * Against the kernel it runs in an IPC namespace of its own when it may make one (root),
 * so that filling the machine's limits does not disturb other users; otherwise nobody
 * else may create objects while it runs. Everything is removed at the end. Four worker
 * processes create and remove the objects, so that under ipcshim their round trips to the
 * broker overlap (on a loaded machine each one waits for a time slice). */
#include "../common.h"

#include <sched.h>
#include <sys/mman.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>

union semun {
    int val;
    struct semid_ds *buf;
    unsigned short *array;
    struct seminfo *__buf;
};

enum { MSG, SEM, SHM, FAMILIES };
static const char *family_name[FAMILIES] = {"msg", "sem", "shm"};
/* The most objects this test creates per family (IPCMNI). */
#define MAX_PER_FAMILY 32768

#define WORKERS 4

/* Shared with the workers: ids[f][i] is object i of family f. */
static int *ids[FAMILIES];
static int count[FAMILIES];
static key_t key_base;

static key_t key_of(int family, int i) { return key_base + family * 0x10000 + i; }

static int create(int family, key_t key) {
    switch (family) {
    case MSG: return msgget(key, IPC_CREAT | IPC_EXCL | 0600);
    case SEM: return semget(key, 1, IPC_CREAT | IPC_EXCL | 0600);
    default: return shmget(key, 4096, IPC_CREAT | IPC_EXCL | 0600);
    }
}

static int lookup(int family, key_t key) {
    switch (family) {
    case MSG: return msgget(key, 0);
    case SEM: return semget(key, 0, 0);
    default: return shmget(key, 0, 0);
    }
}

static int remove_id(int family, int id) {
    switch (family) {
    case MSG: return msgctl(id, IPC_RMID, NULL);
    case SEM: return semctl(id, 0, IPC_RMID);
    default: return shmctl(id, IPC_RMID, NULL);
    }
}

/* The family's limit on objects (IPC_INFO) and how many exist (the *_INFO counts). */
static void limit_and_used(int family, long *limit, long *used) {
    *limit = *used = -1;
    if (family == MSG) {
        struct msginfo mi;
        if (msgctl(0, IPC_INFO, (struct msqid_ds *)&mi) >= 0) *limit = mi.msgmni;
        if (msgctl(0, MSG_INFO, (struct msqid_ds *)&mi) >= 0) *used = mi.msgpool;
    } else if (family == SEM) {
        struct seminfo si;
        union semun arg = {.__buf = &si};
        if (semctl(0, 0, IPC_INFO, arg) >= 0) *limit = si.semmni;
        if (semctl(0, 0, SEM_INFO, arg) >= 0) *used = si.semusz;
    } else {
        struct shminfo info;
        struct shm_info si;
        if (shmctl(0, IPC_INFO, (struct shmid_ds *)&info) >= 0) *limit = (long)info.shmmni;
        if (shmctl(0, SHM_INFO, (struct shmid_ds *)&si) >= 0) *used = si.used_ids;
    }
}

static void remove_all(void) {
    for (int f = 0; f < FAMILIES; f++) {
        for (int i = 0; i < count[f]; i++)
            if (ids[f][i] >= 0) remove_id(f, ids[f][i]);
        count[f] = 0;
    }
}

/* Runs fn(family, first, step) in WORKERS processes (first = 0..WORKERS-1, step = WORKERS);
 * returns how many failed. */
static int in_workers(int family, void (*fn)(int, int, int)) {
    pid_t pids[WORKERS];
    fflush(NULL);
    for (int w = 0; w < WORKERS; w++) {
        pids[w] = fork();
        if (pids[w] == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            fn(family, w, WORKERS);
            _exit(0);
        }
        if (pids[w] > 0) watch_kid(pids[w]);
    }
    int failed = 0;
    for (int w = 0; w < WORKERS; w++) {
        int st = 0;
        if (pids[w] < 0 || waitpid(pids[w], &st, 0) != pids[w] || !WIFEXITED(st) || WEXITSTATUS(st) != 0) failed++;
        if (pids[w] > 0) forget_kid(pids[w]);
    }
    return failed;
}

/* Workers: create objects first, first+step, ... below count[family] (exit 1 at the first
 * failure, its errno reported); remove them. */
static void create_some(int f, int first, int step) {
    for (int i = first; i < count[f]; i += step) {
        ids[f][i] = create(f, key_of(f, i));
        if (ids[f][i] < 0) {
            fprintf(stderr, "%s: creating object %d failed: %s\n", family_name[f], i, strerror(errno));
            _exit(1);
        }
    }
}

static void remove_some(int f, int first, int step) {
    for (int i = first; i < count[f]; i += step)
        if (remove_id(f, ids[f][i]) != 0) _exit(1);
}

/* A process that connects only now uses the last object of each family. */
static void use_last_objects(void *arg) {
    (void)arg;
    int q = ids[MSG][count[MSG] - 1], s = ids[SEM][count[SEM] - 1], m = ids[SHM][count[SHM] - 1];
    CHECK(lookup(MSG, key_of(MSG, count[MSG] - 1)) == q);
    struct { long mtype; char mtext[8]; } out = {7, "scale"}, in;
    EXPECT_OK(msgsnd(q, &out, sizeof out.mtext, IPC_NOWAIT));
    CHECK(msgrcv(q, &in, sizeof in.mtext, 7, IPC_NOWAIT) == sizeof in.mtext);
    CHECK(strcmp(in.mtext, "scale") == 0);
    struct sembuf up = {0, 2, 0}, down = {0, -1, IPC_NOWAIT};
    EXPECT_OK(semop(s, &up, 1));
    EXPECT_OK(semop(s, &down, 1));
    CHECK(semctl(s, 0, GETVAL) == 1);
    char *p = shmat(m, NULL, 0);
    CHECK(p != (void *)-1);
    if (p != (void *)-1) {
        strcpy(p, "scale");
        EXPECT_OK(shmdt(p));
    }
    exit(TEST_DONE());
}

int main(void) {
    /* An IPC namespace of our own against the kernel, when we may (it changes nothing
     * under ipcshim). Its limits are the kernel's defaults, read below like any others. */
    if (unshare(CLONE_NEWIPC) != 0 && errno != EPERM && errno != EINVAL && errno != ENOSYS)
        fprintf(stderr, "unshare(CLONE_NEWIPC): %s\n", strerror(errno));
    watchdog(55, remove_all);
    key_base = (key_t)(0x5c000000 ^ ((getpid() & 0x3ff) << 18));

    long limit[FAMILIES], used[FAMILIES];
    for (int f = 0; f < FAMILIES; f++) {
        limit_and_used(f, &limit[f], &used[f]);
        CHECK(limit[f] >= 1 && limit[f] <= MAX_PER_FAMILY);
        CHECK(used[f] >= 0 && used[f] <= limit[f]);
        if (limit[f] < 1 || limit[f] > MAX_PER_FAMILY || used[f] < 0 || used[f] > limit[f])
            return TEST_DONE();
        ids[f] = mmap(NULL, MAX_PER_FAMILY * sizeof(int), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (ids[f] == MAP_FAILED) return 2;
        memset(ids[f], 0xff, MAX_PER_FAMILY * sizeof(int)); /* -1: not created */
    }

    /* Fill the families in turn, so that all three are full at once. */
    long long t0 = now_ms();
    for (int f = 0; f < FAMILIES; f++) {
        count[f] = (int)(limit[f] - used[f]);
        CHECK(in_workers(f, create_some) == 0);
        int created = 0;
        for (int i = 0; i < count[f]; i++) created += ids[f][i] >= 0;
        CHECK(created == count[f]);
        /* One more fails with ENOSPC, by key or private. */
        EXPECT_ERR(create(f, key_of(f, count[f])), ENOSPC);
        EXPECT_ERR(create(f, IPC_PRIVATE), ENOSPC);
    }
    fprintf(stderr, "created %d queues, %d sets, %d segments in %lld ms\n", count[MSG], count[SEM], count[SHM],
            now_ms() - t0);

    /* Every key finds its own object; IPC_STAT of every seventh agrees on the key. */
    for (int f = 0; f < FAMILIES; f++) {
        int wrong = 0, stat_wrong = 0;
        for (int i = 0; i < count[f]; i++) {
            if (lookup(f, key_of(f, i)) != ids[f][i]) wrong++;
            if (i % 7 != 0 && i != count[f] - 1) continue;
            key_t k = -1;
            if (f == MSG) {
                struct msqid_ds ds;
                if (msgctl(ids[f][i], IPC_STAT, &ds) == 0) k = ds.msg_perm.__key;
            } else if (f == SEM) {
                struct semid_ds ds;
                union semun arg = {.buf = &ds};
                if (semctl(ids[f][i], 0, IPC_STAT, arg) == 0) k = ds.sem_perm.__key;
            } else {
                struct shmid_ds ds;
                if (shmctl(ids[f][i], IPC_STAT, &ds) == 0) k = ds.shm_perm.__key;
            }
            if (k != key_of(f, i)) stat_wrong++;
        }
        if (wrong || stat_wrong)
            fprintf(stderr, "%s: %d lookups and %d IPC_STATs wrong\n", family_name[f], wrong, stat_wrong);
        CHECK(wrong == 0);
        CHECK(stat_wrong == 0);
        long l, u;
        limit_and_used(f, &l, &u);
        CHECK(u == limit[f]);
    }

    if (count[MSG] > 0 && count[SEM] > 0 && count[SHM] > 0) {
        run_in_child(use_last_objects, NULL);
    }

    /* Removing one object makes room for exactly one. */
    for (int f = 0; f < FAMILIES; f++) {
        if (count[f] == 0) continue;
        EXPECT_OK(remove_id(f, ids[f][0]));
        ids[f][0] = EXPECT_OK(create(f, key_of(f, 0)));
        EXPECT_ERR(create(f, IPC_PRIVATE), ENOSPC);
    }

    t0 = now_ms();
    for (int f = 0; f < FAMILIES; f++) {
        CHECK(in_workers(f, remove_some) == 0);
        count[f] = 0;
        long l, u;
        limit_and_used(f, &l, &u);
        CHECK(u == used[f]);
    }
    fprintf(stderr, "removed them in %lld ms\n", now_ms() - t0);
    return TEST_DONE();
}
