/* System V IPC micro-benchmarks: the same binary runs against the kernel and with
 * LD_PRELOAD=libipcshim.so (see bench.sh, which prints the side-by-side table).
 *
 *   bench list                 print the case names, one a line
 *   bench CASE [ITERATIONS]    run one case, print "CASE ns_per_op" on stdout
 *   bench scale msg|sem|shm    latency of get (an existing key) and IPC_STAT as the family
 *                              grows to 100, 1,000, 10,000 and 30,000 objects (fewer if its
 *                              limit is lower); one line per step (see bench_scale)
 *   bench clients N            N processes connect at once and each makes one call
 *                              (see bench_clients); bench-scale.sh runs these two
 *   bench linexfer             the machine, not IPC: ns for one cache line to go from one
 *                              process's CPU to another's (see bench_linexfer)
 *
 * When a call fails (for instance ENOSYS from an implementation that lacks that
 * family yet) the case prints "CASE error <strerror>" and exits with status 2.
 * Keys are derived from getpid(), so concurrent runs don't clash, and every object
 * created is removed, also on the error paths.  ITERATIONS counts the unit the
 * figure is reported in (cycles, lookups, pairs, messages, round trips, objects).
 *
 * Build: gcc -O2 -Wall -Wextra -o build/c-tests/bench c-tests/bench.c -lpthread */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/msg.h>
#include <sys/prctl.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef SEM_UNDO
#define SEM_UNDO 0x1000
#endif

/* glibc leaves union semun to the caller. */
union semun {
    int val;
    struct semid_ds *buf;
    unsigned short *array;
};

#define BATCH 2000          /* objects per batch in the create/lookup cases */
#define WATCHDOG_S 300      /* a case that hangs this long is reported as an error */

static const char *case_name = "?";

/* ---- cleanup registry: every created object is recorded and removed at exit ---- */
#define MAX_OBJS (BATCH + 16)
static int shm_ids[MAX_OBJS], sem_ids[MAX_OBJS], msg_ids[MAX_OBJS];
static int n_shm, n_sem, n_msg;
static pid_t children[4];
static int n_children;

static void track(int *ids, int *n, int id) {
    if (*n < MAX_OBJS) ids[(*n)++] = id;
}

static void untrack(int *ids, int *n, int id) {
    for (int i = *n - 1; i >= 0; i--)
        if (ids[i] == id) {
            ids[i] = ids[--*n];
            return;
        }
}

/* Objects of the scale cases: family (0 msg, 1 sem, 2 shm) and id. */
#define SCALE_MAX 32768
static int scale_ids[SCALE_MAX], n_scale, scale_family;
static void scale_remove_all(void);

static void cleanup(void) {
    scale_remove_all();
    for (int i = 0; i < n_children; i++)
        if (children[i] > 0) kill(children[i], SIGKILL);
    for (int i = 0; i < n_children; i++)
        if (children[i] > 0) waitpid(children[i], NULL, 0);
    n_children = 0;
    for (int i = 0; i < n_shm; i++) shmctl(shm_ids[i], IPC_RMID, NULL);
    for (int i = 0; i < n_sem; i++) semctl(sem_ids[i], 0, IPC_RMID);
    for (int i = 0; i < n_msg; i++) msgctl(msg_ids[i], IPC_RMID, NULL);
    n_shm = n_sem = n_msg = 0;
}

static void fail_errno(int err) {
    printf("%s error %s\n", case_name, strerror(err));
    fflush(stdout);
    cleanup();
    exit(2);
}

/* Fail with the current errno. */
static void fail(void) { fail_errno(errno); }

/* SIGALRM (the watchdog) and SIGTERM/SIGINT/SIGHUP (e.g. from timeout(1)): report,
 * remove what was created, exit 2. */
static void on_alarm(int sig) {
    static const char msg_alarm[] = " error timed out\n", msg_sig[] = " error interrupted\n";
    const char *msg = sig == SIGALRM ? msg_alarm : msg_sig;
    if (write(1, case_name, strlen(case_name)) < 0 || write(1, msg, strlen(msg)) < 0) {
    }
    cleanup();
    _exit(2);
}

/* ---- helpers ---- */
static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static key_t key_base;

