/* Signal handlers that make calls which, under ipcshim, allocate memory (an object's
 * first use in the process, creating and removing objects, asking the broker), arriving
 * every 40 us while the main loop makes such calls itself: a handler's call may come while
 * the call it interrupted is inside malloc or free, which are not async-signal-safe.
 * Neither may corrupt the other (the heap used to be corrupted: "double free detected").
 * The main loop runs in forked children too, whose first call (saying hello to the
 * broker) is then interrupted as well.
 *
 * Every call of the main loops must succeed. A handler's call succeeds, or under ipcshim
 * may fail with EDEADLK when the call it interrupted holds what it needs (README); against
 * the kernel every call succeeds. */
#include "../common.h"
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/wait.h>

#define ROUNDS 1000
#define CHILDREN 6
#define TICK_US 300

static volatile long handler_ok, handler_edeadlk, handler_other;

/* One object of each family made, used once (its first use) and removed; returns 0, or
 * the errno of the first call that failed. */
static int use_each_family(void) {
    struct { long mtype; char mtext[64]; } m = {1, "x"};
    int q = msgget(IPC_PRIVATE, 0600);
    if (q < 0) return errno;
    int err = 0;
    if (msgsnd(q, &m, sizeof m.mtext, IPC_NOWAIT) != 0 || msgrcv(q, &m, sizeof m.mtext, 0, IPC_NOWAIT) != sizeof m.mtext)
        err = errno;
    if (msgctl(q, IPC_RMID, NULL) != 0 && !err) err = errno;
    if (err) return err;

    int s = semget(IPC_PRIVATE, 1, 0600);
    if (s < 0) return errno;
    struct sembuf up = {0, 1, 0};
    if (semop(s, &up, 1) != 0 || semctl(s, 0, GETVAL) != 1) err = errno ? errno : EINVAL;
    if (semctl(s, 0, IPC_RMID) != 0 && !err) err = errno;
    if (err) return err;

    int m_id = shmget(IPC_PRIVATE, 4096, 0600);
    if (m_id < 0) return errno;
    char *p = shmat(m_id, NULL, 0);
    if (p == (void *)-1) {
        err = errno;
    } else {
        p[0] = 1;
        if (shmdt(p) != 0) err = errno;
    }
    if (shmctl(m_id, IPC_RMID, NULL) != 0 && !err) err = errno;
    return err;
}

static void tick(int sig) {
    (void)sig;
    int saved = errno;
    errno = 0;
    int err = use_each_family();
    if (err == 0)
        handler_ok++;
    else if (err == EDEADLK)
        handler_edeadlk++;
    else
        handler_other++;
    errno = saved;
}

/* The main loop: ROUNDS rounds, with the handler ticking. Returns how many calls failed. */
static int main_loop(void) {
    if (!ticks_start(tick, TICK_US)) return 1;
    int failed = 0;
    for (int i = 0; i < ROUNDS; i++) {
        int err = use_each_family();
        if (err && failed++ < 3) fprintf(stderr, "  [%d] round %d: %s\n", (int)getpid(), i, strerror(err));
    }
    ticks_stop();
    return failed;
}

int main(void) {
    alarm(60);
    pid_t kids[CHILDREN];
    for (int i = 0; i < CHILDREN; i++) {
        kids[i] = fork();
        CHECK(kids[i] >= 0);
        if (kids[i] == 0) {
            /* The ticks start before the child's first call. */
            int failed = main_loop();
            _exit(failed != 0 || handler_other != 0 || handler_ok == 0 ? 1 : 0);
        }
        watch_kid(kids[i]);
    }
    int failed = main_loop();
    alarm(60);
    printf("# the parent's handler ran %ld times: %ld succeeded, %ld EDEADLK\n",
           handler_ok + handler_edeadlk + handler_other, handler_ok, handler_edeadlk);
    CHECK(failed == 0);
    CHECK(handler_other == 0);
    CHECK(handler_ok > 0);
    for (int i = 0; i < CHILDREN; i++) {
        int status;
        CHECK(waitpid(kids[i], &status, 0) == kids[i]);
        forget_kid(kids[i]);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            fprintf(stderr, "  child %d: %s %d\n", i, WIFSIGNALED(status) ? "killed by signal" : "exit status",
                    WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    return TEST_DONE();
}
