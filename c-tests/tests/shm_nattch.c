/* shm_nattch, shm_lpid and shm_cpid across fork, exec, exit and SIGKILL: a forked child
 * inherits every attachment (nattch counts them as soon as fork returns), a child's
 * shmdt/exit/SIGKILL/exec drops its attachments (and records its pid in shm_lpid),
 * and attachments a child makes itself count too. */
#include "../common.h"

#include <fcntl.h>
#include <sys/ipc.h>
#include <sys/shm.h>

static int seg;

static struct shmid_ds st_(void) {
    struct shmid_ds ds;
    memset(&ds, 0, sizeof(ds));
    if (shmctl(seg, IPC_STAT, &ds) != 0)
        ds.shm_nattch = 9999;
    return ds;
}

/* Polls (up to 5 s) until nattch == want; returns the last value seen. */
static long wait_nattch(long want) {
    long long end = now_ms() + 5000;
    long n;
    while ((n = (long)st_().shm_nattch) != want && now_ms() < end)
        sleep_ms(10);
    return n;
}

static pid_t fork_waiting(int *go_w) {
    int go[2];
    if (pipe(go) != 0)
        return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(20);
        close(go[1]);
        char ch;
        if (read(go[0], &ch, 1) != 1)
            _exit(10);
        _exit(0);
    }
    close(go[0]);
    *go_w = go[1];
    return pid;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "sleep") == 0) {
        /* Exec'd helper: lives until killed (at most 20 s). */
        sleep_ms(20000);
        return 0;
    }

    pid_t me = getpid();
    seg = EXPECT_OK(shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600));
    if (seg < 0)
        return TEST_DONE();
    char *a = shmat(seg, NULL, 0);
    CHECK(a != (void *)-1);
    if (a == (void *)-1) {
        shmctl(seg, IPC_RMID, NULL);
        return TEST_DONE();
    }
    CHECK(st_().shm_nattch == 1);
    CHECK(st_().shm_lpid == me);

    /* fork: the child's inherited attachment counts as soon as fork returns. */
    int go;
    pid_t pid = fork_waiting(&go);
    CHECK(pid > 0);
    struct shmid_ds ds = st_();
    CHECK(ds.shm_nattch == 2);
    CHECK(ds.shm_cpid == me);
    /* The kernel counts the inherited attachment in the parent's context. */
    CHECK(ds.shm_lpid == me);
    CHECK(write(go, "x", 1) == 1);
    close(go);
    CHECK(EXITED_OK(reap_child(pid, 25000)));
    /* Exit detaches: back to 1, the exiting child is the last to operate. */
    CHECK(wait_nattch(1) == 1);
    ds = st_();
    CHECK(ds.shm_lpid == pid);
    CHECK(ds.shm_cpid == me);
    CHECK(ds.shm_dtime != 0);

    /* Two attachments in the parent: a child inherits both. */
    char *b = shmat(seg, NULL, SHM_RDONLY);
    CHECK(b != (void *)-1);
    CHECK(st_().shm_nattch == 2);
    pid = fork_waiting(&go);
    CHECK(st_().shm_nattch == 4);
    CHECK(write(go, "x", 1) == 1);
    close(go);
    CHECK(EXITED_OK(reap_child(pid, 25000)));
    CHECK(wait_nattch(2) == 2);
    EXPECT_OK(shmdt(b));
    CHECK(st_().shm_nattch == 1);

    /* A child detaches its inherited attachment explicitly, then lingers. */
    int go2[2], done[2];
    CHECK(pipe(go2) == 0 && pipe(done) == 0);
    fflush(NULL);
    pid = fork();
    if (pid == 0) {
        alarm(20);
        close(go2[1]);
        close(done[0]);
        int ok = shmdt(a) == 0;
        if (write(done[1], ok ? "y" : "n", 1) != 1)
            _exit(3);
        char ch;
        if (read(go2[0], &ch, 1) != 1)
            _exit(4);
        _exit(ok ? 0 : 1);
    }
    close(go2[0]);
    close(done[1]);
    char ch = 0;
    CHECK(read(done[0], &ch, 1) == 1 && ch == 'y');
    ds = st_();
    CHECK(ds.shm_nattch == 1);
    CHECK(ds.shm_lpid == pid);
    CHECK(write(go2[1], "x", 1) == 1);
    CHECK(EXITED_OK(reap_child(pid, 25000)));
    CHECK(st_().shm_nattch == 1);
    close(go2[1]);
    close(done[0]);

    /* A child's own shmat counts in addition to the inherited attachment. */
    CHECK(pipe(go2) == 0 && pipe(done) == 0);
    fflush(NULL);
    pid = fork();
    if (pid == 0) {
        alarm(20);
        close(go2[1]);
        close(done[0]);
        char *c = shmat(seg, NULL, 0);
        int ok = c != (void *)-1;
        if (ok)
            strcpy(c, "child attach");
        if (write(done[1], ok ? "y" : "n", 1) != 1)
            _exit(3);
        if (read(go2[0], &ch, 1) != 1)
            _exit(4);
        _exit(ok ? 0 : 1); /* exits with both attachments */
    }
    close(go2[0]);
    close(done[1]);
    CHECK(read(done[0], &ch, 1) == 1 && ch == 'y');
    ds = st_();
    CHECK(ds.shm_nattch == 3);
    CHECK(ds.shm_lpid == pid);
    CHECK(strcmp(a, "child attach") == 0);
    CHECK(write(go2[1], "x", 1) == 1);
    CHECK(EXITED_OK(reap_child(pid, 25000)));
    CHECK(wait_nattch(1) == 1);
    close(go2[1]);
    close(done[0]);

    /* SIGKILL detaches too. */
    pid = fork_waiting(&go);
    CHECK(pid > 0);
    CHECK(st_().shm_nattch == 2);
    CHECK(kill(pid, SIGKILL) == 0);
    int st = -1;
    CHECK(waitpid(pid, &st, 0) == pid && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    CHECK(wait_nattch(1) == 1);
    CHECK(st_().shm_lpid == pid);
    close(go);

    /* exec detaches: the child execs a helper that keeps running; once exec has
     * happened (the O_CLOEXEC pipe reads EOF) its attachment is gone. */
    int ex[2];
    CHECK(pipe2(ex, O_CLOEXEC) == 0);
    fflush(NULL);
    pid = fork();
    if (pid == 0) {
        close(ex[0]);
        execl("/proc/self/exe", argv[0], "sleep", (char *)NULL);
        int e = errno;
        if (write(ex[1], &e, sizeof(e)) != (ssize_t)sizeof(e))
            _exit(126);
        _exit(127);
    }
    close(ex[1]);
    int e = 0;
    CHECK(read(ex[0], &e, sizeof(e)) == 0); /* EOF: exec succeeded */
    close(ex[0]);
    CHECK(wait_nattch(1) == 1);
    /* The helper is still running: the drop came from exec, not from exit. */
    CHECK(waitpid(pid, &st, WNOHANG) == 0);
    CHECK(kill(pid, SIGKILL) == 0);
    CHECK(waitpid(pid, &st, 0) == pid);
    CHECK(wait_nattch(1) == 1);

    /* The data written by the children is intact; detach and remove. */
    CHECK(strcmp(a, "child attach") == 0);
    EXPECT_OK(shmdt(a));
    ds = st_();
    CHECK(ds.shm_nattch == 0);
    CHECK(ds.shm_lpid == me);
    EXPECT_OK(shmctl(seg, IPC_RMID, NULL));
    return TEST_DONE();
}
