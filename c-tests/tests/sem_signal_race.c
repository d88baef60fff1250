/* A signal sent the moment a blocked semop becomes visible (GETNCNT counts it) interrupts
 * that semop with EINTR, even through an SA_RESTART handler: in the kernel the caller is
 * then inside the system call, and the signal ends the sleep. Repeated many times so that
 * the signal lands in every part of the window between "counted" and "asleep". */
#include "../common.h"
#include "../sem_common.h"

#define ROUNDS 400

static int set;
static int report[2];

static void on_usr1(int sig) { (void)sig; }

static void sleeper(void *arg) {
    (void)arg;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    alarm(50);
    for (int i = 0; i < ROUNDS; i++) {
        struct sembuf p = {0, -1, 0};
        errno = 0;
        int r = semop(set, &p, 1);
        char outcome = (r == -1 && errno == EINTR) ? 'i' : r == 0 ? 'o' : 'e';
        if (write(report[1], &outcome, 1) != 1)
            _exit(2);
    }
    _exit(0);
}

int main(void) {
    sem_watchdog(55);
    set = new_set(1);
    CHECK(pipe(report) == 0);
    pid_t kid = spawn_child(sleeper, NULL);
    int interrupted = 0, other = 0;
    for (int i = 0; i < ROUNDS; i++) {
        long long end = now_ms() + 10000;
        while (semctl(set, 0, GETNCNT) != 1 && now_ms() < end) {
        }
        /* A varying delay of 0 to a few microseconds moves the signal across the window. */
        for (volatile int spin = 0; spin < (i * 137) % 20000; spin++) {
        }
        kill(kid, SIGUSR1);
        char outcome = 0;
        if (read(report[0], &outcome, 1) != 1)
            break;
        if (outcome == 'i')
            interrupted++;
        else
            other++;
    }
    CHECK(interrupted == ROUNDS);
    if (interrupted != ROUNDS)
        fprintf(stderr, "  %d of %d semops interrupted, %d not\n", interrupted, ROUNDS, other);
    CHECK(EXITED_OK(reap_child(kid, 10000)));
    rm_set(set);
    return TEST_DONE();
}
