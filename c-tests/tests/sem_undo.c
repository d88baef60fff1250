/* SEM_UNDO: adjustments applied when a process exits normally or is killed (waking a
 * waiter), recorded for an operation that blocked and then completed, not recorded for
 * calls that failed, were interrupted by death, or were reversed; not inherited by fork,
 * shared by threads, kept across execve; cleared by SETVAL (one semaphore) and SETALL;
 * the value clamped to [0, SEMVMX] when applied; ERANGE when an adjustment would leave
 * [-32768, 32767]; undo on a removed set is skipped while the others still apply; GETPID
 * names the exiting process after its undo. */
#include "../common.h"
#include "../sem_common.h"

#include <poll.h>
#include <pthread.h>
#include <sys/ipc.h>
#include <sys/sem.h>

/* A two-way channel between the parent and one child. */
struct chan {
    int up[2];   /* child -> parent */
    int down[2]; /* parent -> child */
};

static void chan_open(struct chan *c) {
    if (pipe(c->up) != 0 || pipe(c->down) != 0) {
        perror("pipe");
        exit(2);
    }
}

static void chan_close(struct chan *c) {
    close(c->up[0]);
    close(c->up[1]);
    close(c->down[0]);
    close(c->down[1]);
}

/* Child side: tell the parent, wait for its go (the child's watchdog bounds it). */
static void tell(struct chan *c) {
    if (write(c->up[1], "u", 1) != 1)
        _exit(4);
}

static void await_go(struct chan *c) {
    char b;
    if (read(c->down[0], &b, 1) != 1)
        _exit(4);
}

/* Parent side: 1 if the child told within 5 s. */
static int heard(struct chan *c) {
    struct pollfd p = {c->up[0], POLLIN, 0};
    char b;
    if (poll(&p, 1, 5000) == 1 && read(c->up[0], &b, 1) == 1)
        return 1;
    fprintf(stderr, "  child did not report\n");
    return 0;
}

static void go(struct chan *c) {
    if (write(c->down[1], "d", 1) != 1)
        perror("write");
}

/* Parent side: let the child go on and collect it; 1 if it exited with status 0. */
static int let_exit(struct chan *c, pid_t pid) {
    go(c);
    return EXITED_OK(reap_child(pid, 5000));
}

/* ---- tests */
struct ctx {
    int id;
    int id2;
    struct chan ch;
};

/* A context with a new set of nsems semaphores and an open channel. */
static struct ctx ctx_open(int nsems) {
    struct ctx c = {new_set(nsems), -1, {{0}, {0}}};
    chan_open(&c.ch);
    return c;
}

static void ctx_close(struct ctx *c) {
    chan_close(&c->ch);
    rm_set(c->id);
}

static void child_exit_restores(void *arg) {
    struct ctx *c = arg;
    CHECK(op1(c->id, 0, -1, SEM_UNDO) == 0);
    CHECK(op1(c->id, 0, -1, SEM_UNDO) == 0);
    CHECK(op1(c->id, 0, 1, SEM_UNDO) == 0);
    struct sembuf two[2] = {{1, 3, SEM_UNDO}, {2, 1, 0}};
    CHECK(semop(c->id, two, 2) == 0);
    tell(&c->ch);
    await_go(&c->ch);
}

static void test_exit_restores(void) {
    struct ctx c = ctx_open(3);
    setval(c.id, 0, 5);
    pid_t pid = spawn_child(child_exit_restores, &c);
    CHECK(heard(&c.ch));
    CHECK(getval(c.id, 0) == 4 && getval(c.id, 1) == 3 && getval(c.id, 2) == 1);
    /* Another process moves the values meanwhile: the adjustments are relative. */
    CHECK(op1(c.id, 0, 10, 0) == 0);
    CHECK(let_exit(&c.ch, pid));
    CHECK(getval(c.id, 0) == 15);
    CHECK(getval(c.id, 1) == 0);
    /* Semaphore 2 was changed without SEM_UNDO: it keeps the child's increment. */
    CHECK(getval(c.id, 2) == 1);
    /* The exiting process is the last to have changed the undone semaphores. */
    CHECK(semctl(c.id, 0, GETPID) == pid);
    CHECK(semctl(c.id, 1, GETPID) == pid);
    ctx_close(&c);
}

