/* A child made without fork's atfork handlers (_Fork, which glibc runs none in) is a
 * process of its own: its SEM_UNDO adjustments are its own and applied at its exit, GETPID
 * and msg_lspid name it, it inherits the shm attachments (nattch counts them) and the
 * adjustments of the process that made it stay that process's, applied at that one's
 * exit. */
#include "../common.h"

#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>

struct ids {
    int sem, msg, shm;
};

static int nattch(int shm) {
    struct shmid_ds ds;
    return shmctl(shm, IPC_STAT, &ds) == 0 ? (int)ds.shm_nattch : -1;
}

/* The middle process: takes an adjustment, makes a child with _Fork, checks what the
 * child did, then exits (its own adjustment applied then). */
static void middle(void *arg) {
    struct ids *ids = arg;
    struct sembuf mine = {0, 5, SEM_UNDO};
    EXPECT_OK(semop(ids->sem, &mine, 1));
    char *at = shmat(ids->shm, NULL, 0);
    CHECK(at != (char *)-1);
    CHECK(nattch(ids->shm) == 1);
    fflush(NULL);
    pid_t child = _Fork();
    if (child == 0) {
        alarm(10);
        struct sembuf ops[2] = {{0, 2, SEM_UNDO}, {1, 3, SEM_UNDO}};
        if (semop(ids->sem, ops, 2) != 0)
            _exit(3);
        if (semctl(ids->sem, 0, GETPID) != getpid())
            _exit(4);
        struct { long mtype; char mtext[4]; } m = {7, "abc"};
        if (msgsnd(ids->msg, &m, sizeof m.mtext, 0) != 0)
            _exit(5);
        if (nattch(ids->shm) != 2)
            _exit(6);
        _exit(0);
    }
    CHECK(child > 0);
    if (child <= 0)
        return;
    watch_kid(child);
    CHECK(EXITED_OK(reap_child(child, 10000)));
    /* The child's adjustments undone at its exit, ours still standing. */
    CHECK(semctl(ids->sem, 0, GETVAL) == 5);
    CHECK(semctl(ids->sem, 1, GETVAL) == 0);
    CHECK(semctl(ids->sem, 0, GETPID) == child);
    struct msqid_ds ds;
    EXPECT_OK(msgctl(ids->msg, IPC_STAT, &ds));
    CHECK(ds.msg_qnum == 1 && ds.msg_lspid == child);
    CHECK(nattch(ids->shm) == 1);
    EXPECT_OK(shmdt(at));
}

int main(void) {
    watchdog(30, NULL);
    struct ids ids = {semget(IPC_PRIVATE, 2, 0600), msgget(IPC_PRIVATE, 0600), shmget(IPC_PRIVATE, 4096, 0600)};
    CHECK(ids.sem >= 0 && ids.msg >= 0 && ids.shm >= 0);
    if (ids.sem < 0 || ids.msg < 0 || ids.shm < 0)
        return TEST_DONE();
    pid_t pid = spawn_child(middle, &ids);
    CHECK(pid > 0);
    CHECK(EXITED_OK(reap_child(pid, 20000)));
    /* The middle process's adjustment undone at its exit. */
    CHECK(semctl(ids.sem, 0, GETVAL) == 0);
    CHECK(semctl(ids.sem, 0, GETPID) == pid);
    EXPECT_OK(semctl(ids.sem, 0, IPC_RMID));
    EXPECT_OK(msgctl(ids.msg, IPC_RMID, NULL));
    EXPECT_OK(shmctl(ids.shm, IPC_RMID, NULL));
    return TEST_DONE();
}
