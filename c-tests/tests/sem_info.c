/* semctl IPC_INFO, SEM_INFO, SEM_STAT and SEM_STAT_ANY: the seminfo fields against
 * /proc/sys/kernel/sem and the kernel's constants; SEM_INFO's semusz (sets in use) and
 * semaem (semaphores in use), checked against an enumeration by SEM_STAT_ANY; the return
 * value (highest index in use); SEM_STAT by index returning the full id; SEM_STAT needs
 * read permission, SEM_STAT_ANY and the *_INFO commands do not; EINVAL for a negative
 * id or a free index, EFAULT for a NULL buffer. */
#include "../common.h"
#define SEM_MAXT 64
#include "../sem_common.h"

#include <sys/ipc.h>
#include <sys/sem.h>

/* The kernel's compile-time constants (include/uapi/linux/sem.h). */
#define K_SEMVMX 32767
#define K_SEMAEM 32767
#define K_SEMUSZ 20
#define K_SEMUME 500
#define K_SEMMNS_DEFAULT 1024000000 /* SEMMNU and SEMMAP */
#define IDX(id) ((id) % 32768)

static int info(int semid, int cmd, struct seminfo *si) {
    union semun u;
    memset(si, 0xa5, sizeof(*si));
    u.__buf = si;
    return semctl(semid, 0, cmd, u);
}

/* Fields that are the same for IPC_INFO and SEM_INFO. */
static void check_common(const struct seminfo *si) {
    CHECK(si->semmsl == lim_semmsl);
    CHECK(si->semmns == lim_semmns);
    CHECK(si->semopm == lim_semopm);
    CHECK(si->semmni == lim_semmni);
    CHECK(si->semvmx == K_SEMVMX);
    CHECK(si->semume == K_SEMUME);
    CHECK(si->semmnu == K_SEMMNS_DEFAULT);
    CHECK(si->semmap == K_SEMMNS_DEFAULT);
}

static void test_ipc_info(int max_own_idx) {
    struct seminfo si;
    int r = info(0, IPC_INFO, &si);
    CHECK(r >= max_own_idx && r < 32768);
    check_common(&si);
    CHECK(si.semusz == K_SEMUSZ);
    CHECK(si.semaem == K_SEMAEM);
    /* semid and semnum are ignored, as long as semid is not negative. */
    union semun u;
    u.__buf = &si;
    CHECK(semctl(123456, 77, IPC_INFO, u) >= max_own_idx);
    CHECK(si.semmni == lim_semmni && si.semusz == K_SEMUSZ);
    EXPECT_ERR(info(-1, IPC_INFO, &si), EINVAL);
    u.__buf = NULL;
    EXPECT_ERR(semctl(0, 0, IPC_INFO, u), EFAULT);
}

static void test_sem_info(int max_own_idx, int own_sets, long own_sems) {
    struct seminfo si;
    int r = info(0, SEM_INFO, &si);
    CHECK(r >= max_own_idx && r < 32768);
    check_common(&si);
    CHECK(si.semusz >= own_sets && si.semusz <= lim_semmni);
    CHECK(si.semaem >= own_sems && si.semaem <= lim_semmns);
    EXPECT_ERR(info(-1, SEM_INFO, &si), EINVAL);
    union semun u;
    u.__buf = NULL;
    EXPECT_ERR(semctl(0, 0, SEM_INFO, u), EFAULT);

    /* semusz and semaem agree with what SEM_STAT_ANY finds, index by index.  Other
     * programs may create or remove sets meanwhile: retry until a pass saw no change. */
    int matched = 0;
    for (int attempt = 0; attempt < 20 && !matched; attempt++) {
        struct seminfo a, b;
        int ra = info(0, SEM_INFO, &a);
        int sets = 0;
        long sems = 0;
        for (int idx = 0; idx <= ra; idx++) {
            struct semid_ds ds;
            int id = stat_cmd(idx, SEM_STAT_ANY, &ds);
            if (id >= 0) {
                sets++;
                sems += (long)ds.sem_nsems;
                if (IDX(id) != idx) {
                    fprintf(stderr, "  SEM_STAT_ANY(%d) returned id %d\n", idx, id);
                    CHECK(IDX(id) == idx);
                }
            }
        }
        int rb = info(0, SEM_INFO, &b);
        if (ra == rb && a.semusz == b.semusz && a.semaem == b.semaem &&
            a.semusz == sets && a.semaem == sems)
            matched = 1;
        else if (attempt == 19)
            fprintf(stderr, "  SEM_INFO semusz %d semaem %d, enumerated %d sets %ld sems\n",
                    a.semusz, a.semaem, sets, sems);
    }
    CHECK(matched);
}