/* An operation that reverses an earlier one leaves a zero adjustment. */
static void child_reversal(void *arg) {
    struct ctx *c = arg;
    CHECK(op1(c->id, 0, -1, SEM_UNDO) == 0);
    CHECK(op1(c->id, 0, 1, SEM_UNDO) == 0);
    tell(&c->ch);
    await_go(&c->ch);
}

static void test_reversal(void) {
    struct ctx c = ctx_open(1);
    setval(c.id, 0, 3);
    pid_t pid = spawn_child(child_reversal, &c);
    CHECK(heard(&c.ch));
    CHECK(op1(c.id, 0, -3, 0) == 0);
    CHECK(let_exit(&c.ch, pid));
    CHECK(getval(c.id, 0) == 0);
    ctx_close(&c);
}

/* Failed calls record no adjustment. */
static void child_failed_calls(void *arg) {
    struct ctx *c = arg;
    EXPECT_ERR(op1(c->id, 0, -1, SEM_UNDO | IPC_NOWAIT), EAGAIN);
    struct sembuf two[2] = {{1, -1, SEM_UNDO}, {0, -1, SEM_UNDO | IPC_NOWAIT}};
    EXPECT_ERR(semop(c->id, two, 2), EAGAIN);
    EXPECT_ERR(op1(c->id, 2, 1, SEM_UNDO), ERANGE);
    struct sembuf three[2] = {{1, -1, SEM_UNDO}, {2, 1, SEM_UNDO}};
    EXPECT_ERR(semop(c->id, three, 2), ERANGE);
    struct timespec ts = {0, 1000000L};
    EXPECT_ERR(semtimedop(c->id, two, 2, &ts), EAGAIN);
    struct sembuf far = {7, -1, SEM_UNDO};
    EXPECT_ERR(semop(c->id, &far, 1), EFBIG);
}

static void test_failed_calls(void) {
    struct ctx c = {new_set(3), -1, {{0}, {0}}};
    unsigned short init[3] = {0, 4, SEMVMX};
    setall(c.id, init);
    pid_t pid = spawn_child(child_failed_calls, &c);
    CHECK(EXITED_OK(reap_child(pid, 5000)));
    CHECK(getval(c.id, 0) == 0 && getval(c.id, 1) == 4 && getval(c.id, 2) == SEMVMX);
    rm_set(c.id);
}

/* An operation that blocked and then completed records its adjustment; one that was
 * still blocked when its process died records none. */
static void child_blocked_undo(void *arg) {
    struct ctx *c = arg;
    CHECK(op1(c->id, 0, -1, SEM_UNDO) == 0);
    tell(&c->ch);
    await_go(&c->ch);
}

static void child_block_forever(void *arg) {
    struct ctx *c = arg;
    op1(c->id, 0, -1, SEM_UNDO);
    CHECK(!"the blocked operation returned");
}

