/* 300 new processes, each attaching a segment, detaching it and removing it: after the
 * removal the segment is gone at once (no attachment is left to keep it), every time.
 * (Under ipcshim each process's first attach notice goes to the broker over its socket
 * and the detach through shared memory: the broker must apply them in that order.) */
#include "../common.h"

#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/wait.h>

static int one_process(void) {
    int id = shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600);
    if (id < 0)
        return 1;
    void *p = shmat(id, NULL, 0);
    if (p == (void *)-1 || shmdt(p) != 0)
        return 2;
    if (shmctl(id, IPC_RMID, NULL) != 0)
        return 3;
    struct shmid_ds ds;
    if (shmctl(id, IPC_STAT, &ds) != -1 || errno != EINVAL)
        return 4;
    return 0;
}

int main(void) {
    alarm(60);
    int bad[5] = {0};
    for (int i = 0; i < 300; i++) {
        pid_t pid = fork_child();
        if (pid == 0)
            _exit(one_process());
        int st;
        if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
            bad[0]++;
        else if (WEXITSTATUS(st) > 0 && WEXITSTATUS(st) < 5)
            bad[WEXITSTATUS(st)]++;
    }
    CHECK(bad[0] == 0);
    CHECK(bad[1] == 0);
    CHECK(bad[2] == 0);
    CHECK(bad[3] == 0);
    CHECK(bad[4] == 0);
    return TEST_DONE();
}