/* Keys unique to this process: base ^ n for n < 4096. Never IPC_PRIVATE. */
static key_t key_n(int n) { return (key_t)(key_base + n); }

static long read_proc_long(const char *path, int field) {
    FILE *f = fopen(path, "r");
    long v[4] = {0, 0, 0, 0};
    if (!f) return -1;
    int got = fscanf(f, "%ld %ld %ld %ld", &v[0], &v[1], &v[2], &v[3]);
    fclose(f);
    if (got <= field) return -1;
    return v[field];
}

/* Objects per batch, kept under the machine's limit (leave room for other users). */
static int batch_size(long limit) {
    int b = BATCH;
    if (limit > 0 && limit - 64 < b) b = (int)(limit - 64);
    if (b < 1) b = 1;
    return b;
}

/* Children die with the parent; a case that forks records them for cleanup. */
static pid_t spawn(void) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) fail();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        n_children = 0;
        n_shm = n_sem = n_msg = 0; /* the parent removes the objects */
        alarm(WATCHDOG_S);
        return 0;
    }
    children[n_children++] = pid;
    return pid;
}

/* Child side: exit with errno (nonzero) on failure, 0 on success. */
#define CHILD_OK(expr)                    \
    do {                                  \
        if ((long)(expr) == -1) _exit(errno ? errno : 255); \
    } while (0)

/* Wait for every child; a child's nonzero exit status is the errno it failed with. */
static void reap_children(void) {
    int err = 0;
    for (int i = 0; i < n_children; i++) {
        int st;
        if (waitpid(children[i], &st, 0) < 0) {
            if (!err) err = errno;
        } else if (WIFEXITED(st) && WEXITSTATUS(st) != 0) {
            if (!err) err = WEXITSTATUS(st) == 255 ? EIO : WEXITSTATUS(st);
        } else if (WIFSIGNALED(st)) {
            if (!err) err = EINTR;
        }
        children[i] = 0;
    }
    n_children = 0;
    if (err) fail_errno(err);
}

static int shm_create(key_t key, size_t size, int flags) {
    int id = shmget(key, size, IPC_CREAT | IPC_EXCL | 0600 | flags);
    if (id < 0) fail();
    track(shm_ids, &n_shm, id);
    return id;
}

static void shm_remove(int id) {
    if (shmctl(id, IPC_RMID, NULL) < 0) fail();
    untrack(shm_ids, &n_shm, id);
}

static int sem_create(key_t key, int nsems) {
    int id = semget(key, nsems, IPC_CREAT | IPC_EXCL | 0600);
    if (id < 0) fail();
    track(sem_ids, &n_sem, id);
    return id;
}

static void sem_remove(int id) {
    if (semctl(id, 0, IPC_RMID) < 0) fail();
    untrack(sem_ids, &n_sem, id);
}

static int msg_create(key_t key) {
    int id = msgget(key, IPC_CREAT | IPC_EXCL | 0600);
    if (id < 0) fail();
    track(msg_ids, &n_msg, id);
    return id;
}

static void msg_remove(int id) {
    if (msgctl(id, IPC_RMID, NULL) < 0) fail();
    untrack(msg_ids, &n_msg, id);
}

static void sem_setval(int id, int num, int val) {
    union semun arg;
    arg.val = val;
    if (semctl(id, num, SETVAL, arg) < 0) fail();
}

static void sem_op(int id, unsigned short num, short op, short flg) {
    struct sembuf sb = {num, op, flg};
    if (semop(id, &sb, 1) < 0) fail();
}

/* ---- shared memory ---- */
static double bench_shm_get_at_dt(long n) {
    key_t key = key_n(0);
    int id0 = shm_create(key, 4096, 0);
    double t0 = 0;
    for (long i = -1000; i < n; i++) { /* the first 1000 cycles warm up */
        if (i == 0) t0 = now_ns();
        int id = shmget(key, 4096, 0600);
        if (id < 0) fail();
        void *p = shmat(id, NULL, 0);
        if (p == (void *)-1) fail();
        if (shmdt(p) < 0) fail();
    }
    double t = now_ns() - t0;
    shm_remove(id0);
    return t / (double)n;
}

