/* Blocking semop/semtimedop: a blocked decrement or wait-for-zero and the V, SETVAL or
 * SETALL that wakes it; GETNCNT/GETZCNT while processes wait (counting only the
 * operation that blocks a multi-operation call); IPC_NOWAIT judged per operation;
 * atomicity while blocked; semtimedop's timeout (EAGAIN); EINTR when a handler runs,
 * even one installed with SA_RESTART, for semop and semtimedop, and after SIGSTOP +
 * SIGCONT; no EINTR for an ignored or a blocked signal; IPC_RMID waking every waiter
 * with EIDRM; wake-up order (FIFO among equal waiters, a small request is not starved
 * behind a large one, one V per waiter wakes both); waiters in threads, and a signal
 * aimed at one thread. */
#include "../common.h"
#include "../sem_common.h"

#include <poll.h>
#include <pthread.h>
#include <sys/ipc.h>
#include <sys/sem.h>

/* ---- children */
struct job {
    int id;
    int nops;
    struct sembuf ops[4];
    long timeout_ms; /* semtimedop if > 0 */
    int want_errno;  /* 0: expect success */
    int sa_flags;    /* for the EINTR children */
    int notify_fd;   /* child_eintr writes a byte here after the interrupted call */
};

static volatile sig_atomic_t handled;
static void on_usr1(int sig) {
    (void)sig;
    handled++;
}

static int run_job(struct job *j) {
    if (j->timeout_ms > 0) {
        struct timespec ts = {j->timeout_ms / 1000, (j->timeout_ms % 1000) * 1000000L};
        return semtimedop(j->id, j->ops, (size_t)j->nops, &ts);
    }
    return semop(j->id, j->ops, (size_t)j->nops);
}

/* Perform the job's operations; they must end as job.want_errno says. */
static void child_job(void *arg) {
    struct job *j = arg;
    errno = 0;
    int r = run_job(j);
    int e = errno;
    if (j->want_errno == 0) {
        CHECK(r == 0);
    } else {
        CHECK(r == -1 && e == j->want_errno);
        if (r != -1 || e != j->want_errno)
            fprintf(stderr, "  got %d errno %d, want errno %d\n", r, e, j->want_errno);
    }
}

/* Install a SIGUSR1 handler (sa_flags from the job), then block: EINTR, then the same
 * operation again, which the parent lets succeed. */
static void child_eintr(void *arg) {
    struct job *j = arg;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_usr1;
    sa.sa_flags = j->sa_flags;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    errno = 0;
    int r = run_job(j);
    CHECK(r == -1 && errno == EINTR);
    CHECK(handled == 1);
    if (write(j->notify_fd, "i", 1) != 1)
        CHECK(!"write to the parent");
    CHECK(run_job(j) == 0);
}

/* Block with SIGUSR1 ignored or blocked: the signal must not interrupt. */
static void child_ignore(void *arg) {
    struct job *j = arg;
    signal(SIGUSR1, SIG_IGN);
    CHECK(run_job(j) == 0);
}

static void child_masked(void *arg) {
    struct job *j = arg;
    sigset_t set;
    signal(SIGUSR1, on_usr1);
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &set, NULL);
    CHECK(run_job(j) == 0);
    CHECK(handled == 0);
}

static struct job mkjob(int id, unsigned short num, short op, short flg) {
    struct job j;
    memset(&j, 0, sizeof(j));
    j.id = id;
    j.nops = 1;
    j.ops[0].sem_num = num;
    j.ops[0].sem_op = op;
    j.ops[0].sem_flg = flg;
    return j;
}

