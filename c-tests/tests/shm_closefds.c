/* A daemon-like program that closes all its descriptors (0..1023), puts /dev/null on
 * 0 and 1 and a log file on 2, and opens files, a pipe and a socket pair that take the
 * low numbers again, then keeps using shmget/shmat/shmdt/shmctl: every call must work,
 * the attachments made before must still work, and nothing may be written into the
 * program's own descriptors.
 *
 * The daemon part runs in a forked child (it loses its stdout); the parent prints the
 * child's log and counts its result. */
#include "../common.h"

#include <fcntl.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/stat.h>

static char logpath[64];
static char filepath[4][64];

static void daemon_part(void *arg) {
    key_t key = *(key_t *)arg;

    /* Use SysV IPC before turning hostile, so any state the implementation keeps
     * (connections, caches) exists when the descriptors are pulled away. */
    int id = shmget(key, 8192, IPC_CREAT | IPC_EXCL | 0600);
    if (id < 0)
        _exit(20);
    char *a = shmat(id, NULL, 0);
    if (a == (void *)-1)
        _exit(21);
    strcpy(a, "before closing");
    struct shmid_ds ds;
    if (shmctl(id, IPC_STAT, &ds) != 0)
        _exit(22);

    /* Close everything, then take the low numbers again. */
    for (int fd = 0; fd < 1024; fd++)
        close(fd);
    int null = open("/dev/null", O_RDWR);            /* 0 */
    if (null != 0 || dup2(null, 1) != 1)             /* 1 */
        _exit(23);
    if (open(logpath, O_WRONLY | O_APPEND) != 2)     /* 2: the log */
        _exit(24);
    int files[4];
    for (int i = 0; i < 4; i++) {
        files[i] = open(filepath[i], O_RDWR);       /* 3.. */
        if (files[i] < 0)
            _exit(25);
    }
    int pfd[2], sp[2];
    if (pipe(pfd) != 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, sp) != 0)
        _exit(26);
    /* Also occupy a few high numbers, where an implementation may have kept its own. */
    for (int fd = 1000; fd < 1024; fd += 3)
        if (dup2(sp[1], fd) != fd)
            _exit(27);

    /* The old attachment is untouched. */
    CHECK(strcmp(a, "before closing") == 0);
    /* Every call still works. */
    CHECK(shmget(key, 0, 0) == id);
    EXPECT_OK(shmctl(id, IPC_STAT, &ds));
    CHECK(ds.shm_nattch == 1);
    CHECK(ds.shm_segsz == 8192);
    char *b = shmat(id, NULL, 0);
    CHECK(b != (void *)-1);
    if (b != (void *)-1) {
        CHECK(strcmp(b, "before closing") == 0);
        strcpy(b + 4096, "after closing");
        CHECK(strcmp(a + 4096, "after closing") == 0);
        EXPECT_OK(shmctl(id, IPC_STAT, &ds));
        CHECK(ds.shm_nattch == 2);
        EXPECT_OK(shmdt(b));
    }
    int id2 = EXPECT_OK(shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600));
    if (id2 >= 0) {
        char *c = shmat(id2, NULL, 0);
        CHECK(c != (void *)-1);
        if (c != (void *)-1) {
            c[0] = 'c';
            EXPECT_OK(shmdt(c));
        }
        EXPECT_OK(shmctl(id2, IPC_RMID, NULL));
        EXPECT_ERR(shmctl(id2, IPC_STAT, &ds), EINVAL);
    }
    EXPECT_ERR(shmget(key + 1, 0, 0), ENOENT);
    EXPECT_ERR(shmctl(-1, IPC_STAT, &ds), EINVAL);

    /* A forked grandchild (whose descriptors are just as scrambled) uses them too. */
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        int ok = strcmp(a + 4096, "after closing") == 0 && shmget(key, 0, 0) == id;
        char *g = shmat(id, NULL, SHM_RDONLY);
        ok = ok && g != (void *)-1 && strcmp(g, "before closing") == 0 && shmdt(g) == 0;
        _exit(ok ? 0 : 1);
    }
    int st = -1;
    CHECK(pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);

    EXPECT_OK(shmdt(a));
    EXPECT_OK(shmctl(id, IPC_RMID, NULL));
    EXPECT_ERR(shmget(key, 0, 0), ENOENT);

    /* None of the program's own descriptors received a byte. */
    struct stat sb;
    for (int i = 0; i < 4; i++) {
        CHECK(fstat(files[i], &sb) == 0 && sb.st_size == 0);
        CHECK(lseek(files[i], 0, SEEK_CUR) == 0);
    }
    char buf[16];
    CHECK(fcntl(pfd[0], F_SETFL, O_NONBLOCK) == 0);
    errno = 0;
    CHECK(read(pfd[0], buf, sizeof(buf)) == -1 && errno == EAGAIN);
    errno = 0;
    CHECK(recv(sp[0], buf, sizeof(buf), MSG_DONTWAIT) == -1 && errno == EAGAIN);
    errno = 0;
    CHECK(recv(sp[1], buf, sizeof(buf), MSG_DONTWAIT) == -1 && errno == EAGAIN);
    /* Our descriptors are still open and still ours. */
    CHECK(fcntl(0, F_GETFD) >= 0 && fcntl(1, F_GETFD) >= 0 && fcntl(2, F_GETFD) >= 0);
    CHECK(write(pfd[1], "z", 1) == 1 && read(pfd[0], buf, 1) == 1 && buf[0] == 'z');
}

int main(void) {
    key_t key = (key_t)(0x5500000 ^ (getpid() << 4));
    snprintf(logpath, sizeof(logpath), "/tmp/shm_closefds-%d.log", (int)getpid());
    int fd = open(logpath, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    CHECK(fd >= 0);
    close(fd);
    for (int i = 0; i < 4; i++) {
        snprintf(filepath[i], sizeof(filepath[i]), "/tmp/shm_closefds-%d.%d", (int)getpid(), i);
        fd = open(filepath[i], O_CREAT | O_TRUNC | O_RDWR, 0600);
        CHECK(fd >= 0);
        close(fd);
    }

    run_in_child(daemon_part, &key);

    /* Show what the daemon logged (its CHECK failures), then clean up. */
    FILE *f = fopen(logpath, "r");
    CHECK(f != NULL);
    if (f) {
        char line[512];
        int foreign = 0;
        while (fgets(line, sizeof(line), f)) {
            fprintf(stderr, "daemon: %s", line);
            if (strncmp(line, "FAIL ", 5) != 0)
                foreign++;
        }
        fclose(f);
        /* The log (the daemon's fd 2) holds nothing but the test's own messages. */
        CHECK(foreign == 0);
    }
    unlink(logpath);
    for (int i = 0; i < 4; i++)
        unlink(filepath[i]);
    /* Nothing left behind. */
    int id = shmget(key, 0, 0);
    CHECK(id == -1 && errno == ENOENT);
    if (id >= 0)
        shmctl(id, IPC_RMID, NULL);
    return TEST_DONE();
}
