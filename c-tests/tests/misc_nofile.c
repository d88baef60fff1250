/* A process whose descriptor table is full (RLIMIT_NOFILE lowered, every slot filled with
 * dup) still uses all three families, since System V IPC needs no descriptors: it creates
 * objects, sends and receives, attaches, blocks and is woken, wakes others, forks children
 * (whose tables are full too) that do the same, and its SEM_UNDO is applied at exit. Once
 * it closes its dups it holds as many descriptors as before: nothing leaked.
 * The process uses IPC before filling its table (a process whose very first call comes
 * with a full table is in README's divergence table). */
#include "../common.h"
#include "../sem_common.h"

#include <dirent.h>
#include <sys/msg.h>
#include <sys/resource.h>
#include <sys/shm.h>

#define MAXDUPS 256
static int dups[MAXDUPS], ndups;
static struct rlimit saved;
static int q0, s0, h0;

struct msg {
    long type;
    char text[16];
};

static void cleanup(void) {
    msgctl(q0, IPC_RMID, NULL);
    semctl(s0, 0, IPC_RMID);
    shmctl(h0, IPC_RMID, NULL);
}

/* Open descriptors (needs one free slot). */
static int open_count(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1; /* the directory's own */
}

/* Lowers the soft limit to 64 and fills every free slot. */
static void fill(void) {
    CHECK(getrlimit(RLIMIT_NOFILE, &saved) == 0);
    struct rlimit low = {64, saved.rlim_max};
    CHECK(setrlimit(RLIMIT_NOFILE, &low) == 0);
    ndups = 0;
    int fd;
    while (ndups < MAXDUPS && (fd = dup(0)) >= 0)
        dups[ndups++] = fd;
    CHECK(ndups < MAXDUPS);
    EXPECT_ERR(dup(0), EMFILE);
}

static void unfill(void) {
    while (ndups > 0)
        close(dups[--ndups]);
    CHECK(setrlimit(RLIMIT_NOFILE, &saved) == 0);
}

static int sem_value(int id, int num) { return semctl(id, num, GETVAL); }

static void send_text(int q, long type, const char *text) {
    struct msg m = {type, {0}};
    snprintf(m.text, sizeof m.text, "%s", text);
    EXPECT_OK(msgsnd(q, &m, sizeof m.text, 0));
}

static void expect_text(int q, long type, const char *text) {
    struct msg m;
    memset(&m, 0, sizeof m);
    CHECK(msgrcv(q, &m, sizeof m.text, type, 0) == (ssize_t)sizeof m.text);
    CHECK(m.type == type && strcmp(m.text, text) == 0);
}

/* Every family, new objects and old ones, while the table is full. */
static void use_everything(void) {
    /* Queues: several new ones (each is mapped on first use), and the old one. */
    for (int i = 0; i < 4; i++) {
        int q = EXPECT_OK(msgget(IPC_PRIVATE, IPC_CREAT | 0600));
        send_text(q, 1 + i, "full");
        send_text(q0, 7, "old");
        expect_text(q, 1 + i, "full");
        expect_text(q0, 7, "old");
        struct msqid_ds ds;
        EXPECT_OK(msgctl(q, IPC_STAT, &ds));
        CHECK(ds.msg_qnum == 0 && ds.msg_lspid == getpid());
        EXPECT_OK(msgctl(q, IPC_RMID, NULL));
    }
    /* Semaphore sets: SEM_UNDO (the process is registered), reads, writes. */
    for (int i = 0; i < 4; i++) {
        int s = EXPECT_OK(semget(IPC_PRIVATE, 2, IPC_CREAT | 0600));
        struct sembuf up = {1, 2, SEM_UNDO};
        EXPECT_OK(semop(s, &up, 1));
        CHECK(sem_value(s, 1) == 2);
        union semun arg = {.val = 5};
        EXPECT_OK(semctl(s, 0, SETVAL, arg));
        struct sembuf down = {0, -5, IPC_NOWAIT};
        EXPECT_OK(semop(s, &down, 1));
        EXPECT_ERR(semop(s, &down, 1), EAGAIN);
        CHECK(sem_value(s, 0) == 0);
        EXPECT_OK(semctl(s, 0, IPC_RMID));
    }
    struct sembuf old = {0, 1, SEM_UNDO};
    EXPECT_OK(semop(s0, &old, 1));
    old.sem_op = -1;
    EXPECT_OK(semop(s0, &old, 1));
    /* Segments: new ones attached twice (read-write and read-only), and the old one. */
    for (int i = 0; i < 4; i++) {
        int h = EXPECT_OK(shmget(IPC_PRIVATE, 8192, IPC_CREAT | 0600));
        char *w = shmat(h, NULL, 0);
        char *r = shmat(h, NULL, SHM_RDONLY);
        CHECK(w != (void *)-1 && r != (void *)-1);
        if (w != (void *)-1 && r != (void *)-1) {
            w[4100] = 'x';
            CHECK(r[4100] == 'x');
        }
        struct shmid_ds ds;
        EXPECT_OK(shmctl(h, IPC_STAT, &ds));
        CHECK(ds.shm_nattch == 2);
        EXPECT_OK(shmctl(h, IPC_RMID, NULL));
        if (w != (void *)-1)
            EXPECT_OK(shmdt(w));
        if (r != (void *)-1)
            EXPECT_OK(shmdt(r));
        EXPECT_ERR(shmctl(h, IPC_STAT, &ds), EINVAL);
    }
    char *p = shmat(h0, NULL, 0);
    CHECK(p != (void *)-1);
    if (p != (void *)-1) {
        p[0]++;
        EXPECT_OK(shmdt(p));
    }
}

