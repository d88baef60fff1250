/* Shared helpers for the C conformance tests.
 *
 * Every test program must pass unchanged against the kernel and with libipcshim.so
 * preloaded: assert only what the kernel guarantees.  Each CHECK prints a line on
 * failure; the program ends with TEST_DONE(), which prints "N passed, N failed" and
 * returns the exit status (0 only when nothing failed). */
#ifndef IPCSHIM_TEST_COMMON_H
#define IPCSHIM_TEST_COMMON_H
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int t_passed, t_failed;

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (cond) {                                                                   \
            t_passed++;                                                               \
        } else {                                                                      \
            t_failed++;                                                               \
            fprintf(stderr, "FAIL %s:%d: %s (errno %d %s)\n", __FILE__, __LINE__,     \
                    #cond, errno, strerror(errno));                                   \
        }                                                                             \
    } while (0)

/* EXPECT_OK(expr): expr must not return -1. Evaluates to the value. */
#define EXPECT_OK(expr)                                                               \
    ({                                                                                \
        errno = 0;                                                                    \
        long _v = (long)(expr);                                                       \
        if (_v == -1) {                                                               \
            t_failed++;                                                               \
            fprintf(stderr, "FAIL %s:%d: %s returned -1, errno %d %s\n", __FILE__,   \
                    __LINE__, #expr, errno, strerror(errno));                         \
        } else {                                                                      \
            t_passed++;                                                               \
        }                                                                             \
        _v;                                                                           \
    })

/* EXPECT_ERR(expr, E): expr must return -1 with errno == E. */
#define EXPECT_ERR(expr, E)                                                           \
    do {                                                                              \
        errno = 0;                                                                    \
        long _v = (long)(expr);                                                       \
        int _e = errno;                                                               \
        if (_v == -1 && _e == (E)) {                                                  \
            t_passed++;                                                               \
        } else {                                                                      \
            t_failed++;                                                               \
            fprintf(stderr, "FAIL %s:%d: %s returned %ld errno %d (%s), want -1 %s\n",\
                    __FILE__, __LINE__, #expr, _v, _e, strerror(_e), #E);             \
        }                                                                             \
    } while (0)

/* Run fn in a forked child; the child's checks count through its exit status. */
static inline void run_in_child(void (*fn)(void *), void *arg) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        t_passed = t_failed = 0;
        fn(arg);
        fflush(NULL);
        _exit(t_failed ? 1 : 0);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid) {
        t_failed++;
        fprintf(stderr, "FAIL %s:%d: fork/waitpid\n", __FILE__, __LINE__);
        return;
    }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
        t_passed++;
    } else {
        t_failed++;
        fprintf(stderr, "FAIL %s:%d: child status 0x%x\n", __FILE__, __LINE__, st);
    }
}

/* Milliseconds of CLOCK_MONOTONIC, for bounded waits (never for timing assertions). */
static inline long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

/* ---- Watchdog: every blocking wait is bounded. watchdog(secs, cleanup) arms alarm();
 * when it fires, the message is printed, the children registered with watch_kid()
 * (spawn_child() does it) are killed, cleanup (may be NULL) runs and the process exits 3. */
#define WD_MAXKIDS 32
static pid_t wd_kids[WD_MAXKIDS];
static int wd_nkids;
static void (*wd_cleanup)(void);

static void wd_on_alarm(int sig) {
    (void)sig;
    static const char msg[] = "FAIL watchdog: timed out\n";
    if (write(2, msg, sizeof msg - 1) < 0) {
    }
    for (int i = 0; i < wd_nkids; i++)
        kill(wd_kids[i], SIGKILL);
    if (wd_cleanup)
        wd_cleanup();
    _exit(3);
}

static inline void watchdog(unsigned secs, void (*cleanup)(void)) {
    wd_cleanup = cleanup;
    signal(SIGALRM, wd_on_alarm);
    alarm(secs);
}