static double bench_shm_create_rm(long n) {
    int b = batch_size(read_proc_long("/proc/sys/kernel/shmmni", 0));
    static int ids[MAX_OBJS];
    double total = 0;
    /* warm-up batch (untimed) */
    for (int i = 0; i < 16; i++) ids[i] = shm_create(key_n(i), 4096, 0);
    for (int i = 0; i < 16; i++) shm_remove(ids[i]);
    for (long done = 0; done < n;) {
        int m = (n - done < b) ? (int)(n - done) : b;
        double t0 = now_ns();
        for (int i = 0; i < m; i++) ids[i] = shm_create(key_n(i), 4096, 0);
        for (int i = 0; i < m; i++) shm_remove(ids[i]);
        total += now_ns() - t0;
        done += m;
    }
    return total / (double)n;
}

static double bench_shm_lookup(long n) {
    int b = batch_size(read_proc_long("/proc/sys/kernel/shmmni", 0));
    static int ids[MAX_OBJS];
    for (int i = 0; i < b; i++) ids[i] = shm_create(key_n(i), 4096, 0);
    for (int i = 0; i < b; i++) /* warm-up: one pass, checking the ids */
        if (shmget(key_n(i), 0, 0) != ids[i]) fail_errno(errno ? errno : EINVAL);
    double t0 = now_ns();
    int k = 0;
    for (long i = 0; i < n; i++) {
        if (shmget(key_n(k), 0, 0) < 0) fail();
        if (++k == b) k = 0;
    }
    double t = now_ns() - t0;
    for (int i = 0; i < b; i++) shm_remove(ids[i]);
    return t / (double)n;
}

/* ---- semaphores ---- */
static double pv(long n, short flg) {
    int id = sem_create(key_n(0), 1);
    sem_setval(id, 0, 1);
    struct sembuf p = {0, -1, flg}, v = {0, 1, flg};
    double t0 = 0;
    for (long i = -1000; i < n; i++) {
        if (i == 0) t0 = now_ns();
        if (semop(id, &p, 1) < 0) fail();
        if (semop(id, &v, 1) < 0) fail();
    }
    double t = now_ns() - t0;
    sem_remove(id);
    return t / (double)n;
}

static double bench_sem_pv(long n) { return pv(n, 0); }
static double bench_sem_pv_undo(long n) { return pv(n, SEM_UNDO); }

/* Two processes take turns on one SEM_UNDO mutex (sem 0); sem 1 is the start gate. */
static double bench_sem_contend_undo(long n) {
    int id = sem_create(key_n(0), 2);
    sem_setval(id, 0, 1);
    sem_setval(id, 1, 0);
    long per_child[2] = {n / 2, n - n / 2};
    for (int c = 0; c < 2; c++) {
        if (spawn() == 0) {
            struct sembuf gate = {1, -1, 0};
            struct sembuf p = {0, -1, SEM_UNDO}, v = {0, 1, SEM_UNDO};
            volatile unsigned long sink = 0;
            /* warm up this process's path (connection, mapping) before the gate */
            CHILD_OK(semop(id, &p, 1));
            CHILD_OK(semop(id, &v, 1));
            CHILD_OK(semop(id, &gate, 1));
            for (long i = 0; i < per_child[c]; i++) {
                CHILD_OK(semop(id, &p, 1));
                for (int j = 0; j < 8; j++) sink += (unsigned long)j; /* critical section */
                CHILD_OK(semop(id, &v, 1));
            }
            _exit(0);
        }
    }
    usleep(100000); /* let both children reach the gate */
    double t0 = now_ns();
    sem_op(id, 1, 2, 0); /* open the gate for both */
    reap_children();
    double t = now_ns() - t0;
    sem_remove(id);
    return t / (double)n;
}

static double bench_sem_create_rm(long n) {
    long semmni = read_proc_long("/proc/sys/kernel/sem", 3);
    long semmns = read_proc_long("/proc/sys/kernel/sem", 1);
    int b = batch_size(semmni);
    if (semmns > 0 && semmns - 64 < b) b = batch_size(semmns);
    static int ids[MAX_OBJS];
    double total = 0;
    for (int i = 0; i < 16; i++) ids[i] = sem_create(key_n(i), 1); /* warm-up */
    for (int i = 0; i < 16; i++) sem_remove(ids[i]);
    for (long done = 0; done < n;) {
        int m = (n - done < b) ? (int)(n - done) : b;
        double t0 = now_ns();
        for (int i = 0; i < m; i++) ids[i] = sem_create(key_n(i), 1);
        for (int i = 0; i < m; i++)
            if (semget(key_n(i), 0, 0) < 0) fail();
        for (int i = 0; i < m; i++) sem_remove(ids[i]);
        total += now_ns() - t0;
        done += m;
    }
    return total / (double)n;
}