/* ---- tests */
static void test_p_and_z(void) {
    int id = new_set(1);
    struct job p = mkjob(id, 0, -1, 0);
    pid_t pid = spawn_child(child_job, &p);
    CHECK(wait_for(id, 0, GETNCNT, 1));
    CHECK(semctl(id, 0, GETZCNT) == 0);
    sleep_ms(100);
    CHECK(child_alive(pid));
    CHECK(getval(id, 0) == 0);
    CHECK(op1(id, 0, 1, 0) == 0);
    CHECK(EXITED_OK(reap_child(pid, 5000)));
    CHECK(getval(id, 0) == 0);
    CHECK(semctl(id, 0, GETNCNT) == 0);
    /* The waiter performed the operation: it is the last pid. */
    CHECK(semctl(id, 0, GETPID) == pid);

    /* Wait-for-zero: woken only when the value reaches 0. */
    setval(id, 0, 2);
    struct job z = mkjob(id, 0, 0, 0);
    pid = spawn_child(child_job, &z);
    CHECK(wait_for(id, 0, GETZCNT, 1));
    CHECK(semctl(id, 0, GETNCNT) == 0);
    CHECK(op1(id, 0, -1, 0) == 0);
    sleep_ms(100);
    CHECK(child_alive(pid));
    CHECK(semctl(id, 0, GETZCNT) == 1);
    CHECK(op1(id, 0, -1, 0) == 0);
    CHECK(EXITED_OK(reap_child(pid, 5000)));
    CHECK(semctl(id, 0, GETZCNT) == 0);

    /* A larger decrement waits until the whole amount is there. */
    struct job p3 = mkjob(id, 0, -3, 0);
    pid = spawn_child(child_job, &p3);
    CHECK(wait_for(id, 0, GETNCNT, 1));
    CHECK(op1(id, 0, 2, 0) == 0);
    sleep_ms(100);
    CHECK(child_alive(pid));
    CHECK(getval(id, 0) == 2);
    CHECK(op1(id, 0, 2, 0) == 0);
    CHECK(EXITED_OK(reap_child(pid, 5000)));
    CHECK(getval(id, 0) == 1);
    rm_set(id);
}

/* GETNCNT/GETZCNT count a multi-operation waiter only on the semaphore it blocks on. */
static void test_counts_blocking_op(void) {
    int id = new_set(2);
    struct job j = mkjob(id, 0, -1, 0);
    j.nops = 2;
    j.ops[1] = (struct sembuf){1, -1, 0};
    pid_t pid = spawn_child(child_job, &j);
    CHECK(wait_for(id, 0, GETNCNT, 1));
    CHECK(semctl(id, 1, GETNCNT) == 0);
    CHECK(op1(id, 0, 1, 0) == 0);
    CHECK(wait_for(id, 1, GETNCNT, 1));
    CHECK(semctl(id, 0, GETNCNT) == 0);
    /* Still blocked, and the available unit of semaphore 0 was not taken. */
    sleep_ms(50);
    CHECK(child_alive(pid));
    CHECK(getval(id, 0) == 1);
    CHECK(op1(id, 1, 1, 0) == 0);
    CHECK(EXITED_OK(reap_child(pid, 5000)));
    CHECK(getval(id, 0) == 0 && getval(id, 1) == 0);

    /* The same for wait-for-zero. */
    setval(id, 0, 1);
    setval(id, 1, 1);
    struct job z = mkjob(id, 0, 0, 0);
    z.nops = 2;
    z.ops[1] = (struct sembuf){1, 0, 0};
    pid = spawn_child(child_job, &z);
    CHECK(wait_for(id, 0, GETZCNT, 1));
    CHECK(semctl(id, 1, GETZCNT) == 0);
    CHECK(op1(id, 0, -1, 0) == 0);
    CHECK(wait_for(id, 1, GETZCNT, 1));
    CHECK(semctl(id, 0, GETZCNT) == 0);
    CHECK(child_alive(pid));
    CHECK(op1(id, 1, -1, 0) == 0);
    CHECK(EXITED_OK(reap_child(pid, 5000)));

    /* IPC_NOWAIT on an operation that can proceed does not stop a later operation
     * from blocking; while blocked, the earlier increment is not visible. */
    struct job n = mkjob(id, 0, 1, IPC_NOWAIT);
    n.nops = 2;
    n.ops[1] = (struct sembuf){1, -1, 0};
    pid = spawn_child(child_job, &n);
    CHECK(wait_for(id, 1, GETNCNT, 1));
    sleep_ms(50);
    CHECK(child_alive(pid));
    CHECK(getval(id, 0) == 0);
    CHECK(op1(id, 1, 1, 0) == 0);
    CHECK(EXITED_OK(reap_child(pid, 5000)));
    CHECK(getval(id, 0) == 1 && getval(id, 1) == 0);
    rm_set(id);
}

