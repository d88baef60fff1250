/* shmat and shmdt: NULL address, a given page-aligned address, SHM_RND, unaligned
 * addresses, SHM_RDONLY (reads work, writes fault, mprotect cannot add PROT_WRITE),
 * SHM_REMAP, SHM_EXEC, the mapping's protections, permission errors for other uids,
 * bad and removed ids, data shared between attachments and with a forked child, and
 * shmdt's EINVAL cases. */
#include "../common.h"

#include <stdint.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>

static long page;

/* The permission string ("rw-s") of the mapping that starts at addr in
 * /proc/self/maps, or "" if none starts there. */
static void map_perms(const void *addr, char out[5]) {
    out[0] = 0;
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof(line), f)) {
        unsigned long lo, hi;
        char perms[5];
        if (sscanf(line, "%lx-%lx %4s", &lo, &hi, perms) == 3 && lo == (unsigned long)addr) {
            memcpy(out, perms, 5);
            break;
        }
    }
    fclose(f);
}

/* Reserve an address range of len bytes aligned to align, then release it, and
 * return its start: a free place to attach at. */
static char *free_area(size_t len, size_t align) {
    char *p = mmap(NULL, len + align, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    char *a = (char *)(((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1));
    munmap(p, len + align);
    return a;
}

/* Runs fn(arg) in a child and returns its wait status. */
static int child_status(void (*fn)(void *), void *arg) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(10);
        fn(arg);
        _exit(0);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid)
        return -1;
    return st;
}

static void write_byte(void *p) {
    *(volatile char *)p = 'x';
}

static void read_byte(void *p) {
    volatile char c = *(volatile char *)p;
    (void)c;
}

static void other_uid_attach(void *arg) {
    int id = *(int *)arg; /* mode 0600, owned by root */
    drop_to(1001, 1001);
    EXPECT_ERR(shmat(id, NULL, 0), EACCES);
    EXPECT_ERR(shmat(id, NULL, SHM_RDONLY), EACCES);
}

static void other_uid_readonly(void *arg) {
    int id = *(int *)arg; /* mode 0604 */
    drop_to(1001, 1001);
    EXPECT_ERR(shmat(id, NULL, 0), EACCES);
    void *p = shmat(id, NULL, SHM_RDONLY);
    CHECK(p != (void *)-1);
    if (p != (void *)-1) {
        CHECK(memcmp(p, "hello", 6) == 0);
        EXPECT_OK(shmdt(p));
    }
}

static void owner_exec_perm(void *arg) {
    (void)arg;
    drop_to(1001, 1001);
    /* Without execute permission in the mode, SHM_EXEC is refused even for the owner. */
    int id = EXPECT_OK(shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600));
    if (id < 0)
        return;
    EXPECT_ERR(shmat(id, NULL, SHM_EXEC), EACCES);
    void *p = shmat(id, NULL, 0);
    CHECK(p != (void *)-1);
    if (p != (void *)-1)
        EXPECT_OK(shmdt(p));
    int id2 = EXPECT_OK(shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0700));
    if (id2 >= 0) {
        p = shmat(id2, NULL, SHM_EXEC);
        CHECK(p != (void *)-1);
        if (p != (void *)-1)
            EXPECT_OK(shmdt(p));
        EXPECT_OK(shmctl(id2, IPC_RMID, NULL));
    }
    EXPECT_OK(shmctl(id, IPC_RMID, NULL));
}

static void child_reads_writes(void *arg) {
    char *p = arg; /* inherited attachment */
    CHECK(strcmp(p, "from parent") == 0);
    strcpy(p + 100, "from child");
}