/* One private set made and removed n times: ids are handed out cyclically, so this walks
 * every index of the family; a cost that grows with the index shows here. */
static double bench_sem_churn(long n) {
    double t0 = now_ns();
    for (long i = 0; i < n; i++) {
        int id = semget(IPC_PRIVATE, 1, 0600);
        if (id < 0) fail();
        sem_remove(id);
    }
    return (now_ns() - t0) / (double)n;
}

static double bench_sem_lookup(long n) {
    long semmni = read_proc_long("/proc/sys/kernel/sem", 3);
    int b = batch_size(semmni);
    static int ids[MAX_OBJS];
    for (int i = 0; i < b; i++) ids[i] = sem_create(key_n(i), 1);
    for (int i = 0; i < b; i++)
        if (semget(key_n(i), 0, 0) != ids[i]) fail_errno(errno ? errno : EINVAL);
    double t0 = now_ns();
    int k = 0;
    for (long i = 0; i < n; i++) {
        if (semget(key_n(k), 0, 0) < 0) fail();
        if (++k == b) k = 0;
    }
    double t = now_ns() - t0;
    for (int i = 0; i < b; i++) sem_remove(ids[i]);
    return t / (double)n;
}

/* ---- message queues ---- */
struct bench_msg {
    long mtype;
    char mtext[8192];
};

static double msg_pair(long n, size_t size) {
    int id = msg_create(key_n(0));
    static struct bench_msg out, in;
    out.mtype = 1;
    memset(out.mtext, 'x', size);
    double t0 = 0;
    for (long i = -1000; i < n; i++) {
        if (i == 0) t0 = now_ns();
        if (msgsnd(id, &out, size, 0) < 0) fail();
        if (msgrcv(id, &in, size, 0, 0) != (ssize_t)size) fail();
    }
    double t = now_ns() - t0;
    msg_remove(id);
    return t / (double)n;
}

static double bench_msg_64(long n) { return msg_pair(n, 64); }
static double bench_msg_4096(long n) { return msg_pair(n, 4096); }

/* A child streams n 1 KiB messages; the receiver times first to last. */
static double bench_msg_stream_1k(long n) {
    if (n < 2) n = 2;
    int id = msg_create(key_n(0));
    static struct bench_msg in;
    if (spawn() == 0) {
        static struct bench_msg out;
        out.mtype = 1;
        memset(out.mtext, 'x', 1024);
        for (long i = 0; i < n; i++) CHILD_OK(msgsnd(id, &out, 1024, 0));
        _exit(0);
    }
    double t0 = 0;
    for (long i = 0; i < n; i++) {
        if (msgrcv(id, &in, 1024, 0, 0) != 1024) fail();
        if (i == 0) t0 = now_ns();
    }
    double t = now_ns() - t0;
    reap_children();
    msg_remove(id);
    return t / (double)(n - 1);
}

/* One message in flight: type 1 to the child, type 2 back. */
static double bench_msg_pingpong(long n) {
    int id = msg_create(key_n(0));
    struct { long mtype; char mtext[8]; } m;
    long warm = 1000;
    if (spawn() == 0) {
        for (long i = 0; i < n + warm; i++) {
            CHILD_OK(msgrcv(id, &m, sizeof m.mtext, 1, 0));
            m.mtype = 2;
            CHILD_OK(msgsnd(id, &m, sizeof m.mtext, 0));
        }
        _exit(0);
    }
    memset(m.mtext, 'x', sizeof m.mtext);
    double t0 = 0;
    for (long i = -warm; i < n; i++) {
        if (i == 0) t0 = now_ns();
        m.mtype = 1;
        if (msgsnd(id, &m, sizeof m.mtext, 0) < 0) fail();
        if (msgrcv(id, &m, sizeof m.mtext, 2, 0) < 0) fail();
    }
    double t = now_ns() - t0;
    reap_children();
    msg_remove(id);
    return t / (double)n;
}

