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
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

static inline int TEST_DONE(void) {
    printf("%s: %d passed, %d failed\n", program_invocation_short_name, t_passed, t_failed);
    return t_failed ? 1 : 0;
}

#endif
