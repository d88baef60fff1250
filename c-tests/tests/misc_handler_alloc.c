/* Signal handlers that make calls which, under ipcshim, allocate memory (an object's
 * first use in the process, creating and removing objects, asking the broker), arriving
 * every 500 us while the main loop makes such calls itself: a handler's call may come while
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

#define ROUNDS 1500
#define CHILDREN 4
#define TICK_US 500

static volatile long handler_ok, handler_edeadlk, handler_other;

/* What the handler could not undo (its shmdt or IPC_RMID failed with EDEADLK), left to
 * the main loop's sweep: else the family fills up (ENOSPC). Kinds: 0 msg, 1 sem, 2 shm
 * (IPC_RMID of the id), 3 (shmdt of the address). */
#define LATER 4096
static long later_value[LATER];
static int later_kind[LATER];
static volatile int n_later;

/* Returns 0, or errno. */
static int undo_now(int kind, long value) {
    int id = (int)value, r;
    switch (kind) {
    case 0: r = msgctl(id, IPC_RMID, NULL); break;
    case 1: r = semctl(id, 0, IPC_RMID); break;
    case 2: r = shmctl(id, IPC_RMID, NULL); break;
    default: r = shmdt((void *)value); break;
    }
    return r == 0 ? 0 : errno;
}

/* Undoes now, or when the call fails with EDEADLK (in the handler) leaves it to the
 * sweep. Returns 0, or the errno of another failure. */
static int undo_later(int kind, long value) {
    int err = undo_now(kind, value);
    if (err == EDEADLK && n_later < LATER) {
        later_value[n_later] = value;
        later_kind[n_later] = kind;
        n_later = n_later + 1;
        return 0;
    }
    return err;
}

/* The main loop's: undoes what the handler left (SIGALRM held meanwhile). */
static int sweep(void) {
    sigset_t alrm, old;
    sigemptyset(&alrm);
    sigaddset(&alrm, SIGALRM);
    sigprocmask(SIG_BLOCK, &alrm, &old);
    int err = 0;
    for (int i = 0; i < n_later; i++)
        if (!err) err = undo_now(later_kind[i], later_value[i]);
    n_later = 0;
    sigprocmask(SIG_SETMASK, &old, NULL);
    return err;
}

/* An object of one family made, used once (its first use in the process) and removed;
 * each returns 0, or the errno of the first call that failed. */
static int use_queue(void) {
    struct { long mtype; char mtext[64]; } m = {1, "x"};
    int q = msgget(IPC_PRIVATE, 0600);
    if (q < 0) return errno;
    int err = 0;
    if (msgsnd(q, &m, sizeof m.mtext, IPC_NOWAIT) != 0 || msgrcv(q, &m, sizeof m.mtext, 0, IPC_NOWAIT) != sizeof m.mtext)
        err = errno;
    int rm = undo_later(0, q);
    return err ? err : rm;
}

static int use_set(void) {
    int s = semget(IPC_PRIVATE, 1, 0600);
    if (s < 0) return errno;
    int err = 0;
    struct sembuf up = {0, 1, 0};
    errno = 0;
    if (semop(s, &up, 1) != 0 || semctl(s, 0, GETVAL) != 1) err = errno ? errno : EINVAL;
    int rm = undo_later(1, s);
    return err ? err : rm;
}

static int use_segment(void) {
    int id = shmget(IPC_PRIVATE, 4096, 0600);
    if (id < 0) return errno;
    int err = 0;
    char *p = shmat(id, NULL, 0);
    if (p == (void *)-1) {
        err = errno;
    } else {
        p[0] = 1;
        err = undo_later(3, (long)p);
    }
    int rm = undo_later(2, id);
    return err ? err : rm;
}

static int use_each_family(void) {
    int err = use_queue();
    if (!err) err = use_set();
    if (!err) err = use_segment();
    return err;
}

/* Rounds the main loop completed: the handler works at most once a round, so that a
 * loaded machine, where its calls may take longer than a tick, cannot starve the loop. */
static volatile long rounds_done;

static void tick(int sig) {
    (void)sig;
    static long last_round = -1;
    if (rounds_done == last_round) return;
    last_round = rounds_done;
    int saved = errno;
    /* One family a tick, in turn: the handler's work stays well within a tick. */
    static unsigned turn;
    int err = turn % 3 == 0 ? use_queue() : turn % 3 == 1 ? use_set() : use_segment();
    turn++;
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
        if (!err) err = sweep();
        rounds_done = i + 1;
        if (err && failed++ < 3) fprintf(stderr, "  [%d] round %d: %s\n", (int)getpid(), i, strerror(err));
    }
    ticks_stop();
    if (sweep() != 0) failed++;
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
