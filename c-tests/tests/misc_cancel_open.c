/* The library interposes open/openat/fopen (for the /proc/sysvipc view): a thread cancelled
 * while blocked in one of them (a FIFO with no writer) must be cancelled as without the
 * library, its cleanup handlers run, not abort the program. */
#include "../common.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>

static char fifo[64];
static volatile int cleaned;
static volatile pid_t opener;

static void cleanup(void *arg) {
    (void)arg;
    cleaned++;
}

static void *open_blocked(void *arg) {
    int how = (int)(long)arg;
    opener = gettid();
    pthread_cleanup_push(cleanup, NULL);
    if (how == 0)
        open(fifo, O_RDONLY);
    else if (how == 1)
        openat(AT_FDCWD, fifo, O_RDONLY);
    else
        fopen(fifo, "r");
    pthread_cleanup_pop(0);
    return NULL;
}

int main(void) {
    watchdog(20, NULL);
    snprintf(fifo, sizeof fifo, "/tmp/ipcshim-cancel-open-%d", (int)getpid());
    CHECK(mkfifo(fifo, 0600) == 0);
    for (int how = 0; how < 3; how++) {
        cleaned = 0;
        pthread_t t;
        opener = 0;
        CHECK(pthread_create(&t, NULL, open_blocked, (void *)(long)how) == 0);
        /* Cancelled once it sleeps in the open, not before it gets there. */
        long long end = now_ms() + 10000;
        while ((opener == 0 || sleeping_in(getpid(), opener) != SYS_openat) && now_ms() < end)
            sleep_ms(1);
        CHECK(opener != 0 && sleeping_in(getpid(), opener) == SYS_openat);
        CHECK(pthread_cancel(t) == 0);
        void *res = NULL;
        CHECK(pthread_join(t, &res) == 0);
        CHECK(res == PTHREAD_CANCELED);
        CHECK(cleaned == 1);
    }
    unlink(fifo);
    return TEST_DONE();
}