/* In a child of the full parent (its table is full too): use everything, then wake the
 * parent's semop, send it a message and leave a SEM_UNDO adjustment behind. */
static void child_full(void *arg) {
    (void)arg;
    EXPECT_ERR(dup(0), EMFILE);
    use_everything();
    sleep_ms(50);
    struct sembuf up = {1, 1, 0};
    EXPECT_OK(semop(s0, &up, 1));
    send_text(q0, 3, "child");
    struct sembuf undo = {2, 1, SEM_UNDO};
    EXPECT_OK(semop(s0, &undo, 1));
    CHECK(sem_value(s0, 2) == 1);
}

/* A child that blocks until the full parent wakes it. */
static void child_waits(void *arg) {
    (void)arg;
    struct sembuf down = {3, -1, 0};
    EXPECT_OK(semop(s0, &down, 1));
    struct msg m;
    CHECK(msgrcv(q0, &m, sizeof m.text, 4, 0) == (ssize_t)sizeof m.text);
}

int main(void) {
    watchdog(60, cleanup);
    /* IPC before the table fills: the objects exist, and the process has used them. */
    q0 = EXPECT_OK(msgget(IPC_PRIVATE, IPC_CREAT | 0600));
    s0 = EXPECT_OK(semget(IPC_PRIVATE, 4, IPC_CREAT | 0600));
    h0 = EXPECT_OK(shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600));
    struct msqid_ds mds;
    EXPECT_OK(msgctl(q0, IPC_STAT, &mds));
    int before = open_count();
    CHECK(before >= 3);

    fill();
    use_everything();

    /* Blocked in semop and msgrcv, woken by a child whose table is full too. */
    pid_t kid = spawn_child(child_full, NULL);
    struct sembuf down = {1, -1, 0};
    EXPECT_OK(semop(s0, &down, 1));
    expect_text(q0, 3, "child");
    CHECK(EXITED_OK(reap_child(kid, 20000)));
    /* Its SEM_UNDO was applied at its exit. */
    CHECK(sem_value(s0, 2) == 0);

    /* Waking from the full process: a child sleeps in semop, then in msgrcv. */
    kid = spawn_child(child_waits, NULL);
    long long end = now_ms() + 10000;
    while (semctl(s0, 3, GETNCNT) != 1 && now_ms() < end)
        sleep_ms(2);
    CHECK(semctl(s0, 3, GETNCNT) == 1);
    struct sembuf up = {3, 1, 0};
    EXPECT_OK(semop(s0, &up, 1));
    send_text(q0, 4, "parent");
    CHECK(EXITED_OK(reap_child(kid, 20000)));

    /* Still full, still working. */
    EXPECT_ERR(dup(0), EMFILE);
    use_everything();
    unfill();

    /* Nothing held on our behalf, nothing left in the objects. */
    CHECK(open_count() == before);
    EXPECT_OK(msgctl(q0, IPC_STAT, &mds));
    CHECK(mds.msg_qnum == 0);
    for (int i = 0; i < 4; i++)
        CHECK(sem_value(s0, i) == 0);
    struct shmid_ds sds;
    EXPECT_OK(shmctl(h0, IPC_STAT, &sds));
    CHECK(sds.shm_nattch == 0);
    cleanup();
    return TEST_DONE();
}
