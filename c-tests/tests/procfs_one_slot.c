/* /proc/sysvipc/msg and /proc/sys/kernel/msgmni opened by a process with exactly one free
 * descriptor slot, as the kernel allows (its open needs one): the open succeeds, the file
 * reads whole (the header, and a queue of ours listed) and is not writable; the slot is
 * taken (the next open fails with EMFILE) and free again after close. Once in a process that
 * has made no System V call yet, once in one that has. */
#include "../common.h"

#include <fcntl.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/resource.h>

static const char MSG_HEADER[] =
    "       key      msqid perms      cbytes       qnum lspid lrpid   uid   gid  cuid  cgid      stime      rtime      ctime\n";

/* Fills the descriptor table but for one slot (the soft limit lowered to keep it small). */
static void leave_one_slot(void) {
    struct rlimit rl;
    CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
    rl.rlim_cur = 64;
    CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
    int last = -1, fd;
    while ((fd = dup(0)) >= 0)
        last = fd;
    CHECK(errno == EMFILE);
    CHECK(last >= 0);
    close(last);
}

/* Opens `path` in the one free slot and reads it whole into buf. Writing fails: with EBADF
 * (read-only, as the kernel's) if `exact`; ipcshim may answer EPERM (a sealed file) in a
 * process that has not met a broker yet (README). */
static void read_in_one_slot(const char *path, char *buf, size_t cap, int exact) {
    int fd = open(path, O_RDONLY);
    CHECK(fd >= 0);
    if (fd < 0) {
        buf[0] = 0;
        return;
    }
    EXPECT_ERR(open("/dev/null", O_RDONLY), EMFILE);
    if (exact)
        EXPECT_ERR(write(fd, "x", 1), EBADF);
    else
        CHECK(write(fd, "x", 1) == -1);
    size_t len = 0;
    ssize_t n;
    while (len + 1 < cap && (n = read(fd, buf + len, cap - 1 - len)) > 0)
        len += n;
    buf[len] = 0;
    EXPECT_OK(close(fd));
    /* The slot is free again. */
    fd = EXPECT_OK(open("/dev/null", O_RDONLY));
    if (fd >= 0)
        close(fd);
}

static void before_any_call(void *arg) {
    (void)arg;
    static char buf[1 << 16];
    leave_one_slot();
    read_in_one_slot("/proc/sysvipc/msg", buf, sizeof buf, 0);
    CHECK(strncmp(buf, MSG_HEADER, strlen(MSG_HEADER)) == 0);
    read_in_one_slot("/proc/sys/kernel/msgmni", buf, sizeof buf, 0);
    CHECK(atol(buf) > 0);
}

static void after_a_call(void *arg) {
    int q = *(int *)arg;
    static char buf[1 << 20];
    struct msqid_ds ds;
    EXPECT_OK(msgctl(q, IPC_STAT, &ds));
    leave_one_slot();
    read_in_one_slot("/proc/sysvipc/msg", buf, sizeof buf, 1);
    CHECK(strncmp(buf, MSG_HEADER, strlen(MSG_HEADER)) == 0);
    int listed = 0;
    for (char *p = strchr(buf, '\n'); p && p[1]; p = strchr(p + 1, '\n')) {
        int key, id;
        if (sscanf(p + 1, "%d %d", &key, &id) == 2 && id == q)
            listed = 1;
    }
    CHECK(listed);
    /* Again: whatever the first open borrowed is back. */
    read_in_one_slot("/proc/sys/kernel/msgmni", buf, sizeof buf, 1);
    CHECK(atol(buf) > 0);
    read_in_one_slot("/proc/sysvipc/msg", buf, sizeof buf, 1);
    CHECK(strncmp(buf, MSG_HEADER, strlen(MSG_HEADER)) == 0);
}

int main(void) {
    watchdog(30, NULL);
    run_in_child(before_any_call, NULL);
    int q = EXPECT_OK(msgget(IPC_PRIVATE, 0600));
    run_in_child(after_a_call, &q);
    EXPECT_OK(msgctl(q, IPC_RMID, NULL));
    return TEST_DONE();
}
