/* /proc/sysvipc/{msg,sem,shm} and the /proc/sys/kernel limits, as tools such as ipcs and
 * lsipc read them: the kernel's header lines, and for each of this test's objects a line
 * formatted exactly as the kernel's seq_printf formats (ipc/msg.c, sem.c, shm.c), with the
 * values IPC_STAT reports; read through open/read, openat, fopen/fgets and after lseek; a
 * removed object's line gone; each limit file equal to what IPC_INFO says, in the sysctl's
 * format. Other objects on the machine may be listed too: only our ids are looked at. */
#include "../common.h"

#include <fcntl.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/stat.h>

static const char MSG_HEADER[] =
    "       key      msqid perms      cbytes       qnum lspid lrpid   uid   gid  cuid  cgid      stime      rtime      ctime\n";
static const char SEM_HEADER[] = "       key      semid perms      nsems   uid   gid  cuid  cgid      otime      ctime\n";
static const char SHM_HEADER[] =
    "       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap\n";

enum how { BY_READ, BY_OPENAT, BY_FOPEN, BY_SEEK, HOWS };
static const char *how_name[] = {"read", "openat", "fopen", "lseek"};

/* The whole file, read the given way (small reads, to cross line boundaries). */
static char *slurp(const char *path, enum how how) {
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    if (how == BY_FOPEN) {
        FILE *f = fopen(path, "r");
        CHECK(f != NULL);
        if (!f)
            return strdup("");
        char line[512];
        while (fgets(line, sizeof line, f)) {
            size_t n = strlen(line);
            if (len + n + 1 > cap)
                buf = realloc(buf, cap *= 2);
            memcpy(buf + len, line, n);
            len += n;
        }
        fclose(f);
        buf[len] = 0;
        return buf;
    }
    int fd = how == BY_OPENAT ? openat(AT_FDCWD, path, O_RDONLY | O_CLOEXEC) : open(path, O_RDONLY);
    CHECK(fd >= 0);
    if (fd < 0)
        return strdup("");
    if (how == BY_OPENAT)
        CHECK(fcntl(fd, F_GETFD) == FD_CLOEXEC);
    else
        CHECK(fcntl(fd, F_GETFD) == 0);
    struct stat st;
    CHECK(fstat(fd, &st) == 0 && S_ISREG(st.st_mode));
    /* Opened read-only, as any /proc file: writing fails. */
    EXPECT_ERR(write(fd, "x", 1), EBADF);
    if (how == BY_SEEK) {
        char first[2];
        CHECK(read(fd, first, sizeof first) == (ssize_t)sizeof first);
        CHECK(lseek(fd, 0, SEEK_SET) == 0);
    }
    for (;;) {
        if (len + 100 > cap)
            buf = realloc(buf, cap *= 2);
        ssize_t n = read(fd, buf + len, 37);
        CHECK(n >= 0);
        if (n <= 0)
            break;
        len += n;
    }
    close(fd);
    buf[len] = 0;
    return buf;
}

/* The line (without its newline) whose second column is id, or NULL. */
static char *line_of(const char *text, int id) {
    for (const char *p = strchr(text, '\n'); p && p[1]; p = strchr(p + 1, '\n')) {
        int key, lid;
        if (sscanf(p + 1, "%d %d", &key, &lid) == 2 && lid == id) {
            const char *end = strchr(p + 1, '\n');
            return strndup(p + 1, end ? (size_t)(end - p - 1) : strlen(p + 1));
        }
    }
    return NULL;
}

