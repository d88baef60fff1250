/* A signal handler that attaches and detaches a segment while the call it interrupted is
 * itself a shmat or shmdt of another one. Against the kernel every call succeeds. Under
 * ipcshim the handler's call succeeds, or fails with EDEADLK when what it needs is held
 * by the interrupted call (a shmdt in progress, or a wait for the broker: README); it must
 * never wait for ever, and the main loop's calls all succeed. */
#include "../common.h"
#include <sys/ipc.h>
#include <sys/shm.h>

#define ROUNDS 3000

static int main_seg, handler_seg;
static volatile long handler_ok, handler_edeadlk, handler_other;

static void tick(int sig) {
    (void)sig;
    int saved = errno;
    void *p = shmat(handler_seg, NULL, 0);
    if (p == (void *)-1) {
        if (errno == EDEADLK)
            handler_edeadlk++;
        else
            handler_other++;
    } else {
        ((volatile char *)p)[0]++;
        if (shmdt(p) == 0)
            handler_ok++;
        else if (errno == EDEADLK)
            handler_edeadlk++; /* (attached until the next tick's process exit) */
        else
            handler_other++;
    }
    errno = saved;
}

int main(void) {
    alarm(60);
    main_seg = EXPECT_OK(shmget(IPC_PRIVATE, 8192, 0600));
    handler_seg = EXPECT_OK(shmget(IPC_PRIVATE, 4096, 0600));
    CHECK(ticks_start(tick, 300));
    long failed = 0;
    for (int i = 0; i < ROUNDS; i++) {
        void *p = shmat(main_seg, NULL, 0);
        if (p == (void *)-1) {
            if (failed++ < 5)
                fprintf(stderr, "  shmat #%d: %s\n", i, strerror(errno));
            continue;
        }
        ((volatile char *)p)[100] = 1;
        if (shmdt(p) != 0 && failed++ < 5)
            fprintf(stderr, "  shmdt #%d: %s\n", i, strerror(errno));
    }
    ticks_stop();
    alarm(60);
    printf("# the handler ran %ld times: %ld attached and detached, %ld EDEADLK\n",
           handler_ok + handler_edeadlk + handler_other, handler_ok, handler_edeadlk);
    CHECK(failed == 0);
    CHECK(handler_other == 0);
    CHECK(handler_ok > 0);
    EXPECT_OK(shmctl(main_seg, IPC_RMID, NULL));
    EXPECT_OK(shmctl(handler_seg, IPC_RMID, NULL));
    return TEST_DONE();
}