static void test_timeout(void) {
    int id = new_set(2);
    struct sembuf down = {0, -1, 0};
    struct timespec ts = {0, 300000000L};
    long long t0 = now_ms();
    errno = 0;
    int r = semtimedop(id, &down, 1, &ts);
    long long el = now_ms() - t0;
    CHECK(r == -1 && errno == EAGAIN);
    CHECK(el >= 250);
    CHECK(semctl(id, 0, GETNCNT) == 0);
    CHECK(getval(id, 0) == 0);

    setval(id, 1, 1);
    struct sembuf zero = {1, 0, 0};
    struct timespec ts2 = {0, 200000000L};
    t0 = now_ms();
    errno = 0;
    r = semtimedop(id, &zero, 1, &ts2);
    el = now_ms() - t0;
    CHECK(r == -1 && errno == EAGAIN);
    CHECK(el >= 150);
    CHECK(semctl(id, 1, GETZCNT) == 0);

    /* A multi-operation call times out as a whole. */
    struct sembuf pair[2] = {{1, -1, 0}, {0, -1, 0}};
    errno = 0;
    r = semtimedop(id, pair, 2, &ts2);
    CHECK(r == -1 && errno == EAGAIN);
    CHECK(getval(id, 0) == 0 && getval(id, 1) == 1);

    /* A semtimedop waiter woken before its timeout succeeds. */
    struct job j = mkjob(id, 0, -1, 0);
    j.timeout_ms = 8000;
    pid_t pid = spawn_child(child_job, &j);
    CHECK(wait_for(id, 0, GETNCNT, 1));
    CHECK(op1(id, 0, 1, 0) == 0);
    CHECK(EXITED_OK(reap_child(pid, 5000)));
    CHECK(getval(id, 0) == 0);
    rm_set(id);
}

/* One EINTR case: the child blocks (job), the parent signals it when counted, then
 * lets the retried operation through with `release`. */
static void eintr_case(struct job *j, int cnt_cmd, int sa_flags, int semnum, short release) {
    int fds[2];
    if (pipe(fds) != 0) {
        perror("pipe");
        exit(2);
    }
    j->sa_flags = sa_flags;
    j->notify_fd = fds[1];
    pid_t pid = spawn_child(child_eintr, j);
    close(fds[1]);
    CHECK(wait_for(j->id, semnum, cnt_cmd, 1));
    kill(pid, SIGUSR1);
    /* The child reports the interrupted call; then its retry joins the queue again. */
    struct pollfd pfd = {fds[0], POLLIN, 0};
    char c;
    CHECK(poll(&pfd, 1, 5000) == 1 && read(fds[0], &c, 1) == 1);
    close(fds[0]);
    CHECK(wait_for(j->id, semnum, cnt_cmd, 1));
    CHECK(op1(j->id, (unsigned short)semnum, release, 0) == 0);
    CHECK(EXITED_OK(reap_child(pid, 5000)));
    CHECK(semctl(j->id, semnum, cnt_cmd) == 0);
}

static void test_eintr(void) {
    int id = new_set(2);
    struct job p = mkjob(id, 0, -1, 0);
    eintr_case(&p, GETNCNT, SA_RESTART, 0, 1);
    CHECK(getval(id, 0) == 0);
    eintr_case(&p, GETNCNT, 0, 0, 1);
    CHECK(getval(id, 0) == 0);
    struct job pt = mkjob(id, 0, -1, 0);
    pt.timeout_ms = 9000;
    eintr_case(&pt, GETNCNT, SA_RESTART, 0, 1);
    CHECK(getval(id, 0) == 0);
    setval(id, 1, 1);
    struct job z = mkjob(id, 1, 0, 0);
    eintr_case(&z, GETZCNT, SA_RESTART, 1, -1);
    CHECK(getval(id, 1) == 0);
    /* A multi-operation waiter: the interrupted call applies nothing and records no
     * adjustment (the retry's adjustment alone is undone when the child exits). */
    struct job m = mkjob(id, 1, 1, 0);
    m.nops = 2;
    m.ops[1] = (struct sembuf){0, -1, SEM_UNDO};
    eintr_case(&m, GETNCNT, SA_RESTART, 0, 1);
    CHECK(getval(id, 0) == 1 && getval(id, 1) == 1);
    rm_set(id);
}

/* signal(7): semop fails with EINTR after the process is stopped and continued, even
 * without a handler. */
static void test_stop_cont(void) {
    int id = new_set(1);
    struct job p = mkjob(id, 0, -1, 0);
    p.want_errno = EINTR;
    pid_t pid = spawn_child(child_job, &p);
    CHECK(wait_for(id, 0, GETNCNT, 1));
    kill(pid, SIGSTOP);
    int st = 0;
    CHECK(waitpid(pid, &st, WUNTRACED) == pid && WIFSTOPPED(st));
    kill(pid, SIGCONT);
    CHECK(EXITED_OK(reap_child(pid, 5000)));
    CHECK(semctl(id, 0, GETNCNT) == 0);
    CHECK(getval(id, 0) == 0);
    rm_set(id);
}

