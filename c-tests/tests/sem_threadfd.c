/* Threads that sleep in semop, and threads that wake sleepers, come and go: nothing may
 * accumulate in the process (a thread-per-request server would run out of descriptors). */
#include "../common.h"
#include "../sem_common.h"
#include <dirent.h>
#include <pthread.h>

static int set;

static int count_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    while (d && readdir(d))
        n++;
    if (d)
        closedir(d);
    return n;
}

static void *sleeper(void *arg) {
    (void)arg;
    struct sembuf p = {0, -1, 0};
    return (void *)(long)semop(set, &p, 1);
}

static void *waker(void *arg) {
    (void)arg;
    struct sembuf v = {0, 1, 0};
    return (void *)(long)semop(set, &v, 1);
}

/* One sleeper and one waker thread, both joined. */
static void round_trip(void) {
    pthread_t s, w;
    CHECK(pthread_create(&s, NULL, sleeper, NULL) == 0);
    /* Let the sleeper block (GETNCNT says so), then wake it from another thread. */
    long long until = now_ms() + 5000;
    while (semctl(set, 0, GETNCNT) < 1 && now_ms() < until)
        sleep_ms(1);
    CHECK(pthread_create(&w, NULL, waker, NULL) == 0);
    void *rs, *rw;
    CHECK(pthread_join(w, &rw) == 0 && rw == NULL);
    CHECK(pthread_join(s, &rs) == 0 && rs == NULL);
}

int main(void) {
    alarm(60);
    set = EXPECT_OK(semget(IPC_PRIVATE, 1, IPC_CREAT | 0600));
    round_trip();
    int before = count_fds();
    for (int i = 0; i < 100; i++)
        round_trip();
    int after = count_fds();
    CHECK(after <= before + 2);
    if (after > before + 2)
        fprintf(stderr, "descriptors: %d -> %d\n", before, after);
    EXPECT_OK(semctl(set, 0, IPC_RMID));
    return TEST_DONE();
}
