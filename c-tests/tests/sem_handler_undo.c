/* A signal handler's SEM_UNDO operations on the semaphore that the call it interrupted is
 * changing with SEM_UNDO.
 *
 * A helper process holds an adjustment on semaphore 0 and stays; a worker then raises and
 * lowers the same semaphore with SEM_UNDO in a loop, while a SIGALRM handler, every 20 us,
 * does the same. Every call of the loop must succeed, and so must every handler call
 * against the kernel. At the end the value is back where the helper left it, and once the
 * helper exits its adjustment is undone.
 *
 * Under ipcshim the loop's operations are lock-free and, with another process's share of the
 * adjustment in the semaphore's word, mark the word for a few instructions (src/sem/client.rs
 * `undo_not_resident`). A handler interrupting them there needs the semaphore that its own
 * thread marked: it cannot wait for the mark to go, as the interrupted call resumes only once
 * the handler returns. Its call then fails with EDEADLK (a README divergence), changing
 * nothing; it used to wait forever. The worker counts those calls: any other failure, or a
 * raise that succeeds and a lowering that does not, fails the test. */
#include "../common.h"
#include <sys/ipc.h>
#include <sys/sem.h>

#define START 10
#define RUN_MS 1500
#define TICK_US 20

static int set_id;
static volatile sig_atomic_t handler_ok, handler_deadlk, handler_bad, handler_bad_errno;

static int undo_op(short delta) {
    struct sembuf op = {0, delta, SEM_UNDO};
    return semop(set_id, &op, 1);
}

static void on_tick(int sig) {
    (void)sig;
    int saved = errno;
    if (undo_op(1) == 0) {
        /* The raise found no mark, so nothing of ours holds the semaphore: the lowering
         * must succeed too, or the value drifts. */
        if (undo_op(-1) == 0) {
            handler_ok++;
        } else {
            handler_bad++;
            handler_bad_errno = errno;
        }
    } else if (errno == EDEADLK) {
        handler_deadlk++;
    } else {
        handler_bad++;
        handler_bad_errno = errno;
    }
    errno = saved;
}

static int helper_pipe[2], ready_pipe[2], go_pipe[2], start_pipe[2];

static void say(char c) { CHECK(write(ready_pipe[1], &c, 1) == 1); }

static void await(int *p) {
    char c;
    CHECK(read(p[0], &c, 1) == 1);
}

/* Holds an adjustment of +2 until the parent closes the pipe: one operation before the
 * worker's first, one after. Under ipcshim the first (the process's first SEM_UNDO call on
 * the set) takes the lock; the second is lock-free and leaves this process's share of the
 * adjustment in the semaphore's word (the worker's first call, taking the lock, would have
 * moved it out), so that the worker's operations must mark the word. */
static void hold_adjustment(void *arg) {
    (void)arg;
    close(helper_pipe[1]);
    EXPECT_OK(undo_op(-1));
    say('h');
    await(go_pipe);
    EXPECT_OK(undo_op(-1));
    say('h');
    alarm(0);
    char c;
    while (read(helper_pipe[0], &c, 1) > 0) {
    }
}

static void worker(void *arg) {
    (void)arg;
    close(helper_pipe[1]);
    EXPECT_OK(undo_op(-1));
    say('w');
    await(start_pipe);
    long rounds = 0, failed = 0;
    int failed_errno = 0;
    alarm(0);
    CHECK(ticks_start(on_tick, TICK_US));
    long long end = now_ms() + RUN_MS;
    while (now_ms() < end) {
        for (int i = 0; i < 1000; i++) {
            if (undo_op(-1) != 0 || undo_op(1) != 0) {
                failed++;
                failed_errno = errno;
            }
        }
        rounds += 1000;
    }
    ticks_stop();
    CHECK(failed == 0);
    if (failed)
        fprintf(stderr, "  %ld loop calls failed, errno %d\n", failed, failed_errno);
    CHECK(handler_bad == 0);
    if (handler_bad)
        fprintf(stderr, "  %d handler calls failed, errno %d\n", (int)handler_bad, (int)handler_bad_errno);
    CHECK(handler_ok + handler_deadlk > 0);
    CHECK(semctl(set_id, 0, GETVAL) == START - 3);
    printf("  %ld loop pairs, %d handler pairs, %d handler calls refused with EDEADLK\n", rounds, (int)handler_ok,
           (int)handler_deadlk);
}

int main(void) {
    watchdog(30, NULL);
    set_id = EXPECT_OK(semget(IPC_PRIVATE, 1, 0600));
    EXPECT_OK(semctl(set_id, 0, SETVAL, START));
    CHECK(pipe(helper_pipe) == 0 && pipe(ready_pipe) == 0 && pipe(go_pipe) == 0 && pipe(start_pipe) == 0);

    pid_t helper = spawn_child(hold_adjustment, NULL);
    await(ready_pipe);
    pid_t w = spawn_child(worker, NULL);
    await(ready_pipe);
    CHECK(write(go_pipe[1], "g", 1) == 1);
    await(ready_pipe);
    CHECK(semctl(set_id, 0, GETVAL) == START - 3);
    CHECK(write(start_pipe[1], "s", 1) == 1);
    CHECK(EXITED_OK(reap_child(w, 20000)));
    /* The worker's adjustment is undone at its exit. */
    CHECK(semctl(set_id, 0, GETVAL) == START - 2);

    /* The helper's adjustment is still its own, and is undone when it exits. */
    close(helper_pipe[1]);
    CHECK(EXITED_OK(reap_child(helper, 5000)));
    CHECK(semctl(set_id, 0, GETVAL) == START);
    EXPECT_OK(semctl(set_id, 0, IPC_RMID));
    return TEST_DONE();
}
