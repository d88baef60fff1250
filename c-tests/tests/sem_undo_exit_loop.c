/* A child takes a semaphore with SEM_UNDO and exits (or is killed); the parent, once
 * waitpid has returned, must see the child's adjustment undone, every time: the kernel
 * applies it before the child can be reaped. 200 rounds, so that the parent's next call
 * often reaches ipcshim's broker in the same moment as the news of the death. */
#include "../common.h"
#include "../sem_common.h"

#include <signal.h>
#include <sys/ipc.h>
#include <sys/sem.h>
#include <sys/wait.h>

int main(void) {
    sem_watchdog(60);
    int id = new_set(1);
    union semun u;
    u.val = 1;
    EXPECT_OK(semctl(id, 0, SETVAL, u));
    int wrong = 0, failed = 0;
    for (int round = 0; round < 200; round++) {
        pid_t pid = fork_child();
        if (pid == 0) {
            struct sembuf p = {0, -1, SEM_UNDO};
            if (semop(id, &p, 1) != 0)
                _exit(1);
            if (round % 2)
                raise(SIGKILL);
            _exit(0);
        }
        int st;
        if (waitpid(pid, &st, 0) != pid)
            failed++;
        else if (WIFEXITED(st) && WEXITSTATUS(st) != 0)
            failed++;
        /* Alternately a value read and a call that must not wait. */
        if (round % 4 < 2) {
            if (getval(id, 0) != 1)
                wrong++;
        } else {
            struct sembuf p = {0, -1, IPC_NOWAIT}, v = {0, 1, 0};
            if (semop(id, &p, 1) != 0)
                wrong++;
            else
                semop(id, &v, 1);
        }
    }
    CHECK(failed == 0);
    CHECK(wrong == 0);
    CHECK(getval(id, 0) == 1);
    rm_set(id);
    return TEST_DONE();
}
