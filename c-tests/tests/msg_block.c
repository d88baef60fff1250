/* Blocking msgsnd / msgrcv (every wait has a watchdog):
 *  - a receiver blocked on a type wakes only for a matching message (>0, 0, <0, MSG_EXCEPT);
 *  - several blocked receivers each get the message meant for them, none twice;
 *  - a blocked receiver whose buffer is too small wakes with E2BIG (message stays queued),
 *    or with MSG_NOERROR takes it truncated;
 *  - a sender blocked on a full queue (bytes or count) wakes once a receive frees enough;
 *  - a caught signal makes blocked msgsnd/msgrcv fail with EINTR even with SA_RESTART;
 *    an ignored signal and SIGSTOP/SIGCONT do not;
 *  - IPC_RMID wakes blocked senders and receivers with EIDRM. */
#include "../common.h"
#include <fcntl.h>
#include <poll.h>
#include <sys/ipc.h>
#include <sys/msg.h>

struct mbuf {
    long mtype;
    char mtext[256];
};

static int q;
static int ready_pipe[2];

/* ---- helpers ---------------------------------------------------------------------- */

static int msg_send(int id, long type, const char *text, size_t len, int flg) {
    struct mbuf b;
    memset(&b, 0, sizeof b);
    b.mtype = type;
    if (text)
        memcpy(b.mtext, text, len);
    return msgsnd(id, &b, len, flg);
}

static unsigned long qnum(int id) {
    struct msqid_ds ds;
    if (msgctl(id, IPC_STAT, &ds) != 0)
        return (unsigned long)-1;
    return ds.msg_qnum;
}

static void set_qbytes(int id, unsigned long v) {
    struct msqid_ds ds;
    CHECK(msgctl(id, IPC_STAT, &ds) == 0);
    ds.msg_qbytes = v;
    EXPECT_OK(msgctl(id, IPC_SET, &ds));
}

/* Fork a child that signals readiness through the pipe, then runs fn (which blocks).
 * The child's checks are reported through its exit status; alarm(5) is its watchdog. */
static pid_t spawn(void (*fn)(long), long arg) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        t_passed = t_failed = 0;
        alarm(5);
        char c = 'r';
        if (write(ready_pipe[1], &c, 1) != 1)
            _exit(98);
        fn(arg);
        fflush(NULL);
        _exit(t_failed ? 1 : 0);
    }
    CHECK(pid > 0);
    return pid;
}

/* Wait until the child said it is about to block and sleeps in its call. */
static void wait_blocked(pid_t pid) {
    struct pollfd pfd = {ready_pipe[0], POLLIN, 0};
    CHECK(poll(&pfd, 1, 5000) == 1);
    char c;
    CHECK(read(ready_pipe[0], &c, 1) == 1);
    CHECK(wait_asleep(pid, pid));
}

/* 1 if the child is still running (has not exited) */
static int still_running(pid_t pid) {
    int st;
    return waitpid(pid, &st, WNOHANG) == 0;
}

