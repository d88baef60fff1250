/* Kernel persistence and meeting by key: a segment outlives the process that created
 * it (found by key afterwards, data intact, cpid/lpid of the dead creator), and two
 * unrelated processes (the parent and a program it execs, /proc/self/exe with a role
 * argument) meet by key in both directions.
 *
 * If /proc/sys/kernel/shm_rmid_forced is 1 the kernel destroys a segment at its last
 * detach (or at its creator's exit), so then the segments left by an exited creator are
 * expected to be gone. */
#include "../common.h"

#include <sys/ipc.h>
#include <sys/shm.h>

#define SZ 8192

static int rmid_forced(void) {
    FILE *f = fopen("/proc/sys/kernel/shm_rmid_forced", "r");
    int v = 0;
    if (f) {
        if (fscanf(f, "%d", &v) != 1)
            v = 0;
        fclose(f);
    }
    return v;
}

/* Roles for the exec'd program. Exit status 0 = success. */
static int role_writer(key_t key) {
    int id = shmget(key, SZ, IPC_CREAT | IPC_EXCL | 0600);
    if (id < 0)
        return 1;
    char *p = shmat(id, NULL, 0);
    if (p == (void *)-1)
        return 2;
    snprintf(p, 64, "written by exec'd writer %d", (int)getpid());
    strcpy(p + SZ - 8, "tail");
    return shmdt(p) == 0 ? 0 : 3;
}

static int role_answer(key_t key) {
    int id = shmget(key, 0, 0);
    if (id < 0)
        return 1;
    char *p = shmat(id, NULL, 0);
    if (p == (void *)-1)
        return 2;
    if (strcmp(p, "question from parent") != 0)
        return 3;
    snprintf(p + 1000, 64, "answer from %d", (int)getpid());
    return 0; /* exits attached */
}

static pid_t spawn_self(const char *argv0, const char *role, key_t key) {
    char kbuf[32];
    snprintf(kbuf, sizeof(kbuf), "%d", (int)key);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/proc/self/exe", argv0, role, kbuf, (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* A forked child creates key and writes into it; detach explicitly or by exit. */
static void creator_child(key_t key, int detach) {
    int id = shmget(key, SZ, IPC_CREAT | IPC_EXCL | 0640);
    if (id < 0)
        _exit(1);
    char *p = shmat(id, NULL, 0);
    if (p == (void *)-1)
        _exit(2);
    strcpy(p, detach ? "left by a detached child" : "left by an exited child");
    strcpy(p + 5000, "second page");
    if (detach && shmdt(p) != 0)
        _exit(3);
    _exit(0);
}

/* IPC_STAT id once nattch == want, polling up to 5 s (a process's exit detaches). */
static int stat_when_nattch(int id, unsigned long want, struct shmid_ds *ds) {
    long long end = now_ms() + 5000;
    for (;;) {
        memset(ds, 0, sizeof(*ds));
        int r = shmctl(id, IPC_STAT, ds);
        if (r != 0 || ds->shm_nattch == want || now_ms() > end)
            return r;
        sleep_ms(10);
    }
}

static void check_left(key_t key, pid_t creator, const char *text, int forced) {
    if (forced) {
        EXPECT_ERR(shmget(key, 0, 0), ENOENT);
        return;
    }
    int id = EXPECT_OK(shmget(key, 0, 0));
    if (id < 0)
        return;
    struct shmid_ds ds;
    EXPECT_OK(stat_when_nattch(id, 0, &ds));
    CHECK(ds.shm_cpid == creator);
    CHECK(ds.shm_lpid == creator);
    CHECK(ds.shm_nattch == 0);
    CHECK(ds.shm_segsz == SZ);
    CHECK(ds.shm_perm.mode == 0640);
    CHECK(ds.shm_perm.__key == key);
    char *p = shmat(id, NULL, SHM_RDONLY);
    CHECK(p != (void *)-1);
    if (p != (void *)-1) {
        CHECK(strcmp(p, text) == 0);
        CHECK(strcmp(p + 5000, "second page") == 0);
        EXPECT_OK(shmdt(p));
    }
    EXPECT_OK(shmctl(id, IPC_RMID, NULL));
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "writer") == 0)
        return role_writer((key_t)atoi(argv[2]));
    if (argc == 3 && strcmp(argv[1], "answer") == 0)
        return role_answer((key_t)atoi(argv[2]));

    int forced = rmid_forced();
    key_t base = (key_t)(0x5400000 ^ (getpid() << 4));

    /* A child creates, writes and exits while still attached. */
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0)
        creator_child(base + 1, 0);
    CHECK(EXITED_OK(reap_child(pid, 10000)));
    check_left(base + 1, pid, "left by an exited child", forced);

    /* A child creates, writes, detaches and exits. */
    fflush(NULL);
    pid = fork();
    if (pid == 0)
        creator_child(base + 2, 1);
    CHECK(EXITED_OK(reap_child(pid, 10000)));
    check_left(base + 2, pid, "left by a detached child", forced);

    /* An exec'd program creates the segment by key; the parent finds it. */
    key_t kw = base + 3;
    EXPECT_ERR(shmget(kw, 0, 0), ENOENT);
    pid = spawn_self(argv[0], "writer", kw);
    CHECK(EXITED_OK(reap_child(pid, 10000)));
    if (forced) {
        EXPECT_ERR(shmget(kw, 0, 0), ENOENT);
    } else {
        int id = EXPECT_OK(shmget(kw, SZ, 0600));
        if (id >= 0) {
            char *p = shmat(id, NULL, 0);
            CHECK(p != (void *)-1);
            if (p != (void *)-1) {
                char want[64];
                snprintf(want, sizeof(want), "written by exec'd writer %d", (int)pid);
                CHECK(strcmp(p, want) == 0);
                CHECK(strcmp(p + SZ - 8, "tail") == 0);
                EXPECT_OK(shmdt(p));
            }
            struct shmid_ds ds;
            EXPECT_OK(shmctl(id, IPC_STAT, &ds));
            CHECK(ds.shm_cpid == pid);
            EXPECT_OK(shmctl(id, IPC_RMID, NULL));
        }
    }

    /* The parent creates by key; an exec'd program finds it, reads, answers. */
    key_t ka = base + 4;
    int id = EXPECT_OK(shmget(ka, SZ, IPC_CREAT | IPC_EXCL | 0600));
    if (id >= 0) {
        char *p = shmat(id, NULL, 0);
        CHECK(p != (void *)-1);
        if (p != (void *)-1) {
            strcpy(p, "question from parent");
            pid = spawn_self(argv[0], "answer", ka);
            CHECK(EXITED_OK(reap_child(pid, 10000)));
            char want[64];
            snprintf(want, sizeof(want), "answer from %d", (int)pid);
            CHECK(strcmp(p + 1000, want) == 0);
            struct shmid_ds ds;
            EXPECT_OK(stat_when_nattch(id, 1, &ds));
            CHECK(ds.shm_nattch == 1);
            CHECK(ds.shm_lpid == pid);
            CHECK(ds.shm_cpid == getpid());
            EXPECT_OK(shmdt(p));
        }
        EXPECT_OK(shmctl(id, IPC_RMID, NULL));
    }
    for (int i = 1; i <= 4; i++)
        EXPECT_ERR(shmget(base + i, 0, 0), ENOENT);
    return TEST_DONE();
}