/* ---- Ticks: SIGALRM runs fn every `us` microseconds (an SA_RESTART handler, as programs
 * install them), for tests of handlers that call in while the interrupted code is inside a
 * call. ticks_stop() ends them and gives SIGALRM its default action back (alarm() kills
 * again); they exclude watchdog(). */
static inline int ticks_start(void (*fn)(int), long us) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sa.sa_flags = SA_RESTART;
    struct itimerval it = {{us / 1000000, us % 1000000}, {us / 1000000, us % 1000000}};
    return sigaction(SIGALRM, &sa, NULL) == 0 && setitimer(ITIMER_REAL, &it, NULL) == 0;
}

static inline void ticks_stop(void) {
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    signal(SIGALRM, SIG_DFL);
}

static inline void watch_kid(pid_t pid) {
    if (pid > 0 && wd_nkids < WD_MAXKIDS)
        wd_kids[wd_nkids++] = pid;
}

static inline void forget_kid(pid_t pid) {
    for (int i = 0; i < wd_nkids; i++)
        if (wd_kids[i] == pid)
            wd_kids[i] = wd_kids[--wd_nkids];
}

/* Kill every pid > 0 of pids[0..n) (async-signal-safe: for watchdog cleanups). */
static inline void kill_kids(const pid_t *pids, int n) {
    for (int i = 0; i < n; i++)
        if (pids[i] > 0)
            kill(pids[i], SIGKILL);
}

/* fork() with stdio flushed first; the child is killed if the parent dies. */
static inline pid_t fork_child(void) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0)
        prctl(PR_SET_PDEATHSIG, SIGKILL);
    return pid;
}

/* Fork a child that runs fn (with its own 10 s watchdog, killed if the parent dies);
 * its checks count through its exit status, collected with reap_child(). The child's
 * watchdog neither kills its siblings nor runs the parent's cleanup. */
static inline pid_t spawn_child(void (*fn)(void *), void *arg) {
    pid_t pid = fork_child();
    if (pid < 0) {
        perror("fork");
        return -1;
    }
    if (pid == 0) {
        wd_nkids = 0;
        wd_cleanup = NULL;
        t_passed = t_failed = 0;
        alarm(10);
        fn(arg);
        fflush(NULL);
        _exit(t_failed ? 1 : 0);
    }
    watch_kid(pid);
    return pid;
}

/* Wait status of pid if it ends within ms; otherwise it is killed and -1 returned. */
static inline int reap_child(pid_t pid, long ms) {
    long long end = now_ms() + ms;
    int st = 0;
    if (pid <= 0)
        return -1;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            forget_kid(pid);
            return st;
        }
        if (r < 0 || now_ms() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            forget_kid(pid);
            fprintf(stderr, "  child %d did not end in time\n", (int)pid);
            return -1;
        }
        sleep_ms(2);
    }
}