static double bench_msg_lookup(long n) {
    key_t key = key_n(0);
    int id = msg_create(key);
    double t0 = 0;
    for (long i = -1000; i < n; i++) {
        if (i == 0) t0 = now_ns();
        if (msgget(key, 0600) < 0) fail();
    }
    double t = now_ns() - t0;
    msg_remove(id);
    return t / (double)n;
}

/* A queue's whole life, n times: a private queue made, one 64-byte message sent and
 * received, the queue removed (a queue's memory is made at its first use, so this is the
 * cost of a queue that is used at all). */
static double bench_msg_churn(long n) {
    static struct bench_msg out, in;
    out.mtype = 1;
    double t0 = now_ns();
    for (long i = 0; i < n; i++) {
        int id = msgget(IPC_PRIVATE, 0600);
        if (id < 0) fail();
        if (msgsnd(id, &out, 64, 0) < 0) fail();
        if (msgrcv(id, &in, 64, 0, 0) != 64) fail();
        msg_remove(id);
    }
    return (now_ns() - t0) / (double)n;
}

/* ---- scale: get/ctl latency as a family grows, the broker's memory per object ---- */
static const char *scale_family_names[] = {"msg", "sem", "shm"};

static int scale_create(int family, key_t key) {
    switch (family) {
    case 0: return msgget(key, IPC_CREAT | IPC_EXCL | 0600);
    case 1: return semget(key, 1, IPC_CREAT | IPC_EXCL | 0600);
    default: return shmget(key, 4096, IPC_CREAT | IPC_EXCL | 0600);
    }
}

/* An object's first use, as a program would make it right after creating it: a message
 * sent and received, a semaphore raised and lowered, a segment attached and detached
 * (ipcshim makes a queue's or a set's memory only at its first use). */
static int scale_use(int family, int id) {
    switch (family) {
    case 0: {
        static struct bench_msg m = {.mtype = 1};
        if (msgsnd(id, &m, 8, IPC_NOWAIT) < 0) return -1;
        return msgrcv(id, &m, 8, 0, IPC_NOWAIT) == 8 ? 0 : -1;
    }
    case 1: {
        struct sembuf ops[2] = {{0, 1, 0}, {0, -1, 0}};
        return semop(id, ops, 2);
    }
    default: {
        void *p = shmat(id, NULL, 0);
        if (p == (void *)-1) return -1;
        return shmdt(p);
    }
    }
}

static int scale_get(int family, key_t key) {
    switch (family) {
    case 0: return msgget(key, 0);
    case 1: return semget(key, 0, 0);
    default: return shmget(key, 0, 0);
    }
}

static int scale_stat(int family, int id) {
    switch (family) {
    case 0: {
        struct msqid_ds ds;
        return msgctl(id, IPC_STAT, &ds);
    }
    case 1: {
        struct semid_ds ds;
        union semun arg;
        arg.buf = &ds;
        return semctl(id, 0, IPC_STAT, arg);
    }
    default: {
        struct shmid_ds ds;
        return shmctl(id, IPC_STAT, &ds);
    }
    }
}

static void scale_remove_all(void) {
    for (int i = 0; i < n_scale; i++) {
        if (scale_family == 0) msgctl(scale_ids[i], IPC_RMID, NULL);
        else if (scale_family == 1) semctl(scale_ids[i], 0, IPC_RMID);
        else shmctl(scale_ids[i], IPC_RMID, NULL);
    }
    n_scale = 0;
}

/* Room for new objects in the family: its limit (IPC_INFO) less those in use (*_INFO). */
static long scale_room(int family) {
    long limit = -1, used = -1;
    if (family == 0) {
        struct msginfo mi;
        if (msgctl(0, IPC_INFO, (struct msqid_ds *)&mi) >= 0) limit = mi.msgmni;
        if (msgctl(0, MSG_INFO, (struct msqid_ds *)&mi) >= 0) used = mi.msgpool;
    } else if (family == 1) {
        struct seminfo si;
        union semun arg;
        arg.buf = (struct semid_ds *)&si;
        if (semctl(0, 0, IPC_INFO, arg) >= 0) limit = si.semmni;
        if (semctl(0, 0, SEM_INFO, arg) >= 0) used = si.semusz;
    } else {
        struct shminfo info;
        struct shm_info si;
        if (shmctl(0, IPC_INFO, (struct shmid_ds *)&info) >= 0) limit = (long)info.shmmni;
        if (shmctl(0, SHM_INFO, (struct shmid_ds *)&si) >= 0) used = si.used_ids;
    }
    if (limit < 0 || used < 0) return -1;
    return limit - used;
}

