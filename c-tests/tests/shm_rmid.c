/* shmctl IPC_RMID: immediate destruction of an unattached segment; deferred destruction
 * while attached (SHM_DEST in mode, key becomes IPC_PRIVATE, the old key is free for
 * a new segment, the old one stays usable, IPC_STAT/IPC_SET/IPC_RMID/shmat on it still
 * work), destruction at the last detach, also when the last detach is a process exit. */
#include "../common.h"
#include "../shm_common.h"

#include <sys/ipc.h>
#include <sys/shm.h>

/* Polls (up to 5 s) until IPC_STAT on id fails; returns the errno it failed with, or 0. */
static int wait_gone(int id) {
    struct shmid_ds ds;
    long long end = now_ms() + 5000;
    for (;;) {
        errno = 0;
        if (stat_seg(id, &ds) == -1)
            return errno;
        if (now_ms() > end)
            return 0;
        sleep_ms(10);
    }
}

int main(void) {
    key_t key = (key_t)(0x5300000 ^ (getpid() << 4));
    struct shmid_ds ds;
    long page = sysconf(_SC_PAGESIZE);

    /* Unattached: IPC_RMID destroys at once. */
    int id0 = EXPECT_OK(shmget(key, page, IPC_CREAT | IPC_EXCL | 0600));
    EXPECT_OK(shmctl(id0, IPC_RMID, NULL));
    EXPECT_ERR(stat_seg(id0, &ds), EINVAL);
    EXPECT_ERR(shmat(id0, NULL, 0), EINVAL);
    EXPECT_ERR(shmget(key, 0, 0), ENOENT);

    /* Attached twice: IPC_RMID only marks it. */
    int id = EXPECT_OK(shmget(key, 2 * page, IPC_CREAT | IPC_EXCL | 0640));
    if (id < 0)
        return TEST_DONE();
    char *a = shmat(id, NULL, 0);
    char *b = shmat(id, NULL, 0);
    CHECK(a != (void *)-1 && b != (void *)-1);
    if (a == (void *)-1 || b == (void *)-1) {
        shmctl(id, IPC_RMID, NULL);
        return TEST_DONE();
    }
    strcpy(a, "before rmid");
    EXPECT_OK(shmctl(id, IPC_RMID, NULL));

    EXPECT_OK(stat_seg(id, &ds));
    CHECK(ds.shm_perm.mode & SHM_DEST);
    CHECK(ds.shm_perm.mode == (SHM_DEST | 0640));
    CHECK(ds.shm_perm.__key == IPC_PRIVATE);
    CHECK(ds.shm_nattch == 2);
    CHECK(ds.shm_segsz == (size_t)(2 * page));

    /* The key no longer finds it. */
    EXPECT_ERR(shmget(key, 0, 0), ENOENT);
    EXPECT_ERR(shmget(key, page, 0600), ENOENT);

    /* The old segment is still readable and writable through both attachments. */
    CHECK(strcmp(b, "before rmid") == 0);
    strcpy(b + page, "after rmid");
    CHECK(strcmp(a + page, "after rmid") == 0);

    /* Linux lets a process attach a segment that is marked for destruction. */
    char *c = shmat(id, NULL, 0);
    CHECK(c != (void *)-1);
    if (c != (void *)-1) {
        CHECK(strcmp(c + page, "after rmid") == 0);
        EXPECT_OK(stat_seg(id, &ds));
        CHECK(ds.shm_nattch == 3);
        EXPECT_OK(shmdt(c));
    }

    /* IPC_SET changes the permission bits but keeps SHM_DEST. */
    EXPECT_OK(stat_seg(id, &ds));
    ds.shm_perm.mode = 0600;
    EXPECT_OK(shmctl(id, IPC_SET, &ds));
    EXPECT_OK(stat_seg(id, &ds));
    CHECK(ds.shm_perm.mode == (SHM_DEST | 0600));
    CHECK(ds.shm_perm.__key == IPC_PRIVATE);

    /* A second IPC_RMID on a marked segment succeeds and changes nothing. */
    EXPECT_OK(shmctl(id, IPC_RMID, NULL));
    EXPECT_OK(stat_seg(id, &ds));
    CHECK(ds.shm_nattch == 2);
    CHECK(ds.shm_perm.mode & SHM_DEST);

    /* The key can be used for a new, different segment. */
    int id2 = EXPECT_OK(shmget(key, page, IPC_CREAT | IPC_EXCL | 0600));
    CHECK(id2 >= 0 && id2 != id);
    if (id2 >= 0) {
        CHECK(shmget(key, 0, 0) == id2);
        char *n = shmat(id2, NULL, 0);
        CHECK(n != (void *)-1);
        if (n != (void *)-1) {
            /* It is a fresh, zeroed segment, not the old one. */
            CHECK(n[0] == 0);
            EXPECT_OK(shmdt(n));
        }
        EXPECT_OK(shmctl(id2, IPC_RMID, NULL));
    }
    EXPECT_OK(stat_seg(id, &ds));
    CHECK(strcmp(a, "before rmid") == 0);

    /* First detach: still there. */
    EXPECT_OK(shmdt(a));
    EXPECT_OK(stat_seg(id, &ds));
    CHECK(ds.shm_nattch == 1);
    CHECK(strcmp(b + page, "after rmid") == 0);
    /* Last detach: destroyed. */
    EXPECT_OK(shmdt(b));
    EXPECT_ERR(stat_seg(id, &ds), EINVAL);
    EXPECT_ERR(shmat(id, NULL, 0), EINVAL);
    EXPECT_ERR(shmctl(id, IPC_RMID, NULL), EINVAL);

    /* Last detach by process exit: a forked child keeps the inherited attachment after
     * the parent detached and removed the segment; the child's exit destroys it. */
    int id3 = EXPECT_OK(shmget(IPC_PRIVATE, page, IPC_CREAT | 0600));
    char *d = shmat(id3, NULL, 0);
    CHECK(d != (void *)-1);
    if (id3 >= 0 && d != (void *)-1) {
        int go[2], done[2];
        CHECK(pipe(go) == 0 && pipe(done) == 0);
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            alarm(20);
            char ch;
            close(go[1]);
            close(done[0]);
            /* Wait until the parent has detached and removed the segment. */
            if (read(go[0], &ch, 1) != 1)
                _exit(2);
            int ok = strcmp(d, "parent") == 0;
            strcpy(d + 100, "child");
            ok = ok && strcmp(d + 100, "child") == 0;
            if (write(done[1], ok ? "y" : "n", 1) != 1)
                _exit(3);
            /* Then wait to be told to exit. */
            if (read(go[0], &ch, 1) != 1)
                _exit(4);
            _exit(ok ? 0 : 1);
        }
        close(go[0]);
        close(done[1]);
        strcpy(d, "parent");
        EXPECT_OK(stat_seg(id3, &ds));
        CHECK(ds.shm_nattch == 2);
        EXPECT_OK(shmdt(d));
        EXPECT_OK(shmctl(id3, IPC_RMID, NULL));
        EXPECT_OK(stat_seg(id3, &ds));
        CHECK(ds.shm_nattch == 1);
        CHECK(ds.shm_perm.mode & SHM_DEST);
        char ch = 0;
        CHECK(write(go[1], "g", 1) == 1);
        CHECK(read(done[0], &ch, 1) == 1 && ch == 'y');
        /* Still there while the child lives. */
        EXPECT_OK(stat_seg(id3, &ds));
        CHECK(ds.shm_nattch == 1);
        CHECK(write(go[1], "x", 1) == 1);
        int st = -1;
        CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
        CHECK(wait_gone(id3) == EINVAL);
        close(go[1]);
        close(done[0]);
    }
    return TEST_DONE();
}
