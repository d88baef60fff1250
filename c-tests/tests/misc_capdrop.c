/* A process that drops its capabilities with capset loses CAP_IPC_OWNER and
 * CAP_SYS_ADMIN at once: a segment of another owner with mode 0600 is then closed to it. */
#include "../common.h"
#include <linux/capability.h>
#include <grp.h>
#include <sys/shm.h>

int capset(cap_user_header_t header, const cap_user_data_t data);

static int id;

static void drop_caps_then_try(void *arg) {
    (void)arg;
    struct shmid_ds ds;
    /* Before: root's capabilities open it. */
    EXPECT_OK(shmctl(id, IPC_STAT, &ds));
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    memset(d, 0, sizeof d);
    EXPECT_OK(capset(&h, d));
    EXPECT_ERR(shmctl(id, IPC_STAT, &ds), EACCES);
    CHECK(shmat(id, NULL, 0) == (void *)-1 && errno == EACCES);
    EXPECT_ERR(shmctl(id, IPC_RMID, NULL), EPERM);
}

int main(void) {
    if (geteuid() != 0) {
        fprintf(stderr, "misc_capdrop: runs as root (the suite does)\n");
        CHECK(geteuid() == 0);
        return TEST_DONE();
    }
    /* Root uses IPC first (under ipcshim the first user of a namespace starts its broker,
     * and clients of other uids trust only a broker run by root or by themselves). */
    int first = EXPECT_OK(shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600));
    EXPECT_OK(shmctl(first, IPC_RMID, NULL));
    /* Made by uid 1000 (creator and owner), mode 0600: only capabilities let root in. */
    int p[2];
    CHECK(pipe(p) == 0);
    fflush(NULL);
    pid_t maker = fork();
    if (maker == 0) {
        int made = -1;
        if (setgroups(0, NULL) == 0 && setgid(1000) == 0 && setuid(1000) == 0)
            made = shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600);
        if (write(p[1], &made, sizeof made) != sizeof made)
            _exit(1);
        _exit(0);
    }
    id = -1;
    CHECK(read(p[0], &id, sizeof id) == sizeof id && id >= 0);
    CHECK(waitpid(maker, NULL, 0) == maker);
    run_in_child(drop_caps_then_try, NULL);
    EXPECT_OK(shmctl(id, IPC_RMID, NULL));
    return TEST_DONE();
}
