/* A call that succeeds leaves errno as the caller had it, as the kernel's system calls
 * (through glibc) do: semget, semop (first call on a set and later ones, with SEM_UNDO,
 * several operations, after blocking), semtimedop, every semctl command; msgget, msgsnd,
 * msgrcv, msgctl; shmget, shmat, shmdt, shmctl; ftok; fork in parent and child. */
#include "../common.h"
#include "../sem_common.h"

#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/wait.h>

#define MARK 4242

/* Run expr with errno set to MARK; it must succeed (ok) and leave errno at MARK. */
#define KEEPS(expr, ok)                                                                   \
    do {                                                                                  \
        errno = MARK;                                                                     \
        long r_ = (long)(expr);                                                           \
        int e_ = errno;                                                                   \
        CHECK(ok);                                                                        \
        CHECK(e_ == MARK);                                                                \
        if (e_ != MARK)                                                                   \
            fprintf(stderr, "  %s: returned %ld, errno %d\n", #expr, r_, e_);             \
    } while (0)

static void child_post_later(void *arg) {
    int id = *(int *)arg;
    sleep_ms(100);
    CHECK(op1(id, 0, 1, 0) == 0);
}

static void test_sem(void) {
    key_t key = (key_t)(0x5E30000 ^ (getpid() << 4));
    int id = -1;
    KEEPS(id = semget(key, 3, IPC_CREAT | IPC_EXCL | 0600), id >= 0);
    track(id);
    KEEPS(semget(key, 3, 0), r_ == id);
    KEEPS(semget(key, 0, IPC_CREAT), r_ == id);
    int priv = -1;
    KEEPS(priv = semget(IPC_PRIVATE, 1, 0600), priv >= 0);
    track(priv);

    struct sembuf up = {0, 1, 0}, down = {0, -1, 0}, up_undo = {0, 1, SEM_UNDO};
    struct sembuf zero_nw = {1, 0, IPC_NOWAIT};
    struct sembuf two[2] = {{0, 1, 0}, {2, 1, SEM_UNDO}};
    struct timespec ts = {1, 0};
    KEEPS(semop(id, &up, 1), r_ == 0);
    KEEPS(semop(id, &down, 1), r_ == 0);
    KEEPS(semop(id, &up_undo, 1), r_ == 0);
    KEEPS(semop(id, two, 2), r_ == 0);
    KEEPS(semop(id, &zero_nw, 1), r_ == 0);
    KEEPS(semop(priv, &up, 1), r_ == 0);
    KEEPS(semtimedop(id, &up, 1, &ts), r_ == 0);
    KEEPS(semtimedop(id, two, 2, NULL), r_ == 0);

    union semun u;
    struct semid_ds ds;
    struct seminfo si;
    unsigned short vals[3] = {1, 2, 3};
    KEEPS(semctl(id, 0, GETVAL), r_ == 4);
    KEEPS(semctl(id, 0, GETPID), r_ == getpid());
    KEEPS(semctl(id, 0, GETNCNT), r_ == 0);
    KEEPS(semctl(id, 0, GETZCNT), r_ == 0);
    u.val = 0;
    KEEPS(semctl(id, 1, SETVAL, u), r_ == 0);
    u.array = vals;
    KEEPS(semctl(id, 0, GETALL, u), r_ == 0);
    KEEPS(semctl(id, 0, SETALL, u), r_ == 0);
    u.buf = &ds;
    KEEPS(semctl(id, 0, IPC_STAT, u), r_ == 0);
    KEEPS(semctl(id, 0, IPC_SET, u), r_ == 0);
    KEEPS(semctl(id % 32768, 0, SEM_STAT, u), r_ == id);
    KEEPS(semctl(id % 32768, 0, SEM_STAT_ANY, u), r_ == id);
    u.__buf = &si;
    KEEPS(semctl(0, 0, IPC_INFO, u), r_ >= 0);
    KEEPS(semctl(0, 0, SEM_INFO, u), r_ >= 0);

    /* After blocking. */
    setval(id, 0, 0);
    pid_t pid = spawn_child(child_post_later, &id);
    KEEPS(semop(id, &down, 1), r_ == 0);
    CHECK(EXITED_OK(reap_child(pid, 10000)));
    pid = spawn_child(child_post_later, &id);
    struct timespec long_ts = {60, 0};
    KEEPS(semtimedop(id, &down, 1, &long_ts), r_ == 0);
    CHECK(EXITED_OK(reap_child(pid, 10000)));

    KEEPS(semctl(priv, 0, IPC_RMID), r_ == 0);
    KEEPS(semctl(id, 0, IPC_RMID), r_ == 0);
    remove_all();
}

static void test_msg(void) {
    struct {
        long type;
        char text[8];
    } m = {1, "hi"};
    struct msqid_ds ds;
    int q = -1;
    KEEPS(q = msgget(IPC_PRIVATE, 0600), q >= 0);
    KEEPS(msgsnd(q, &m, 3, 0), r_ == 0);
    KEEPS(msgsnd(q, &m, 3, IPC_NOWAIT), r_ == 0);
    KEEPS(msgrcv(q, &m, sizeof(m.text), 0, 0), r_ == 3);
    KEEPS(msgrcv(q, &m, sizeof(m.text), 1, IPC_NOWAIT), r_ == 3);
    KEEPS(msgctl(q, IPC_STAT, &ds), r_ == 0);
    KEEPS(msgctl(q, IPC_SET, &ds), r_ == 0);
    KEEPS(msgctl(q, IPC_RMID, NULL), r_ == 0);
}

static void test_shm(void) {
    struct shmid_ds ds;
    int s = -1;
    void *p = NULL;
    KEEPS(s = shmget(IPC_PRIVATE, 4096, 0600), s >= 0);
    KEEPS(p = shmat(s, NULL, 0), p != (void *)-1);
    KEEPS(shmctl(s, IPC_STAT, &ds), r_ == 0);
    KEEPS(shmctl(s, IPC_SET, &ds), r_ == 0);
    KEEPS(shmctl(s, IPC_RMID, NULL), r_ == 0);
    if (p != (void *)-1)
        KEEPS(shmdt(p), r_ == 0);
}

static void test_ftok_fork(void) {
    KEEPS(ftok("/", 1), r_ != -1);
    /* fork with a SEM_UNDO adjustment outstanding (the child's handler does work). */
    int id = new_set(1);
    CHECK(op1(id, 0, 1, SEM_UNDO) == 0);
    errno = MARK;
    pid_t pid = fork();
    if (pid == 0) {
        int ok = errno == MARK;
        errno = MARK;
        ok = ok && op1(id, 0, 1, SEM_UNDO) == 0 && errno == MARK;
        _exit(ok ? 0 : 1);
    }
    CHECK(pid > 0 && errno == MARK);
    int st = 0;
    CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    rm_set(id);
}

int main(void) {
    sem_watchdog(20);
    test_sem();
    test_msg();
    test_shm();
    test_ftok_fork();
    remove_all();
    return TEST_DONE();
}