static void test_no_eintr(void) {
    int id = new_set(1);
    struct job p = mkjob(id, 0, -1, 0);
    pid_t pid = spawn_child(child_ignore, &p);
    CHECK(wait_for(id, 0, GETNCNT, 1));
    kill(pid, SIGUSR1);
    sleep_ms(100);
    CHECK(child_alive(pid));
    CHECK(semctl(id, 0, GETNCNT) == 1);
    CHECK(op1(id, 0, 1, 0) == 0);
    CHECK(EXITED_OK(reap_child(pid, 5000)));

    pid = spawn_child(child_masked, &p);
    CHECK(wait_for(id, 0, GETNCNT, 1));
    kill(pid, SIGUSR1);
    sleep_ms(100);
    CHECK(child_alive(pid));
    CHECK(semctl(id, 0, GETNCNT) == 1);
    CHECK(op1(id, 0, 1, 0) == 0);
    CHECK(EXITED_OK(reap_child(pid, 5000)));
    CHECK(getval(id, 0) == 0);
    rm_set(id);
}

static void test_rmid_wakes_all(void) {
    int id = new_set(2);
    setval(id, 1, 1);
    struct job jobs[5];
    jobs[0] = mkjob(id, 0, -1, 0);
    jobs[1] = mkjob(id, 0, -2, SEM_UNDO);
    jobs[2] = mkjob(id, 1, 0, 0);
    jobs[3] = mkjob(id, 1, -1, 0);
    jobs[3].nops = 2;
    jobs[3].ops[1] = (struct sembuf){0, -1, 0};
    jobs[4] = mkjob(id, 0, -1, 0);
    jobs[4].timeout_ms = 9000;
    pid_t pids[5];
    for (int i = 0; i < 5; i++) {
        jobs[i].want_errno = EIDRM;
        pids[i] = spawn_child(child_job, &jobs[i]);
    }
    CHECK(wait_for(id, 0, GETNCNT, 4));
    CHECK(wait_for(id, 1, GETZCNT, 1));
    EXPECT_OK(semctl(id, 0, IPC_RMID));
    rm_set(id);
    for (int i = 0; i < 5; i++)
        CHECK(EXITED_OK(reap_child(pids[i], 5000)));
}

/* Two waiters for one unit each: two V operations (or one V of 2) wake both. */
static void test_two_waiters(void) {
    int id = new_set(1);
    struct job p = mkjob(id, 0, -1, 0);
    pid_t a = spawn_child(child_job, &p);
    pid_t b = spawn_child(child_job, &p);
    CHECK(wait_for(id, 0, GETNCNT, 2));
    CHECK(op1(id, 0, 1, 0) == 0);
    CHECK(op1(id, 0, 1, 0) == 0);
    CHECK(EXITED_OK(reap_child(a, 5000)));
    CHECK(EXITED_OK(reap_child(b, 5000)));
    CHECK(getval(id, 0) == 0);

    a = spawn_child(child_job, &p);
    b = spawn_child(child_job, &p);
    CHECK(wait_for(id, 0, GETNCNT, 2));
    CHECK(op1(id, 0, 2, 0) == 0);
    CHECK(EXITED_OK(reap_child(a, 5000)));
    CHECK(EXITED_OK(reap_child(b, 5000)));
    CHECK(getval(id, 0) == 0);
    CHECK(semctl(id, 0, GETNCNT) == 0);
    rm_set(id);
}

/* Equal waiters are served first come, first served. */
static void test_fifo(void) {
    int id = new_set(1);
    struct job p = mkjob(id, 0, -1, 0);
    pid_t a = spawn_child(child_job, &p);
    CHECK(wait_for(id, 0, GETNCNT, 1));
    pid_t b = spawn_child(child_job, &p);
    CHECK(wait_for(id, 0, GETNCNT, 2));
    CHECK(op1(id, 0, 1, 0) == 0);
    CHECK(EXITED_OK(reap_child(a, 5000)));
    sleep_ms(50);
    CHECK(child_alive(b));
    CHECK(semctl(id, 0, GETNCNT) == 1);
    CHECK(op1(id, 0, 1, 0) == 0);
    CHECK(EXITED_OK(reap_child(b, 5000)));
    rm_set(id);
}

