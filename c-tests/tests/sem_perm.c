/* Permissions of semaphore sets for other uids: semop needs write permission to alter
 * and read permission to only wait for zero (a call mixing both needs write only);
 * GETVAL/GETALL/GETPID/GETNCNT/GETZCNT/IPC_STAT need read, SETVAL/SETALL write;
 * IPC_SET and IPC_RMID need the owner or creator uid (EPERM), whatever the mode; the
 * owner class (uid or cuid) is used before the group class (gid or cgid, egid or a
 * supplementary group) and "other"; the effective uid counts; root bypasses the mode.
 * Also the order of checks: EFBIG before EACCES in semop, EACCES before the semnum check
 * for GETVAL, the value and semnum checks before EACCES for SETVAL. */
#include "../common.h"
#include "../sem_common.h"

#include <grp.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/sem.h>

/* Become uid/gid with the given supplementary groups; a child's watchdog too. */
static void become(uid_t uid, gid_t gid, int ngroups, const gid_t *groups) {
    alarm(10);
    signal(SIGALRM, SIG_DFL);
    drop_to_groups(uid, gid, ngroups, groups);
}

/* IPC_SET from a buffer filled from scratch (IPC_STAT may not be permitted). */
static int set_perm(int id, uid_t uid, gid_t gid, int mode) {
    struct semid_ds ds;
    union semun u;
    memset(&ds, 0, sizeof(ds));
    ds.sem_perm.uid = uid;
    ds.sem_perm.gid = gid;
    ds.sem_perm.mode = (unsigned short)mode;
    u.buf = &ds;
    return semctl(id, 0, IPC_SET, u);
}

/* What a process may do, checked with every call: r = read granted, w = write granted. */
static void check_access(int id, int r, int w) {
    unsigned short vals[2];
    struct semid_ds ds;
    /* sem 0 is 0, sem 1 is 1 on entry and on exit */
    if (r) {
        CHECK(cmd_no_arg(id, 0, GETVAL) == 0);
        CHECK(cmd_no_arg(id, 1, GETVAL) == 1);
        CHECK(getall(id, vals) == 0 && vals[1] == 1);
        CHECK(cmd_no_arg(id, 0, GETPID) >= 0);
        CHECK(cmd_no_arg(id, 0, GETNCNT) == 0);
        CHECK(cmd_no_arg(id, 0, GETZCNT) == 0);
        CHECK(stat_set(id, &ds) == 0 && ds.sem_nsems == 2);
        CHECK(op1(id, 0, 0, 0) == 0);
        EXPECT_ERR(op1(id, 1, 0, IPC_NOWAIT), EAGAIN);
        struct timespec ts = {0, 1000000L};
        EXPECT_ERR(semtimedop(id, &(struct sembuf){1, 0, 0}, 1, &ts), EAGAIN);
        /* GETVAL checks permission before semnum. */
        EXPECT_ERR(cmd_no_arg(id, 9, GETVAL), EINVAL);
    } else {
        EXPECT_ERR(cmd_no_arg(id, 0, GETVAL), EACCES);
        EXPECT_ERR(getall(id, vals), EACCES);
        EXPECT_ERR(cmd_no_arg(id, 0, GETPID), EACCES);
        EXPECT_ERR(cmd_no_arg(id, 0, GETNCNT), EACCES);
        EXPECT_ERR(cmd_no_arg(id, 0, GETZCNT), EACCES);
        EXPECT_ERR(stat_set(id, &ds), EACCES);
        EXPECT_ERR(op1(id, 0, 0, 0), EACCES);
        EXPECT_ERR(op1(id, 1, 0, IPC_NOWAIT), EACCES);
        EXPECT_ERR(cmd_no_arg(id, 9, GETVAL), EACCES);
    }
    if (w) {
        CHECK(op1(id, 0, 1, 0) == 0);
        CHECK(op1(id, 0, -1, 0) == 0);
        CHECK(op1(id, 0, 1, SEM_UNDO) == 0);
        CHECK(op1(id, 0, -1, SEM_UNDO) == 0);
        EXPECT_ERR(op1(id, 0, -1, IPC_NOWAIT), EAGAIN);
        /* An altering call may also wait for zero: write permission is enough. */
        struct sembuf mix[2] = {{1, -1, 0}, {0, 0, 0}};
        CHECK(semop(id, mix, 2) == 0);
        struct sembuf mix2[2] = {{0, 0, 0}, {1, 1, 0}};
        CHECK(semop(id, mix2, 2) == 0);
        CHECK(setval(id, 0, 0) == 0);
        unsigned short in[2] = {0, 1};
        CHECK(setall(id, in) == 0);
    } else {
        EXPECT_ERR(op1(id, 0, 1, 0), EACCES);
        EXPECT_ERR(op1(id, 1, -1, 0), EACCES);
        EXPECT_ERR(op1(id, 0, -1, 0), EACCES); /* would block, but fails first */
        EXPECT_ERR(op1(id, 0, 1, SEM_UNDO | IPC_NOWAIT), EACCES);
        struct sembuf mix[2] = {{1, -1, 0}, {0, 0, 0}};
        EXPECT_ERR(semop(id, mix, 2), EACCES);
        EXPECT_ERR(setval(id, 0, 0), EACCES);
        unsigned short in[2] = {0, 1};
        EXPECT_ERR(setall(id, in), EACCES);
    }
    /* Checks that come before the permission check. */
    EXPECT_ERR(op1(id, 2, 1, 0), EFBIG);
    EXPECT_ERR(op1(id, 2, 0, 0), EFBIG);
    EXPECT_ERR(setval(id, 0, 40000), ERANGE);
    EXPECT_ERR(setval(id, 9, 1), EINVAL);
    EXPECT_ERR(semop(id, NULL, 0), EINVAL);
}