/* 1 if a wait status from reap_child() is a normal exit with status 0. */
static inline int EXITED_OK(int st) {
    if (st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return 1;
    if (st != -1)
        fprintf(stderr, "  child wait status 0x%x\n", st);
    return 0;
}

/* 1 while pid has not ended (it is not reaped). */
static inline int child_alive(pid_t pid) {
    siginfo_t si;
    memset(&si, 0, sizeof(si));
    if (waitid(P_PID, pid, &si, WEXITED | WNOHANG | WNOWAIT) != 0)
        return 0;
    return si.si_pid == 0;
}

/* ---- Knowing that a process or thread sleeps in its IPC call. Message queues count no
 * waiters (semaphores do: GETNCNT, GETZCNT), and a fixed sleep is no proof on a loaded
 * machine, so look at /proc: the task's state is S and /proc/.../syscall names the call
 * it sleeps in: the kernel's msgrcv, msgsnd, semop, semtimedop, or the waits of the
 * library's calls, which a call reaches only once it is registered as a waiter: futex
 * (queues), epoll_pwait2, epoll_pwait or ppoll (semaphores). A task sleeping elsewhere
 * (a reply of the broker, a pipe) does not count. */
#include <sys/syscall.h>
#ifndef SYS_epoll_pwait2
#define SYS_epoll_pwait2 441 /* kernel headers older than 5.11 (the same number everywhere) */
#endif

/* The system call task tid of process pid (tid == pid: the process's main thread) sleeps
 * in, or -1 if it does not sleep in one. */
static inline long sleeping_in(pid_t pid, pid_t tid) {
    char path[96], buf[512];
    snprintf(path, sizeof path, "/proc/%d/task/%d/stat", (int)pid, (int)tid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p || p[1] != ' ' || p[2] != 'S')
        return -1;
    snprintf(path, sizeof path, "/proc/%d/task/%d/syscall", (int)pid, (int)tid);
    f = fopen(path, "r");
    if (!f)
        return -1;
    long nr = -1;
    if (fscanf(f, "%ld", &nr) != 1)
        nr = -1;
    fclose(f);
    return nr;
}

/* 1 if task tid of process pid sleeps in its IPC call (see above). */
static inline int asleep_in_call(pid_t pid, pid_t tid) {
    long nr = sleeping_in(pid, tid);
    return nr == SYS_msgrcv || nr == SYS_msgsnd || nr == SYS_semop || nr == SYS_semtimedop || nr == SYS_futex ||
           nr == SYS_epoll_pwait2 || nr == SYS_epoll_pwait || nr == SYS_ppoll;
}

/* Waits (up to 10 s) until task tid of pid sleeps in its call; 1 if it did. */
static inline int wait_asleep(pid_t pid, pid_t tid) {
    long long end = now_ms() + 10000;
    while (!asleep_in_call(pid, tid)) {
        if (now_ms() > end) {
            fprintf(stderr, "  task %d of %d never slept in its call\n", (int)tid, (int)pid);
            return 0;
        }
        sleep_ms(1);
    }
    return 1;
}

/* ---- Dropping privileges (in a child): the groups, then gid, then uid. */
static inline void drop_to_groups(uid_t uid, gid_t gid, int ngroups, const gid_t *groups) {
    if (setgroups((size_t)ngroups, groups) != 0 || setgid(gid) != 0 || setuid(uid) != 0) {
        fprintf(stderr, "cannot drop privileges\n");
        _exit(3);
    }
}

/* No supplementary groups. */
static inline void drop_to(uid_t uid, gid_t gid) { drop_to_groups(uid, gid, 0, NULL); }

/* ---- Numbers from /proc */

/* The first number in path, 0 if it cannot be read. */
static inline unsigned long long read_proc_ull(const char *path) {
    FILE *f = fopen(path, "r");
    unsigned long long v = 0;
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        return 0;
    }
    if (fscanf(f, "%llu", &v) != 1)
        v = 0;
    fclose(f);
    return v;
}

/* A number from /proc/sys/kernel/NAME (its first), -1 if it cannot be read. */
static inline long read_kernel_long(const char *name) {
    char path[128];
    snprintf(path, sizeof path, "/proc/sys/kernel/%s", name);
    FILE *f = fopen(path, "r");
    long v = -1;
    if (f) {
        if (fscanf(f, "%ld", &v) != 1)
            v = -1;
        fclose(f);
    }
    return v;
}

/* The first n numbers in path into v; exits with status 2 if they cannot be read. */
static inline void read_proc_longs(const char *path, long *v, int n) {
    FILE *f = fopen(path, "r");
    int got = 0;
    while (f && got < n && fscanf(f, "%ld", &v[got]) == 1)
        got++;
    if (f)
        fclose(f);
    if (got != n) {
        fprintf(stderr, "cannot read %s\n", path);
        exit(2);
    }
}

/* Is capability `bit` in this process's effective set? */
static inline int has_cap(int bit) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    unsigned long long eff = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "CapEff: %llx", &eff) == 1)
            break;
    if (f)
        fclose(f);
    return (int)((eff >> bit) & 1);
}

static inline int TEST_DONE(void) {
    printf("%s: %d passed, %d failed\n", program_invocation_short_name, t_passed, t_failed);
    return t_failed ? 1 : 0;
}

#endif
