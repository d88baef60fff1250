/* A signal handler that calls msgctl(IPC_STAT) while the call it interrupted is itself an
 * IPC_STAT: under ipcshim both are requests to the broker over the process's one
 * connection, and the interrupted one may be waiting for its answer. The handler's call
 * must not wait for ever (it used to): it succeeds, or fails with EDEADLK as a handler's
 * call does when the call it interrupted holds what it needs (README). The main loop's
 * calls all succeed. Against the kernel every call succeeds. */
#include "../common.h"
#include <sys/ipc.h>
#include <sys/msg.h>

#define CALLS 20000

static int q;
static volatile long handler_ok, handler_edeadlk, handler_other;

static void tick(int sig) {
    (void)sig;
    int saved = errno;
    struct msqid_ds ds;
    if (msgctl(q, IPC_STAT, &ds) == 0)
        handler_ok++;
    else if (errno == EDEADLK)
        handler_edeadlk++;
    else
        handler_other++;
    errno = saved;
}

int main(void) {
    alarm(60);
    q = EXPECT_OK(msgget(IPC_PRIVATE, 0600));
    CHECK(ticks_start(tick, 20));
    long failed = 0;
    for (int i = 0; i < CALLS; i++) {
        struct msqid_ds ds;
        if (msgctl(q, IPC_STAT, &ds) != 0 && errno != EINTR && failed++ < 5)
            fprintf(stderr, "  IPC_STAT #%d: %s\n", i, strerror(errno));
    }
    ticks_stop();
    alarm(60);
    printf("# the handler ran %ld times: %ld succeeded, %ld EDEADLK\n", handler_ok + handler_edeadlk + handler_other,
           handler_ok, handler_edeadlk);
    CHECK(failed == 0);
    CHECK(handler_other == 0);
    CHECK(handler_ok > 0);
    EXPECT_OK(msgctl(q, IPC_RMID, NULL));
    return TEST_DONE();
}