/* Reap the child within timeout_ms; CHECK that it exited 0.  Kills it on timeout. */
static void reap_ok(pid_t pid, long timeout_ms) {
    long long end = now_ms() + timeout_ms;
    int st = 0;
    pid_t r;
    while ((r = waitpid(pid, &st, WNOHANG)) == 0 && now_ms() < end)
        sleep_ms(2);
    if (r == 0) {
        fprintf(stderr, "  child %d did not finish in %ld ms\n", (int)pid, timeout_ms);
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        CHECK(!"child finished in time");
        return;
    }
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0))
        fprintf(stderr, "  child %d status 0x%x\n", (int)pid, st);
    CHECK(r == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* ---- children --------------------------------------------------------------------- */

static long sel_type;
static int sel_flags;
static size_t sel_size = sizeof(((struct mbuf *)0)->mtext);

/* receive with (sel_type, sel_flags); expect a message of type `want` whose text is
 * "msg<want>" (possibly truncated to sel_size) */
static void child_recv_expect(long want) {
    struct mbuf b;
    memset(&b, 0, sizeof b);
    long n = msgrcv(q, &b, sel_size, sel_type, sel_flags);
    char text[32];
    int len = snprintf(text, sizeof text, "msg%ld", want);
    if ((size_t)len > sel_size)
        len = (int)sel_size;
    CHECK(n == len);
    CHECK(b.mtype == want);
    CHECK(memcmp(b.mtext, text, (size_t)len) == 0);
}

static void child_recv_err(long err) {
    struct mbuf b;
    EXPECT_ERR(msgrcv(q, &b, sel_size, sel_type, sel_flags), (int)err);
}

static void child_send_ok(long len) {
    char text[256];
    memset(text, 'S', sizeof text);
    EXPECT_OK(msg_send(q, 42, text, (size_t)len, 0));
}

static void child_send_err(long err) {
    char text[256];
    memset(text, 'E', sizeof text);
    EXPECT_ERR(msg_send(q, 43, text, 200, 0), (int)err);
}

static void send_named(long type) {
    char text[32];
    int len = snprintf(text, sizeof text, "msg%ld", type);
    EXPECT_OK(msg_send(q, type, text, (size_t)len, IPC_NOWAIT));
}

static struct mbuf scratch;
static int drain_one(long type) {
    memset(&scratch, 0, sizeof scratch);
    return (int)msgrcv(q, &scratch, sizeof scratch.mtext, type, IPC_NOWAIT);
}

/* ---- tests ------------------------------------------------------------------------ */

/* a receiver blocked with selector (type, flags) ignores `wrong` and takes `right` */
static void receiver_selects(long type, int flags, long wrong, long right) {
    sel_type = type;
    sel_flags = flags;
    sel_size = sizeof scratch.mtext;
    pid_t pid = spawn(child_recv_expect, right);
    wait_blocked(pid);
    if (wrong) {
        send_named(wrong);
        sleep_ms(150);
        CHECK(still_running(pid));
        CHECK(qnum(q) == 1);
    }
    send_named(right);
    reap_ok(pid, 5000);
    struct msqid_ds ds;
    CHECK(msgctl(q, IPC_STAT, &ds) == 0 && ds.msg_lrpid == pid);
    if (wrong) {
        CHECK(qnum(q) == 1);
        CHECK(drain_one(0) >= 0 && scratch.mtype == wrong);
    }
    CHECK(qnum(q) == 0);
}

static void test_receivers(void) {
    receiver_selects(5, 0, 3, 5);
    receiver_selects(0, 0, 0, 9);
    receiver_selects(-4, 0, 6, 2);
    receiver_selects(3, MSG_EXCEPT, 3, 4);

    /* three receivers on different types each get their own message */
    pid_t p[3];
    sel_flags = 0;
    for (int i = 0; i < 3; i++) {
        sel_type = 11 + i;
        p[i] = spawn(child_recv_expect, 11 + i);
        wait_blocked(p[i]);
    }
    send_named(13);
    send_named(11);
    send_named(12);
    for (int i = 0; i < 3; i++)
        reap_ok(p[i], 5000);
    CHECK(qnum(q) == 0);

    /* two receivers on the same type, two messages: one each (each child checks the text
     * of the message it got; both texts are "msg20") */
    sel_type = 20;
    p[0] = spawn(child_recv_expect, 20);
    wait_blocked(p[0]);
    p[1] = spawn(child_recv_expect, 20);
    wait_blocked(p[1]);
    send_named(20);
    send_named(20);
    reap_ok(p[0], 5000);
    reap_ok(p[1], 5000);
    CHECK(qnum(q) == 0);

    /* a blocked receiver whose buffer is too small: E2BIG, and the message stays queued */
    sel_type = 0;
    sel_flags = 0;
    sel_size = 3;
    pid_t pid = spawn(child_recv_err, E2BIG);
    wait_blocked(pid);
    send_named(30);
    reap_ok(pid, 5000);
    CHECK(qnum(q) == 1);
    CHECK(drain_one(30) == 5 && memcmp(scratch.mtext, "msg30", 5) == 0);
    /* ... with MSG_NOERROR it takes the message, truncated */
    sel_flags = MSG_NOERROR;
    pid = spawn(child_recv_expect, 31);
    wait_blocked(pid);
    send_named(31);
    reap_ok(pid, 5000);
    CHECK(qnum(q) == 0);
    sel_size = sizeof scratch.mtext;
    sel_flags = 0;
}

static void test_senders(void) {
    char big[256];
    memset(big, 'B', sizeof big);
    /* full by bytes */
    set_qbytes(q, 100);
    EXPECT_OK(msg_send(q, 1, big, 50, IPC_NOWAIT));
    EXPECT_OK(msg_send(q, 2, big, 50, IPC_NOWAIT));
    pid_t pid = spawn(child_send_ok, 60);
    wait_blocked(pid);
    CHECK(still_running(pid));
    CHECK(drain_one(1) == 50); /* frees 50 bytes: not enough for 60 */
    sleep_ms(150);
    CHECK(still_running(pid));
    CHECK(qnum(q) == 1);
    CHECK(drain_one(2) == 50); /* now it fits */
    reap_ok(pid, 5000);
    struct msqid_ds ds;
    CHECK(msgctl(q, IPC_STAT, &ds) == 0 && ds.msg_qnum == 1 && ds.msg_cbytes == 60 && ds.msg_lspid == pid);
    CHECK(drain_one(0) == 60 && scratch.mtype == 42);

    /* full by count (msg_qbytes also caps the number of messages) */
    set_qbytes(q, 2);
    EXPECT_OK(msg_send(q, 1, NULL, 0, IPC_NOWAIT));
    EXPECT_OK(msg_send(q, 2, NULL, 0, IPC_NOWAIT));
    pid = spawn(child_send_ok, 0);
    wait_blocked(pid);
    sleep_ms(50);
    CHECK(still_running(pid));
    CHECK(qnum(q) == 2);
    CHECK(drain_one(0) == 0 && scratch.mtype == 1);
    reap_ok(pid, 5000);
    CHECK(qnum(q) == 2);
    CHECK(drain_one(0) == 0 && scratch.mtype == 2);
    CHECK(drain_one(0) == 0 && scratch.mtype == 42);

    /* raising msg_qbytes with IPC_SET also lets a blocked sender in */
    set_qbytes(q, 10);
    pid = spawn(child_send_ok, 20);
    wait_blocked(pid);
    CHECK(still_running(pid));
    set_qbytes(q, 100);
    reap_ok(pid, 5000);
    CHECK(drain_one(0) == 20 && scratch.mtype == 42);
    CHECK(qnum(q) == 0);
    set_qbytes(q, 16384);
}

static volatile sig_atomic_t got_sig;
static void on_sig(int s) {
    (void)s;
    got_sig = 1;
}

static void install(int sa_flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sig;
    sa.sa_flags = sa_flags;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
}

static void child_intr_recv(long sa_flags) {
    install((int)sa_flags);
    struct mbuf b;
    EXPECT_ERR(msgrcv(q, &b, sizeof b.mtext, 77, 0), EINTR);
    CHECK(got_sig == 1);
}

static void child_intr_send(long sa_flags) {
    install((int)sa_flags);
    char text[200];
    memset(text, 'I', sizeof text);
    EXPECT_ERR(msg_send(q, 78, text, sizeof text, 0), EINTR);
    CHECK(got_sig == 1);
}

/* signal the child every 50 ms until it exits (a signal that lands before the child
 * blocks is simply caught, the next one interrupts the wait) */
static void interrupt_until_exit(pid_t pid) {
    int st = 0;
    pid_t r = 0;
    long long end = now_ms() + 5000;
    while (now_ms() < end && (r = waitpid(pid, &st, WNOHANG)) == 0) {
        kill(pid, SIGUSR1);
        sleep_ms(50);
    }
    if (r == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
    }
    if (!(r == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0))
        fprintf(stderr, "  interrupted child status 0x%x\n", st);
    CHECK(r == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void test_signals(void) {
    for (int restart = 0; restart < 2; restart++) {
        int fl = restart ? SA_RESTART : 0;
        pid_t pid = spawn(child_intr_recv, fl);
        wait_blocked(pid);
        interrupt_until_exit(pid);
        /* the interrupted receiver is gone: a message for it stays queued */
        send_named(77);
        sleep_ms(20);
        CHECK(qnum(q) == 1);
        CHECK(drain_one(77) == 5);

        set_qbytes(q, 100);
        EXPECT_OK(msg_send(q, 1, NULL, 0, IPC_NOWAIT));
        EXPECT_OK(msg_send(q, 1, "x", 1, IPC_NOWAIT));
        char fill[98];
        memset(fill, 'f', sizeof fill);
        EXPECT_OK(msg_send(q, 1, fill, sizeof fill, IPC_NOWAIT));
        pid = spawn(child_intr_send, fl);
        wait_blocked(pid);
        interrupt_until_exit(pid);
        /* nothing of the interrupted send was queued */
        struct msqid_ds ds;
        CHECK(msgctl(q, IPC_STAT, &ds) == 0 && ds.msg_qnum == 3 && ds.msg_cbytes == 99);
        while (drain_one(0) >= 0) {
        }
        set_qbytes(q, 16384);
    }

    /* an ignored signal does not interrupt, nor does SIGSTOP + SIGCONT */
    sel_type = 88;
    sel_flags = 0;
    sel_size = sizeof scratch.mtext;
    pid_t pid = spawn(child_recv_expect, 88);
    wait_blocked(pid);
    kill(pid, SIGWINCH); /* default disposition: ignore */
    kill(pid, SIGSTOP);
    sleep_ms(50);
    kill(pid, SIGCONT);
    sleep_ms(150);
    CHECK(still_running(pid));
    send_named(88);
    reap_ok(pid, 5000);
    CHECK(qnum(q) == 0);
}

static void test_rmid(void) {
    /* a receiver waiting for a type that is not there, a sender waiting for space, and a
     * receiver on an empty type: IPC_RMID wakes all of them with EIDRM */
    int saved = q;
    q = EXPECT_OK(msgget(IPC_PRIVATE, 0600));
    set_qbytes(q, 100);
    char fill[100];
    memset(fill, 'r', sizeof fill);
    EXPECT_OK(msg_send(q, 1, fill, 100, IPC_NOWAIT));
    sel_type = 99;
    sel_flags = 0;
    pid_t r1 = spawn(child_recv_err, EIDRM);
    wait_blocked(r1);
    sel_type = 2;
    pid_t r2 = spawn(child_recv_err, EIDRM);
    wait_blocked(r2);
    pid_t s1 = spawn(child_send_err, EIDRM);
    wait_blocked(s1);
    pid_t s2 = spawn(child_send_err, EIDRM);
    wait_blocked(s2);
    CHECK(still_running(r1) && still_running(r2) && still_running(s1) && still_running(s2));
    EXPECT_OK(msgctl(q, IPC_RMID, NULL));
    reap_ok(r1, 5000);
    reap_ok(r2, 5000);
    reap_ok(s1, 5000);
    reap_ok(s2, 5000);
    q = saved;
}

int main(void) {
    alarm(30);
    CHECK(pipe(ready_pipe) == 0);
    q = EXPECT_OK(msgget(IPC_PRIVATE, 0600));
    test_receivers();
    test_senders();
    test_signals();
    test_rmid();
    EXPECT_OK(msgctl(q, IPC_RMID, NULL));
    return TEST_DONE();
}