/* "Rss:"/"Pss:" of /proc/PID/smaps_rollup in KiB, -1 if unreadable. */
static long smaps_kb(long pid, const char *field) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/smaps_rollup", pid);
    FILE *f = fopen(path, "r");
    long v = -1;
    size_t len = strlen(field);
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, field, len) == 0) {
            v = strtol(line + len, NULL, 10);
            break;
        }
    if (f) fclose(f);
    return v;
}

/* KiB allocated to the objects' memfds the broker holds, in any of its threads' tables. */
static long memfd_kb(long pid) {
    char path[640], link[256];
    snprintf(path, sizeof path, "/proc/%ld/task", pid);
    DIR *tasks = opendir(path);
    if (!tasks) return -1;
    long long bytes = 0;
    struct dirent *t;
    while ((t = readdir(tasks))) {
        if (t->d_name[0] == '.') continue;
        char fddir[384];
        snprintf(fddir, sizeof fddir, "/proc/%ld/task/%s/fd", pid, t->d_name);
        DIR *fds = opendir(fddir);
        if (!fds) continue;
        struct dirent *d;
        /* The broker's own table, then each keeper thread's (src/broker/fdstore.rs). */
        while ((d = readdir(fds))) {
            snprintf(path, sizeof path, "%s/%s", fddir, d->d_name);
            ssize_t n = readlink(path, link, sizeof link - 1);
            if (n <= 0) continue;
            link[n] = 0;
            if (strncmp(link, "/memfd:ipcshim.", 15) != 0) continue;
            struct stat st;
            if (stat(path, &st) == 0) bytes += (long long)st.st_blocks * 512;
        }
        closedir(fds);
    }
    closedir(tasks);
    return (long)(bytes / 1024);
}

/* One line per step: "scale FAMILY OBJECTS create_ns get_ns ctl_ns rss_kb pss_kb memfd_kb"
 * (create_ns: per object created since the last step; memory -1 when BENCH_BROKER_PID is
 * not set). The first line (0 objects) is the memory baseline. */
static void bench_scale(int family) {
    static const long steps[] = {100, 1000, 10000, 30000};
    const long gets = 20000, ctls = 2000;
    long broker = getenv("BENCH_BROKER_PID") ? atol(getenv("BENCH_BROKER_PID")) : 0;
    scale_family = family;
    case_name = "scale";
    long room = scale_room(family) - 16;
    if (room < 1) fail_errno(ENOSPC);
    key_t base = (key_t)(0x63000000u ^ (((unsigned)getpid() & 0xffu) << 16));
    printf("scale %s 0 0 0 0 %ld %ld %ld\n", scale_family_names[family], broker ? smaps_kb(broker, "Rss:") : -1,
           broker ? smaps_kb(broker, "Pss:") : -1, broker ? memfd_kb(broker) : -1);
    for (size_t s = 0; s < sizeof steps / sizeof steps[0]; s++) {
        long target = steps[s] < room ? steps[s] : room;
        if (target <= n_scale) break;
        long before = n_scale;
        double t0 = now_ns();
        while (n_scale < target) {
            int id = scale_create(family, base + n_scale);
            if (id < 0 || scale_use(family, id) < 0) fail();
            scale_ids[n_scale++] = id;
        }
        double create_ns = (now_ns() - t0) / (double)(target - before);
        /* Lookups and IPC_STATs spread over every object (a stride, not in order). */
        for (long i = 0; i < 1000; i++) scale_get(family, base + (int)((i * 7919) % n_scale));
        t0 = now_ns();
        for (long i = 0; i < gets; i++) {
            int k = (int)((i * 7919) % n_scale);
            if (scale_get(family, base + k) != scale_ids[k]) fail_errno(errno ? errno : EINVAL);
        }
        double get_ns = (now_ns() - t0) / (double)gets;
        t0 = now_ns();
        for (long i = 0; i < ctls; i++)
            if (scale_stat(family, scale_ids[(i * 7919) % n_scale]) < 0) fail();
        double ctl_ns = (now_ns() - t0) / (double)ctls;
        printf("scale %s %d %.1f %.1f %.1f %ld %ld %ld\n", scale_family_names[family], n_scale, create_ns, get_ns, ctl_ns,
               broker ? smaps_kb(broker, "Rss:") : -1, broker ? smaps_kb(broker, "Pss:") : -1,
               broker ? memfd_kb(broker) : -1);
        fflush(stdout);
    }
    scale_remove_all();
}