static int starts_with(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

static void check_line(const char *file, const char *text, int id, const char *expect) {
    char *line = line_of(text, id);
    CHECK(line != NULL);
    if (line && strcmp(line, expect) != 0) {
        fprintf(stderr, "FAIL %s id %d:\n  got    '%s'\n  expect '%s'\n", file, id, line, expect);
        t_failed++;
    } else if (line) {
        t_passed++;
    }
    free(line);
}

static time_t t0;

static int plausible(time_t t) { return t >= t0 - 1 && t <= time(NULL) + 1; }

static void expect_msg(const char *text, int id, key_t key, int mode, unsigned long cbytes, unsigned long qnum) {
    struct msqid_ds ds;
    EXPECT_OK(msgctl(id, IPC_STAT, &ds));
    CHECK(plausible(ds.msg_ctime));
    char want[256];
    snprintf(want, sizeof want, "%10d %10d  %4o  %10lu %10lu %5u %5u %5u %5u %5u %5u %10llu %10llu %10llu", key, id, mode,
             cbytes, qnum, (unsigned)(qnum ? getpid() : 0), 0u, (unsigned)geteuid(), (unsigned)getegid(),
             (unsigned)geteuid(), (unsigned)getegid(), (unsigned long long)ds.msg_stime,
             (unsigned long long)ds.msg_rtime, (unsigned long long)ds.msg_ctime);
    check_line("msg", text, id, want);
}

static void expect_sem(const char *text, int id, key_t key, int mode, unsigned nsems, int operated) {
    struct semid_ds ds;
    EXPECT_OK(semctl(id, 0, IPC_STAT, &ds));
    CHECK(plausible(ds.sem_ctime));
    CHECK(operated ? plausible(ds.sem_otime) : ds.sem_otime == 0);
    char want[256];
    snprintf(want, sizeof want, "%10d %10d  %4o %10u %5u %5u %5u %5u %10llu %10llu", key, id, mode, nsems,
             (unsigned)geteuid(), (unsigned)getegid(), (unsigned)geteuid(), (unsigned)getegid(),
             (unsigned long long)ds.sem_otime, (unsigned long long)ds.sem_ctime);
    check_line("sem", text, id, want);
}

/* Everything up to ctime exactly; rss and swap as 21-wide numbers whose sum is at most the
 * segment's pages (rss counts pages the kernel has allocated: it differs, see the README). */
static void expect_shm(const char *text, int id, key_t key, int mode, size_t size, unsigned long nattch) {
    struct shmid_ds ds;
    EXPECT_OK(shmctl(id, IPC_STAT, &ds));
    CHECK(plausible(ds.shm_ctime) && plausible(ds.shm_atime));
    char want[256];
    snprintf(want, sizeof want, "%10d %10d  %4o %21lu %5u %5u  %5lu %5u %5u %5u %5u %10llu %10llu %10llu", key, id, mode,
             (unsigned long)size, (unsigned)getpid(), (unsigned)getpid(), nattch, (unsigned)geteuid(),
             (unsigned)getegid(), (unsigned)geteuid(), (unsigned)getegid(), (unsigned long long)ds.shm_atime,
             (unsigned long long)ds.shm_dtime, (unsigned long long)ds.shm_ctime);
    char *line = line_of(text, id);
    CHECK(line != NULL);
    if (!line)
        return;
    if (!starts_with(line, want)) {
        fprintf(stderr, "FAIL shm id %d:\n  got    '%s'\n  expect '%s...'\n", id, line, want);
        t_failed++;
    } else {
        t_passed++;
        const char *rest = line + strlen(want);
        unsigned long rss = ~0ul, swap = ~0ul;
        int used = 0;
        CHECK(strlen(rest) == 2 * 22);
        CHECK(rest[0] == ' ' && rest[22] == ' ');
        CHECK(sscanf(rest, "%21lu %21lu%n", &rss, &swap, &used) == 2 && used == 2 * 22);
        long page = sysconf(_SC_PAGESIZE);
        CHECK(rss % page == 0 && swap % page == 0);
        CHECK(rss + swap <= (size + page - 1) / page * page);
    }
    free(line);
}

/* A limit file's exact text. */
static void expect_limit(const char *name, const char *want) {
    char path[64];
    snprintf(path, sizeof path, "/proc/sys/kernel/%s", name);
    for (enum how how = 0; how < HOWS; how++) {
        char *got = slurp(path, how);
        if (strcmp(got, want) != 0) {
            fprintf(stderr, "FAIL %s (%s): got '%s', IPC_INFO says '%s'\n", path, how_name[how], got, want);
            t_failed++;
        } else {
            t_passed++;
        }
        free(got);
    }
}

static void check_limits(void) {
    char want[128];
    struct msginfo mi;
    EXPECT_OK(msgctl(0, IPC_INFO, (struct msqid_ds *)&mi));
    snprintf(want, sizeof want, "%d\n", mi.msgmax);
    expect_limit("msgmax", want);
    snprintf(want, sizeof want, "%d\n", mi.msgmnb);
    expect_limit("msgmnb", want);
    snprintf(want, sizeof want, "%d\n", mi.msgmni);
    expect_limit("msgmni", want);
    struct seminfo si;
    EXPECT_OK(semctl(0, 0, IPC_INFO, &si));
    snprintf(want, sizeof want, "%d\t%d\t%d\t%d\n", si.semmsl, si.semmns, si.semopm, si.semmni);
    expect_limit("sem", want);
    struct shminfo hi;
    EXPECT_OK(shmctl(0, IPC_INFO, (struct shmid_ds *)&hi));
    snprintf(want, sizeof want, "%lu\n", hi.shmmax);
    expect_limit("shmmax", want);
    snprintf(want, sizeof want, "%lu\n", hi.shmall);
    expect_limit("shmall", want);
    snprintf(want, sizeof want, "%lu\n", hi.shmmni);
    expect_limit("shmmni", want);
}

int main(void) {
    watchdog(30, NULL);
    t0 = time(NULL);
    /* Keys unlikely to be in use, one of them negative (printed with %d). */
    key_t kq = 0x3e000000 + (getpid() & 0xffffff), ks = -(0x3e000000 + (getpid() & 0xffffff)), km = kq + 1;

    int q1 = EXPECT_OK(msgget(kq, IPC_CREAT | IPC_EXCL | 0640));
    int q2 = EXPECT_OK(msgget(IPC_PRIVATE, 0600));
    struct {
        long mtype;
        char mtext[16];
    } m = {1, "0123456789"};
    EXPECT_OK(msgsnd(q1, &m, 10, 0));
    EXPECT_OK(msgsnd(q1, &m, 7, 0));

    int s1 = EXPECT_OK(semget(ks, 5, IPC_CREAT | IPC_EXCL | 0604));
    int s2 = EXPECT_OK(semget(IPC_PRIVATE, 1, 0600));
    struct sembuf up = {2, 1, 0};
    EXPECT_OK(semop(s1, &up, 1));

    long page = sysconf(_SC_PAGESIZE);
    int h1 = EXPECT_OK(shmget(km, 10000, IPC_CREAT | IPC_EXCL | 0660));
    int h2 = EXPECT_OK(shmget(IPC_PRIVATE, page, 0600));
    char *a1 = shmat(h1, NULL, 0), *a2 = shmat(h2, NULL, SHM_RDONLY);
    CHECK(a1 != (void *)-1 && a2 != (void *)-1);
    if (a1 != (void *)-1)
        a1[0] = 1;
    /* Removed while attached: key 0, mode with SHM_DEST (01000). */
    EXPECT_OK(shmctl(h2, IPC_RMID, NULL));

    for (enum how how = 0; how < HOWS; how++) {
        char *msg = slurp("/proc/sysvipc/msg", how);
        char *sem = slurp("/proc/sysvipc/sem", how);
        char *shm = slurp("/proc/sysvipc/shm", how);
        CHECK(starts_with(msg, MSG_HEADER));
        CHECK(starts_with(sem, SEM_HEADER));
        CHECK(starts_with(shm, SHM_HEADER));
        expect_msg(msg, q1, kq, 0640, 17, 2);
        expect_msg(msg, q2, IPC_PRIVATE, 0600, 0, 0);
        expect_sem(sem, s1, ks, 0604, 5, 1);
        expect_sem(sem, s2, IPC_PRIVATE, 0600, 1, 0);
        expect_shm(shm, h1, km, 0660, 10000, 1);
        expect_shm(shm, h2, IPC_PRIVATE, 01600, page, 1);
        free(msg);
        free(sem);
        free(shm);
    }

    /* Removed objects are gone from the files. */
    EXPECT_OK(msgctl(q2, IPC_RMID, NULL));
    EXPECT_OK(semctl(s2, 0, IPC_RMID));
    EXPECT_OK(shmdt(a2));
    char *msg = slurp("/proc/sysvipc/msg", BY_READ), *sem = slurp("/proc/sysvipc/sem", BY_READ),
         *shm = slurp("/proc/sysvipc/shm", BY_FOPEN);
    char *l;
    CHECK((l = line_of(msg, q2)) == NULL);
    free(l);
    CHECK((l = line_of(sem, s2)) == NULL);
    free(l);
    CHECK((l = line_of(shm, h2)) == NULL);
    free(l);
    expect_msg(msg, q1, kq, 0640, 17, 2);
    free(msg);
    free(sem);
    free(shm);

    check_limits();

    EXPECT_OK(msgctl(q1, IPC_RMID, NULL));
    EXPECT_OK(semctl(s1, 0, IPC_RMID));
    EXPECT_OK(shmdt(a1));
    EXPECT_OK(shmctl(h1, IPC_RMID, NULL));
    return TEST_DONE();
}
