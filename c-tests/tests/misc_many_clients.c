/* 100 processes at once, each making 100 calls that go to ipcshim's broker (IPC_STAT and
 * IPC_SET of one shared set, creating and removing sets of their own): every call
 * succeeds, and no set is left over. (Under ipcshim more connections are active than the
 * broker polls at once: some are dropped from the poll and ring it again, many times.) */
#include "../common.h"
#include "../sem_common.h"

#include <sys/ipc.h>
#include <sys/sem.h>
#include <sys/wait.h>

enum { CHILDREN = 100, CALLS = 100 };

static int child(int shared) {
    int bad = 0;
    for (int i = 0; i < CALLS; i++) {
        struct semid_ds ds;
        union semun u;
        u.buf = &ds;
        if (semctl(shared, 0, IPC_STAT, u) != 0 || ds.sem_nsems != 1)
            bad++;
        if (i % 10 == 0) {
            ds.sem_perm.mode = 0600;
            if (semctl(shared, 0, IPC_SET, u) != 0)
                bad++;
        }
        if (i % 4 == 0) {
            int id = semget(IPC_PRIVATE, 1, 0600);
            if (id < 0 || semctl(id, 0, IPC_RMID) != 0)
                bad++;
        }
    }
    return bad ? 1 : 0;
}

int main(void) {
    sem_watchdog(120);
    int shared = new_set(1);
    int before = sets_in_use();
    pid_t pids[CHILDREN];
    for (int i = 0; i < CHILDREN; i++) {
        pids[i] = fork_child();
        if (pids[i] == 0)
            _exit(child(shared));
    }
    int failed = 0;
    for (int i = 0; i < CHILDREN; i++) {
        int st;
        if (waitpid(pids[i], &st, 0) != pids[i] || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            failed++;
    }
    CHECK(failed == 0);
    CHECK(sets_in_use() == before);
    rm_set(shared);
    return TEST_DONE();
}