/* N processes at once: each connects (under ipcshim its first call does) and makes one
 * round trip (IPC_STAT of a queue), reports by a pipe, and waits on another pipe, so that
 * all N are connected together. Prints "clients N ready_ms stat_ns release_ms failed":
 * the time from the first fork until all N made their call; one IPC_STAT of the parent's
 * while all N are connected; the time for all to exit once released; how many failed. */
static void bench_clients(long n) {
    case_name = "clients";
    int q = msg_create(key_n(0));
    int done[2], gate[2];
    if (pipe(done) || pipe(gate)) fail();
    pid_t *pids = calloc((size_t)n, sizeof *pids);
    if (!pids) fail_errno(ENOMEM);
    double t0 = now_ns();
    for (long i = 0; i < n; i++) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0) fail();
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            close(done[0]);
            close(gate[1]);
            struct msqid_ds ds;
            char ok = msgctl(q, IPC_STAT, &ds) == 0 ? 'y' : 'n';
            if (write(done[1], &ok, 1) != 1) _exit(1);
            char c;
            while (read(gate[0], &c, 1) > 0) {
            }
            _exit(ok == 'y' ? 0 : 1);
        }
        pids[i] = pid;
    }
    close(done[1]);
    close(gate[0]);
    long got = 0, failed = 0;
    char c;
    while (got < n && read(done[0], &c, 1) == 1) {
        got++;
        if (c != 'y') failed++;
    }
    double ready_ms = (now_ns() - t0) / 1e6;
    struct msqid_ds ds;
    double t1 = now_ns();
    for (int i = 0; i < 100; i++)
        if (msgctl(q, IPC_STAT, &ds) < 0) fail();
    double stat_ns = (now_ns() - t1) / 100;
    t1 = now_ns();
    close(gate[1]);
    for (long i = 0; i < n; i++) {
        int st;
        if (waitpid(pids[i], &st, 0) != pids[i] || !WIFEXITED(st) || WEXITSTATUS(st) != 0) failed++;
    }
    double release_ms = (now_ns() - t1) / 1e6;
    failed += n - got;
    msg_remove(q);
    printf("clients %ld %.1f %.1f %.1f %ld\n", n, ready_ms, stat_ns, release_ms, failed);
}

/* ---- driver ---- */
struct bench_case {
    const char *name;
    double (*fn)(long);
    long default_iters;
};

/* Defaults sized so each case takes roughly 0.2-1 s against the kernel. */
static const struct bench_case cases[] = {
    {"shm_get_at_dt", bench_shm_get_at_dt, 100000},
    {"shm_create_rm", bench_shm_create_rm, 60000},
    {"shm_lookup", bench_shm_lookup, 2000000},
    {"sem_pv", bench_sem_pv, 500000},
    {"sem_pv_undo", bench_sem_pv_undo, 500000},
    {"sem_contend_undo", bench_sem_contend_undo, 100000},
    {"sem_create_rm", bench_sem_create_rm, 200000},
    {"sem_churn", bench_sem_churn, 40000},
    {"sem_lookup", bench_sem_lookup, 2000000},
    {"msg_64", bench_msg_64, 500000},
    {"msg_4096", bench_msg_4096, 200000},
    {"msg_stream_1k", bench_msg_stream_1k, 200000},
    {"msg_pingpong", bench_msg_pingpong, 50000},
    {"msg_lookup", bench_msg_lookup, 2000000},
    {"msg_churn", bench_msg_churn, 20000},
};
#define N_CASES (sizeof cases / sizeof cases[0])

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ volatile("yield")
#else
#define cpu_relax() ((void)0)
#endif