static void test_blocked_then_done(void) {
    struct ctx c = ctx_open(1);
    pid_t pid = spawn_child(child_blocked_undo, &c);
    CHECK(wait_for(c.id, 0, GETNCNT, 1));
    CHECK(op1(c.id, 0, 1, 0) == 0);
    CHECK(heard(&c.ch));
    CHECK(getval(c.id, 0) == 0);
    CHECK(let_exit(&c.ch, pid));
    CHECK(getval(c.id, 0) == 1);

    setval(c.id, 0, 0);
    pid = spawn_child(child_block_forever, &c);
    CHECK(wait_for(c.id, 0, GETNCNT, 1));
    kill(pid, SIGKILL);
    int st = reap_child(pid, 5000);
    CHECK(st != -1 && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    CHECK(wait_for(c.id, 0, GETNCNT, 0));
    CHECK(getval(c.id, 0) == 0);
    ctx_close(&c);
}

/* SIGKILL applies the undo, and a blocked waiter then gets the semaphore. */
static void child_hold(void *arg) {
    struct ctx *c = arg;
    CHECK(op1(c->id, 0, -1, SEM_UNDO) == 0);
    tell(&c->ch);
    pause();
}

static void child_p(void *arg) {
    struct ctx *c = arg;
    CHECK(op1(c->id, 0, -1, 0) == 0);
}

static void test_sigkill(void) {
    struct ctx c = ctx_open(1);
    setval(c.id, 0, 1);
    pid_t holder = spawn_child(child_hold, &c);
    CHECK(heard(&c.ch));
    CHECK(getval(c.id, 0) == 0);
    pid_t waiter = spawn_child(child_p, &c);
    CHECK(wait_for(c.id, 0, GETNCNT, 1));
    sleep_ms(50);
    CHECK(semctl(c.id, 0, GETNCNT) == 1);
    kill(holder, SIGKILL);
    int st = reap_child(holder, 5000);
    CHECK(st != -1 && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    CHECK(EXITED_OK(reap_child(waiter, 5000)));
    CHECK(getval(c.id, 0) == 0);
    CHECK(semctl(c.id, 0, GETNCNT) == 0);
    CHECK(semctl(c.id, 0, GETPID) == waiter);
    ctx_close(&c);
}

/* fork: the child starts with no adjustments; the parent's stay. */
static void child_forks(void *arg) {
    struct ctx *c = arg;
    CHECK(op1(c->id, 0, -1, SEM_UNDO) == 0);
    CHECK(getval(c->id, 0) == 0);
    fflush(NULL);
    pid_t g = fork();
    if (g == 0)
        _exit(0);
    int st = 0;
    CHECK(waitpid(g, &st, 0) == g && WIFEXITED(st));
    /* The grandchild's exit applied nothing. */
    CHECK(getval(c->id, 0) == 0);

    /* A grandchild's own adjustment is its own. */
    fflush(NULL);
    g = fork();
    if (g == 0)
        _exit(op1(c->id, 0, 1, SEM_UNDO) == 0 ? 0 : 1);
    CHECK(waitpid(g, &st, 0) == g && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK(getval(c->id, 0) == 0);
    tell(&c->ch);
    await_go(&c->ch);
}

static void test_fork(void) {
    struct ctx c = ctx_open(1);
    setval(c.id, 0, 1);
    pid_t pid = spawn_child(child_forks, &c);
    CHECK(heard(&c.ch));
    CHECK(getval(c.id, 0) == 0);
    CHECK(let_exit(&c.ch, pid));
    CHECK(getval(c.id, 0) == 1);
    ctx_close(&c);
}

/* Threads share the process's adjustments: a thread's exit applies nothing. */
static void *thread_undo(void *arg) {
    struct ctx *c = arg;
    long r = op1(c->id, 0, -1, SEM_UNDO);
    return (void *)r;
}

static void child_threads(void *arg) {
    struct ctx *c = arg;
    pthread_t t;
    void *res = (void *)1;
    CHECK(pthread_create(&t, NULL, thread_undo, c) == 0);
    pthread_join(t, &res);
    CHECK(res == NULL);
    CHECK(getval(c->id, 0) == 1);
    /* The main thread's own adjustment adds to the thread's. */
    CHECK(op1(c->id, 0, -1, SEM_UNDO) == 0);
    tell(&c->ch);
    await_go(&c->ch);
}

static void test_threads(void) {
    struct ctx c = ctx_open(1);
    setval(c.id, 0, 2);
    pid_t pid = spawn_child(child_threads, &c);
    CHECK(heard(&c.ch));
    CHECK(getval(c.id, 0) == 0);
    CHECK(let_exit(&c.ch, pid));
    CHECK(getval(c.id, 0) == 2);
    ctx_close(&c);
}

/* execve keeps the adjustments; they apply when the new image exits. */
static void child_execs(void *arg) {
    struct ctx *c = arg;
    CHECK(op1(c->id, 0, -1, SEM_UNDO) == 0);
    if (t_failed)
        return;
    char up[16], down[16];
    snprintf(up, sizeof up, "%d", c->ch.up[1]);
    snprintf(down, sizeof down, "%d", c->ch.down[0]);
    execl("/proc/self/exe", "sem_undo", "--exec-child", up, down, (char *)NULL);
    perror("execl");
    CHECK(!"exec");
}

static int exec_child_main(int up, int down) {
    char b;
    if (write(up, "x", 1) != 1)
        return 4;
    if (read(down, &b, 1) != 1)
        return 4;
    return 0;
}

static void test_exec(void) {
    struct ctx c = ctx_open(1);
    setval(c.id, 0, 1);
    pid_t pid = spawn_child(child_execs, &c);
    CHECK(heard(&c.ch));
    CHECK(getval(c.id, 0) == 0);
    CHECK(let_exit(&c.ch, pid));
    CHECK(getval(c.id, 0) == 1);
    ctx_close(&c);
}

/* SETVAL clears every process's adjustment for that semaphore; SETALL for all. */
static void child_two_undos(void *arg) {
    struct ctx *c = arg;
    struct sembuf two[2] = {{0, -1, SEM_UNDO}, {1, -1, SEM_UNDO}};
    CHECK(semop(c->id, two, 2) == 0);
    tell(&c->ch);
    await_go(&c->ch);
}

static void child_undo_after_setval(void *arg) {
    struct ctx *c = arg;
    CHECK(op1(c->id, 0, -1, SEM_UNDO) == 0);
    tell(&c->ch);
    await_go(&c->ch);
    /* A new adjustment after SETVAL counts from zero again. */
    CHECK(op1(c->id, 0, -2, SEM_UNDO) == 0);
}

static void test_setval_setall_clear(void) {
    struct ctx c = ctx_open(2);
    unsigned short five[2] = {5, 5};
    setall(c.id, five);
    pid_t pid = spawn_child(child_two_undos, &c);
    CHECK(heard(&c.ch));
    CHECK(getval(c.id, 0) == 4 && getval(c.id, 1) == 4);
    CHECK(setval(c.id, 0, 10) == 0);
    CHECK(let_exit(&c.ch, pid));
    CHECK(getval(c.id, 0) == 10);
    CHECK(getval(c.id, 1) == 5);

    setall(c.id, five);
    pid = spawn_child(child_two_undos, &c);
    CHECK(heard(&c.ch));
    unsigned short seven[2] = {7, 7};
    CHECK(setall(c.id, seven) == 0);
    CHECK(let_exit(&c.ch, pid));
    CHECK(getval(c.id, 0) == 7 && getval(c.id, 1) == 7);

    setval(c.id, 0, 10);
    pid = spawn_child(child_undo_after_setval, &c);
    CHECK(heard(&c.ch));
    CHECK(getval(c.id, 0) == 9);
    CHECK(setval(c.id, 0, 20) == 0);
    CHECK(let_exit(&c.ch, pid));
    CHECK(getval(c.id, 0) == 20);
    ctx_close(&c);
}

/* Applying an adjustment clamps the value at 0 and at SEMVMX. */
static void child_up5(void *arg) {
    struct ctx *c = arg;
    CHECK(op1(c->id, 0, 5, SEM_UNDO) == 0);
    tell(&c->ch);
    await_go(&c->ch);
}

static void child_down5(void *arg) {
    struct ctx *c = arg;
    CHECK(op1(c->id, 0, -5, SEM_UNDO) == 0);
    tell(&c->ch);
    await_go(&c->ch);
}

static void test_clamp(void) {
    struct ctx c = ctx_open(1);
    pid_t pid = spawn_child(child_up5, &c);
    CHECK(heard(&c.ch));
    CHECK(getval(c.id, 0) == 5);
    CHECK(op1(c.id, 0, -4, 0) == 0);
    CHECK(let_exit(&c.ch, pid));
    CHECK(getval(c.id, 0) == 0);
    CHECK(semctl(c.id, 0, GETPID) == pid);

    setval(c.id, 0, 10);
    pid = spawn_child(child_down5, &c);
    CHECK(heard(&c.ch));
    CHECK(getval(c.id, 0) == 5);
    CHECK(op1(c.id, 0, SEMVMX - 5, 0) == 0);
    CHECK(let_exit(&c.ch, pid));
    CHECK(getval(c.id, 0) == SEMVMX);
    ctx_close(&c);
}

/* The adjustment must stay within [-32768, 32767]: ERANGE otherwise. */
static void child_adj_negative(void *arg) {
    struct ctx *c = arg;
    CHECK(op1(c->id, 0, SEMVMX, SEM_UNDO) == 0); /* adj -32767 */
    CHECK(op1(c->id, 0, -SEMVMX, 0) == 0);
    CHECK(op1(c->id, 0, 1, SEM_UNDO) == 0); /* adj -32768 */
    EXPECT_ERR(op1(c->id, 0, 1, SEM_UNDO), ERANGE);
    CHECK(getval(c->id, 0) == 1);
    struct sembuf two[2] = {{1, 1, SEM_UNDO}, {0, 1, SEM_UNDO}};
    EXPECT_ERR(semop(c->id, two, 2), ERANGE);
    CHECK(getval(c->id, 1) == 0);
    /* Without SEM_UNDO the same increment is fine. */
    CHECK(op1(c->id, 0, 1, 0) == 0);
    CHECK(getval(c->id, 0) == 2);
}

static void child_adj_positive(void *arg) {
    struct ctx *c = arg;
    CHECK(op1(c->id, 0, -SEMVMX, SEM_UNDO) == 0); /* adj 32767 */
    CHECK(op1(c->id, 0, SEMVMX, 0) == 0);
    EXPECT_ERR(op1(c->id, 0, -1, SEM_UNDO), ERANGE);
    CHECK(getval(c->id, 0) == SEMVMX);
    CHECK(op1(c->id, 0, -1, 0) == 0);
}

static void test_adj_range(void) {
    struct ctx c = {new_set(2), -1, {{0}, {0}}};
    pid_t pid = spawn_child(child_adj_negative, &c);
    CHECK(EXITED_OK(reap_child(pid, 5000)));
    /* 2 + (-32768), clamped. */
    CHECK(getval(c.id, 0) == 0);
    CHECK(getval(c.id, 1) == 0);

    setval(c.id, 0, SEMVMX);
    pid = spawn_child(child_adj_positive, &c);
    CHECK(EXITED_OK(reap_child(pid, 5000)));
    /* 32766 + 32767, clamped. */
    CHECK(getval(c.id, 0) == SEMVMX);
    rm_set(c.id);
}

/* Adjustments on a removed set are dropped; those on other sets still apply. */
static void child_two_sets(void *arg) {
    struct ctx *c = arg;
    CHECK(op1(c->id, 0, -1, SEM_UNDO) == 0);
    CHECK(op1(c->id2, 0, -1, SEM_UNDO) == 0);
    tell(&c->ch);
    await_go(&c->ch);
}

static void test_removed_set(void) {
    struct ctx c = {new_set(1), new_set(1), {{0}, {0}}};
    chan_open(&c.ch);
    setval(c.id, 0, 1);
    setval(c.id2, 0, 1);
    pid_t pid = spawn_child(child_two_sets, &c);
    CHECK(heard(&c.ch));
    rm_set(c.id);
    CHECK(let_exit(&c.ch, pid));
    CHECK(getval(c.id2, 0) == 1);
    EXPECT_ERR(getval(c.id, 0), EINVAL);
    chan_close(&c.ch);
    rm_set(c.id2);
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "--exec-child") == 0)
        return exec_child_main(atoi(argv[2]), atoi(argv[3]));
    sem_watchdog(14);

    test_exit_restores();
    test_reversal();
    test_failed_calls();
    test_blocked_then_done();
    test_sigkill();
    test_fork();
    test_threads();
    test_exec();
    test_setval_setall_clear();
    test_clamp();
    test_adj_range();
    test_removed_set();

    remove_all();
    return TEST_DONE();
}