static void test_sem_stat(int id, int nsems, int mode) {
    struct semid_ds ds, st;
    int r = stat_cmd(IDX(id), SEM_STAT, &ds);
    CHECK(r == id);
    CHECK(ds.sem_nsems == (unsigned long)nsems);
    CHECK((int)ds.sem_perm.mode == mode);
    CHECK(ds.sem_perm.uid == geteuid() && ds.sem_perm.cuid == geteuid());
    CHECK(stat_cmd(id, IPC_STAT, &st) == 0);
    CHECK(st.sem_ctime == ds.sem_ctime && st.sem_otime == ds.sem_otime);
    CHECK(stat_cmd(IDX(id), SEM_STAT_ANY, &ds) == id);
    CHECK(ds.sem_nsems == (unsigned long)nsems);
    union semun u;
    u.buf = NULL;
    EXPECT_ERR(semctl(IDX(id), 0, SEM_STAT, u), EFAULT);
    EXPECT_ERR(stat_cmd(-1, SEM_STAT, &ds), EINVAL);
    EXPECT_ERR(stat_cmd(-1, SEM_STAT_ANY, &ds), EINVAL);
}

struct permctx {
    int id;
    int readable; /* "other" may read */
};

static void stranger_stat(void *arg) {
    struct permctx *p = arg;
    drop_to(1001, 1001);
    struct semid_ds ds;
    struct seminfo si;
    if (p->readable) {
        CHECK(stat_cmd(IDX(p->id), SEM_STAT, &ds) == p->id);
        CHECK(stat_cmd(p->id, IPC_STAT, &ds) == 0);
    } else {
        EXPECT_ERR(stat_cmd(IDX(p->id), SEM_STAT, &ds), EACCES);
        EXPECT_ERR(stat_cmd(p->id, IPC_STAT, &ds), EACCES);
    }
    /* SEM_STAT_ANY and the *_INFO commands need no permission. */
    CHECK(stat_cmd(IDX(p->id), SEM_STAT_ANY, &ds) == p->id);
    CHECK(ds.sem_nsems == 3 && ds.sem_perm.uid == 0);
    CHECK(info(0, IPC_INFO, &si) >= IDX(p->id));
    CHECK(si.semmni == lim_semmni);
    CHECK(info(0, SEM_INFO, &si) >= IDX(p->id));
    CHECK(si.semusz >= 1);
}

int main(void) {
    sem_watchdog(14);
    read_sem_limits();

    /* Sets of our own: 25 small ones (more than SEMUSZ, so semusz cannot be the
     * constant), and enough semaphores to exceed SEMAEM if the limits allow. */
    int own_sets = 0, max_idx = 0;
    long own_sems = 0;
    for (int i = 0; i < 25; i++) {
        int id = new_set_mode(2, 0600);
        own_sets++;
        own_sems += 2;
        if (IDX(id) > max_idx)
            max_idx = IDX(id);
    }
    int big_nsems = lim_semmsl < 20000 ? (int)lim_semmsl : 20000;
    if ((long)big_nsems * 2 * 4 <= lim_semmns) {
        for (int i = 0; i < 2; i++) {
            int id = new_set_mode(big_nsems, 0600);
            own_sets++;
            own_sems += big_nsems;
            if (IDX(id) > max_idx)
                max_idx = IDX(id);
        }
    }
    int closed = new_set_mode(3, 0600);
    int open = new_set_mode(3, 0604);
    own_sets += 2;
    own_sems += 6;
    if (IDX(closed) > max_idx)
        max_idx = IDX(closed);
    if (IDX(open) > max_idx)
        max_idx = IDX(open);

    test_ipc_info(max_idx);
    test_sem_info(max_idx, own_sets, own_sems);
    test_sem_stat(closed, 3, 0600);
    test_sem_stat(open, 3, 0604);

    struct permctx p1 = {closed, 0}, p2 = {open, 1};
    run_in_child(stranger_stat, &p1);
    run_in_child(stranger_stat, &p2);

    /* A removed set's index is free again. */
    int idx = IDX(closed);
    rm_set(closed);
    struct semid_ds ds;
    EXPECT_ERR(stat_cmd(idx, SEM_STAT, &ds), EINVAL);
    EXPECT_ERR(stat_cmd(idx, SEM_STAT_ANY, &ds), EINVAL);

    remove_all();
    return TEST_DONE();
}