/* Not the owner nor the creator: IPC_SET and IPC_RMID fail with EPERM. */
static void check_not_owner(int id) {
    struct semid_ds ds;
    union semun u;
    memset(&ds, 0, sizeof(ds));
    ds.sem_perm.uid = getuid();
    ds.sem_perm.gid = getgid();
    ds.sem_perm.mode = 0666;
    u.buf = &ds;
    EXPECT_ERR(semctl(id, 0, IPC_SET, u), EPERM);
    EXPECT_ERR(cmd_no_arg(id, 0, IPC_RMID), EPERM);
}

struct pctx {
    int id;
    int r, w;
    int *shared; /* an int visible to parent and children */
};

static void as_other(void *arg) {
    struct pctx *p = arg;
    become(1001, 1001, 0, NULL);
    check_access(p->id, p->r, p->w);
    check_not_owner(p->id);
}

static void test_other_class(void) {
    static const struct {
        int mode, r, w;
    } cases[] = {
        {0600, 0, 0}, {0604, 1, 0}, {0602, 0, 1}, {0606, 1, 1},
        {0666, 1, 1}, {0660, 0, 0}, {0066, 1, 1}, {0000, 0, 0},
    };
    for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct pctx p = {new_set_mode(2, cases[i].mode), cases[i].r, cases[i].w, NULL};
        setval(p.id, 1, 1);
        run_in_child(as_other, &p);
        /* Nothing changed, and the owner is still root. */
        struct semid_ds ds;
        CHECK(stat_set(p.id, &ds) == 0);
        CHECK((int)ds.sem_perm.mode == cases[i].mode && ds.sem_perm.uid == 0);
        CHECK(cmd_no_arg(p.id, 0, GETVAL) == 0 && cmd_no_arg(p.id, 1, GETVAL) == 1);
        rm_set(p.id);
    }
}

/* Group class: through the egid, a supplementary group, or the creator's group. */
static void as_group_egid(void *arg) {
    struct pctx *p = arg;
    become(1001, 2000, 0, NULL);
    check_access(p->id, p->r, p->w);
    check_not_owner(p->id);
}

static void as_group_supplementary(void *arg) {
    struct pctx *p = arg;
    gid_t groups[2] = {1500, 2000};
    become(1001, 3000, 2, groups);
    check_access(p->id, p->r, p->w);
}

static void as_group_of_creator(void *arg) {
    struct pctx *p = arg;
    gid_t groups[1] = {0};
    become(1001, 3000, 1, groups);
    check_access(p->id, p->r, p->w);
}

static void as_non_member(void *arg) {
    struct pctx *p = arg;
    become(1001, 3000, 0, NULL);
    check_access(p->id, 0, 0);
}

static void test_group_class(void) {
    struct pctx p = {new_set_mode(2, 0600), 1, 1, NULL};
    setval(p.id, 1, 1);
    CHECK(set_perm(p.id, 0, 2000, 0060) == 0);
    run_in_child(as_group_egid, &p);
    run_in_child(as_group_supplementary, &p);
    /* cgid (root's group 0) counts like gid. */
    run_in_child(as_group_of_creator, &p);
    run_in_child(as_non_member, &p);
    /* Group read only. */
    CHECK(set_perm(p.id, 0, 2000, 0046) == 0);
    p.r = 1;
    p.w = 0;
    run_in_child(as_group_egid, &p);
    /* The group class is used even when "other" grants more. */
    CHECK(set_perm(p.id, 0, 2000, 0006) == 0);
    p.r = 0;
    p.w = 0;
    run_in_child(as_group_egid, &p);
    rm_set(p.id);
}