/* Two processes hand one cache line back and forth in shared memory: half a round trip is
 * what one line costs to move between their CPUs. Every cross-process case pays this per
 * line its processes share, and on a VM it depends on where the host runs the two vCPUs
 * (on our 2-vCPU machines it swings between about 70 and 380 ns from one minute to the
 * next), so bench.sh prints it beside the cross-process figures. */
static double bench_linexfer(void) {
    volatile long *flag = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (flag == MAP_FAILED) fail();
    const long n = 200000;
    *flag = 0;
    if (spawn() == 0) {
        for (long i = 0; i < n; i++) {
            while (__atomic_load_n(flag, __ATOMIC_ACQUIRE) != 2 * i + 1) cpu_relax();
            __atomic_store_n(flag, 2 * i + 2, __ATOMIC_RELEASE);
        }
        _exit(0);
    }
    double t0 = now_ns();
    for (long i = 0; i < n; i++) {
        __atomic_store_n(flag, 2 * i + 1, __ATOMIC_RELEASE);
        while (__atomic_load_n(flag, __ATOMIC_ACQUIRE) != 2 * i + 2) cpu_relax();
    }
    double t = now_ns() - t0;
    reap_children();
    return t / (double)n / 2;
}

static int usage(const char *argv0) {
    fprintf(stderr, "usage: %s list | CASE [ITERATIONS] | scale msg|sem|shm | clients N | linexfer\n", argv0);
    return 64;
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) return usage(argv[0]);
    if (strcmp(argv[1], "list") == 0) {
        for (size_t i = 0; i < N_CASES; i++) printf("%s\n", cases[i].name);
        return 0;
    }
    if (strcmp(argv[1], "linexfer") == 0) {
        signal(SIGALRM, on_alarm);
        alarm(WATCHDOG_S);
        printf("linexfer %.1f\n", bench_linexfer());
        return 0;
    }
    if (strcmp(argv[1], "scale") == 0 || strcmp(argv[1], "clients") == 0) {
        /* Against the kernel, an IPC namespace of our own when we may (root): filling a
         * family must not disturb others. It changes nothing under ipcshim. */
        if (unshare(CLONE_NEWIPC) != 0) {
        }
        key_base = (key_t)(0x62000000u ^ (((unsigned)getpid() & 0x1ffffu) << 12));
        signal(SIGALRM, on_alarm);
        signal(SIGTERM, on_alarm);
        signal(SIGINT, on_alarm);
        signal(SIGHUP, on_alarm);
        alarm(WATCHDOG_S);
        if (argc != 3) return usage(argv[0]);
        if (strcmp(argv[1], "clients") == 0) {
            long n = strtol(argv[2], NULL, 10);
            if (n < 1 || n > 100000) return usage(argv[0]);
            bench_clients(n);
        } else {
            int family = -1;
            for (int f = 0; f < 3; f++)
                if (strcmp(argv[2], scale_family_names[f]) == 0) family = f;
            if (family < 0) return usage(argv[0]);
            bench_scale(family);
        }
        cleanup();
        return 0;
    }
    const struct bench_case *c = NULL;
    for (size_t i = 0; i < N_CASES; i++)
        if (strcmp(argv[1], cases[i].name) == 0) c = &cases[i];
    if (!c) {
        fprintf(stderr, "%s: unknown case '%s' (try '%s list')\n", argv[0], argv[1], argv[0]);
        return 64;
    }
    long n = c->default_iters;
    if (argc == 3) {
        char *end;
        n = strtol(argv[2], &end, 10);
        if (*end || n <= 0) return usage(argv[0]);
    }
    case_name = c->name;
    /* 0x62000000 | pid bits | 12 bits for the object number */
    key_base = (key_t)(0x62000000u ^ (((unsigned)getpid() & 0x1ffffu) << 12));
    signal(SIGALRM, on_alarm);
    signal(SIGTERM, on_alarm);
    signal(SIGINT, on_alarm);
    signal(SIGHUP, on_alarm);
    alarm(WATCHDOG_S);
    double ns = c->fn(n);
    alarm(0);
    cleanup();
    printf("%s %.1f\n", c->name, ns);
    return 0;
}