/* A waiter for 2 units queued first does not starve a waiter for 1 unit. */
static void test_no_starvation(void) {
    int id = new_set(1);
    struct job two = mkjob(id, 0, -2, 0);
    struct job one = mkjob(id, 0, -1, 0);
    pid_t a = spawn_child(child_job, &two);
    CHECK(wait_for(id, 0, GETNCNT, 1));
    pid_t b = spawn_child(child_job, &one);
    CHECK(wait_for(id, 0, GETNCNT, 2));
    CHECK(op1(id, 0, 1, 0) == 0);
    CHECK(EXITED_OK(reap_child(b, 5000)));
    sleep_ms(50);
    CHECK(child_alive(a));
    CHECK(getval(id, 0) == 0);
    CHECK(semctl(id, 0, GETNCNT) == 1);
    CHECK(op1(id, 0, 2, 0) == 0);
    CHECK(EXITED_OK(reap_child(a, 5000)));
    CHECK(getval(id, 0) == 0);
    rm_set(id);
}

/* SETVAL and SETALL wake waiters too. */
static void test_setval_wakes(void) {
    int id = new_set(2);
    struct job p = mkjob(id, 0, -1, 0);
    pid_t pid = spawn_child(child_job, &p);
    CHECK(wait_for(id, 0, GETNCNT, 1));
    CHECK(setval(id, 0, 3) == 0);
    CHECK(EXITED_OK(reap_child(pid, 5000)));
    CHECK(getval(id, 0) == 2);

    struct job z = mkjob(id, 0, 0, 0);
    pid = spawn_child(child_job, &z);
    CHECK(wait_for(id, 0, GETZCNT, 1));
    unsigned short zeros[2] = {0, 5};
    union semun u;
    u.array = zeros;
    CHECK(semctl(id, 0, SETALL, u) == 0);
    CHECK(EXITED_OK(reap_child(pid, 5000)));
    rm_set(id);
}

/* ---- threads */
struct tjob {
    int id;
    int result;
    int err;
};

static void *thread_p(void *arg) {
    struct tjob *t = arg;
    errno = 0;
    t->result = op1(t->id, 0, -1, 0);
    t->err = errno;
    return NULL;
}

static void test_threads(void) {
    int id = new_set(2);
    struct tjob t1 = {id, 1, 0}, t2 = {id, 1, 0};
    pthread_t a, b;
    CHECK(pthread_create(&a, NULL, thread_p, &t1) == 0);
    CHECK(pthread_create(&b, NULL, thread_p, &t2) == 0);
    CHECK(wait_for(id, 0, GETNCNT, 2));
    /* The process keeps working on the set while two of its threads wait. */
    CHECK(op1(id, 1, 5, 0) == 0);
    CHECK(op1(id, 1, -5, IPC_NOWAIT) == 0);
    CHECK(op1(id, 0, 1, 0) == 0);
    CHECK(op1(id, 0, 1, 0) == 0);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    CHECK(t1.result == 0 && t2.result == 0);
    CHECK(getval(id, 0) == 0);

    /* A signal aimed at one waiting thread interrupts that thread only. */
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    handled = 0;
    t1.result = t2.result = 1;
    CHECK(pthread_create(&a, NULL, thread_p, &t1) == 0);
    CHECK(wait_for(id, 0, GETNCNT, 1));
    CHECK(pthread_create(&b, NULL, thread_p, &t2) == 0);
    CHECK(wait_for(id, 0, GETNCNT, 2));
    pthread_kill(a, SIGUSR1);
    pthread_join(a, NULL);
    CHECK(t1.result == -1 && t1.err == EINTR);
    CHECK(handled == 1);
    sleep_ms(50);
    CHECK(semctl(id, 0, GETNCNT) == 1);
    CHECK(op1(id, 0, 1, 0) == 0);
    pthread_join(b, NULL);
    CHECK(t2.result == 0);
    signal(SIGUSR1, SIG_DFL);
    rm_set(id);
}

int main(void) {
    sem_watchdog(14);

    test_p_and_z();
    test_counts_blocking_op();
    test_timeout();
    test_eintr();
    test_stop_cont();
    test_no_eintr();
    test_rmid_wakes_all();
    test_two_waiters();
    test_fifo();
    test_no_starvation();
    test_setval_wakes();
    test_threads();

    remove_all();
    return TEST_DONE();
}