/* Owner and creator. */
static void creator_makes_set(void *arg) {
    struct pctx *p = arg;
    become(1001, 1001, 0, NULL);
    int id = semget(IPC_PRIVATE, 2, 0600);
    CHECK(id >= 0);
    *p->shared = id;
    if (id < 0)
        return;
    CHECK(setval(id, 1, 1) == 0);
    check_access(id, 1, 1);
    /* The creator may give the set away ... */
    CHECK(set_perm(id, 1002, 1002, 0066) == 0);
    /* ... and is then in the owner class with no permission, while "other" has all. */
    check_access(id, 0, 0);
    /* ... yet as creator may still change it. */
    CHECK(set_perm(id, 1002, 1002, 0066) == 0);
}

static void owner_uses_set(void *arg) {
    struct pctx *p = arg;
    become(1002, 1002, 0, NULL);
    check_access(p->id, 0, 0);
    CHECK(set_perm(p->id, 1002, 1002, 0066) == 0);
}

static void stranger_uses_set(void *arg) {
    struct pctx *p = arg;
    become(1003, 1003, 0, NULL);
    check_access(p->id, 1, 1);
    check_not_owner(p->id);
}

static void owner_removes_set(void *arg) {
    struct pctx *p = arg;
    become(1002, 1002, 0, NULL);
    CHECK(cmd_no_arg(p->id, 0, IPC_RMID) == 0);
    EXPECT_ERR(cmd_no_arg(p->id, 0, GETVAL), EINVAL);
}

static void creator_removes_set(void *arg) {
    struct pctx *p = arg;
    become(1001, 1001, 0, NULL);
    CHECK(cmd_no_arg(p->id, 0, IPC_RMID) == 0);
}

static void test_owner_and_creator(void) {
    int *shared = mmap(NULL, sizeof(int), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                       -1, 0);
    if (shared == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    *shared = -1;
    struct pctx p = {-1, 0, 0, shared};
    run_in_child(creator_makes_set, &p);
    p.id = *shared;
    CHECK(p.id >= 0);
    if (p.id < 0)
        return;
    track(p.id);
    struct semid_ds ds;
    CHECK(stat_set(p.id, &ds) == 0);
    CHECK(ds.sem_perm.cuid == 1001 && ds.sem_perm.cgid == 1001);
    CHECK(ds.sem_perm.uid == 1002 && ds.sem_perm.gid == 1002);
    CHECK(ds.sem_perm.mode == 0066);
    run_in_child(owner_uses_set, &p);
    run_in_child(stranger_uses_set, &p);
    run_in_child(owner_removes_set, &p);
    EXPECT_ERR(stat_set(p.id, &ds), EINVAL);
    rm_set(p.id);

    /* The creator may remove a set it gave away. */
    *shared = -1;
    run_in_child(creator_makes_set, &p);
    p.id = *shared;
    CHECK(p.id >= 0);
    if (p.id < 0)
        return;
    track(p.id);
    run_in_child(creator_removes_set, &p);
    EXPECT_ERR(stat_set(p.id, &ds), EINVAL);
    rm_set(p.id);
    munmap(shared, sizeof(int));
}

/* The effective uid is what counts. */
static void effective_uid(void *arg) {
    struct pctx *p = arg;
    alarm(10);
    signal(SIGALRM, SIG_DFL);
    CHECK(setegid(1001) == 0);
    CHECK(seteuid(1001) == 0);
    check_access(p->id, 0, 0);
    check_not_owner(p->id);
    CHECK(seteuid(0) == 0);
    check_access(p->id, 1, 1);
    /* Real uid root, effective 1001: still a stranger. */
    CHECK(setresuid(1001, 1001, 0) == 0);
    check_access(p->id, 0, 0);
    CHECK(setresuid(1001, 0, 0) == 0);
    check_access(p->id, 1, 1);
}

static void test_effective_uid(void) {
    struct pctx p = {new_set_mode(2, 0600), 0, 0, NULL};
    setval(p.id, 1, 1);
    run_in_child(effective_uid, &p);
    rm_set(p.id);
}

/* Root (CAP_IPC_OWNER, CAP_SYS_ADMIN) ignores the mode and the ownership. */
static void test_root(void) {
    int id = new_set_mode(2, 0000);
    setval(id, 1, 1);
    check_access(id, 1, 1);
    CHECK(set_perm(id, 1001, 1001, 0000) == 0);
    check_access(id, 1, 1);
    CHECK(set_perm(id, 1001, 1001, 0000) == 0);
    CHECK(cmd_no_arg(id, 0, IPC_RMID) == 0);
    rm_set(id);
}

int main(void) {
    sem_watchdog(14);

    test_other_class();
    test_group_class();
    test_owner_and_creator();
    test_effective_uid();
    test_root();

    remove_all();
    return TEST_DONE();
}