int main(void) {
    page = sysconf(_SC_PAGESIZE);
    size_t lba = SHMLBA;
    char perms[5];

    int id = EXPECT_OK(shmget(IPC_PRIVATE, 2 * page, IPC_CREAT | 0600));
    if (id < 0)
        return TEST_DONE();

    /* NULL: the kernel chooses a page-aligned address. */
    char *a = shmat(id, NULL, 0);
    CHECK(a != (void *)-1);
    CHECK(((uintptr_t)a & (page - 1)) == 0);
    map_perms(a, perms);
    CHECK(strcmp(perms, "rw-s") == 0);
    /* New segments are zero-filled. */
    int zero = 1;
    for (long i = 0; i < 2 * page; i++)
        if (a[i] != 0)
            zero = 0;
    CHECK(zero);

    /* A second attachment sees the same bytes, both ways. */
    char *b = shmat(id, NULL, 0);
    CHECK(b != (void *)-1 && b != a);
    strcpy(a, "from parent");
    CHECK(strcmp(b, "from parent") == 0);
    b[2 * page - 1] = 'z';
    CHECK(a[2 * page - 1] == 'z');

    /* A forked child reads and writes through the inherited attachment. */
    struct shmid_ds ds;
    run_in_child(child_reads_writes, a);
    CHECK(strcmp(b + 100, "from child") == 0);
    /* And through an attachment it makes itself (shmat in the child). */
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        char *c = shmat(id, NULL, 0);
        if (c == (void *)-1)
            _exit(1);
        strcpy(c + 200, "child attach");
        _exit(shmdt(c) == 0 ? 0 : 2);
    }
    int st = -1;
    CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK(strcmp(a + 200, "child attach") == 0);
    EXPECT_OK(shmdt(b));

    /* A given page-aligned (SHMLBA-aligned) address. */
    char *want = free_area(2 * page, lba);
    CHECK(want != NULL);
    char *c = shmat(id, want, 0);
    CHECK(c == want);
    if (c != (void *)-1) {
        CHECK(strcmp(c, "from parent") == 0);
        /* Attaching again at an occupied address without SHM_REMAP: EINVAL. */
        EXPECT_ERR(shmat(id, want, 0), EINVAL);
        EXPECT_ERR(shmat(id, want + page, 0), EINVAL);
        EXPECT_OK(shmdt(c));
    }

    /* SHM_RND: an unaligned address is rounded down to SHMLBA. */
    want = free_area(2 * page, lba);
    c = shmat(id, want + 123, SHM_RND);
    CHECK(c == want);
    if (c != (void *)-1) {
        CHECK(strcmp(c, "from parent") == 0);
        EXPECT_OK(shmdt(c));
    }
    /* Unaligned without SHM_RND: EINVAL. */
    want = free_area(2 * page, lba);
    EXPECT_ERR(shmat(id, want + 123, 0), EINVAL);
    EXPECT_ERR(shmat(id, want + 1, SHM_RDONLY), EINVAL);
    /* SHM_REMAP needs an address. */
    EXPECT_ERR(shmat(id, NULL, SHM_REMAP), EINVAL);
    /* SHM_RND with an address below SHMLBA and SHM_REMAP rounds to 0: EINVAL. */
    EXPECT_ERR(shmat(id, (void *)(lba - 1), SHM_RND | SHM_REMAP), EINVAL);

    /* SHM_REMAP replaces an existing mapping. */
    char *anon = free_area(2 * page, lba);
    if (anon)
        anon = mmap(anon, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                    -1, 0);
    CHECK(anon != NULL && anon != MAP_FAILED);
    if (anon != NULL && anon != MAP_FAILED) {
        memset(anon, 'A', 2 * page);
        EXPECT_ERR(shmat(id, anon, 0), EINVAL);
        CHECK(anon[0] == 'A');
        c = shmat(id, anon, SHM_REMAP);
        CHECK(c == anon);
        if (c != (void *)-1) {
            CHECK(strcmp(c, "from parent") == 0);
            c[300] = 'r';
            CHECK(a[300] == 'r');
            EXPECT_OK(shmdt(c));
        }
    }

    /* SHM_RDONLY: reading works, writing faults, mprotect cannot make it writable. */
    char *r = shmat(id, NULL, SHM_RDONLY);
    CHECK(r != (void *)-1);
    if (r != (void *)-1) {
        CHECK(strcmp(r, "from parent") == 0);
        a[400] = 'q';
        CHECK(r[400] == 'q');
        map_perms(r, perms);
        CHECK(strcmp(perms, "r--s") == 0);
        st = child_status(read_byte, r);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        st = child_status(write_byte, r);
        CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV);
        EXPECT_ERR(mprotect(r, page, PROT_READ | PROT_WRITE), EACCES);
        EXPECT_ERR(mprotect(r, page, PROT_WRITE), EACCES);
        /* Dropping to PROT_NONE and back to read is allowed. */
        EXPECT_OK(mprotect(r, page, PROT_NONE));
        EXPECT_OK(mprotect(r, page, PROT_READ));
        CHECK(r[400] == 'q');
        EXPECT_OK(shmdt(r));
    }

    /* SHM_EXEC maps the segment executable. */
    char *x = shmat(id, NULL, SHM_EXEC);
    CHECK(x != (void *)-1);
    if (x != (void *)-1) {
        map_perms(x, perms);
        CHECK(strcmp(perms, "rwxs") == 0);
        EXPECT_OK(shmdt(x));
    }
    x = shmat(id, NULL, SHM_EXEC | SHM_RDONLY);
    CHECK(x != (void *)-1);
    if (x != (void *)-1) {
        map_perms(x, perms);
        CHECK(strcmp(perms, "r-xs") == 0);
        EXPECT_OK(shmdt(x));
    }
    run_in_child(owner_exec_perm, NULL);

    /* Another uid: mode 0600 refuses both kinds of attach; 0604 allows read-only. */
    run_in_child(other_uid_attach, &id);
    EXPECT_OK(shmctl(id, IPC_STAT, &ds));
    strcpy(a, "hello");
    ds.shm_perm.mode = 0604;
    EXPECT_OK(shmctl(id, IPC_SET, &ds));
    run_in_child(other_uid_readonly, &id);

    /* shmdt errors: not the start of an attachment, NULL, twice. */
    EXPECT_ERR(shmdt(a + 1), EINVAL);
    EXPECT_ERR(shmdt(a + page), EINVAL);
    EXPECT_ERR(shmdt(NULL), EINVAL);
    char *anon2 = mmap(NULL, page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(anon2 != MAP_FAILED);
    EXPECT_ERR(shmdt(anon2), EINVAL);
    munmap(anon2, page);
    EXPECT_ERR(shmdt(&page), EINVAL);
    EXPECT_OK(shmdt(a));
    EXPECT_ERR(shmdt(a), EINVAL);
    /* After shmdt the range is free again. */
    void *again = mmap(a, page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    CHECK(again == a);
    if (again != MAP_FAILED)
        munmap(again, page);

    /* Bad ids. */
    EXPECT_ERR(shmat(-1, NULL, 0), EINVAL);
    EXPECT_ERR(shmat(-5, NULL, SHM_RDONLY), EINVAL);
    EXPECT_OK(shmctl(id, IPC_RMID, NULL));
    /* A removed id (no attachments left, so it is gone). */
    EXPECT_ERR(shmat(id, NULL, 0), EINVAL);
    EXPECT_ERR(shmat(id, NULL, SHM_RDONLY), EINVAL);
    return TEST_DONE();
}
