/* A program that closes its descriptors between calls (and opens files onto their numbers,
 * as daemonising programs do), over and over, while it creates and removes semaphore sets:
 * every call succeeds, and when it is done no set is left over — each semget made exactly
 * one set, each IPC_RMID removed one. (Under ipcshim each close takes the broker socket of
 * the connection whose mailbox the next request goes to, at a different moment of the
 * broker's noticing it: the request must be neither lost nor carried out twice.) */
#include "../common.h"
#include "../sem_common.h"

#include <fcntl.h>
#include <sys/ipc.h>
#include <sys/sem.h>

static void close_all(unsigned n) {
    for (int fd = 3; fd < 64; fd++)
        close(fd);
    /* Files at the numbers the library's descriptors had. */
    for (unsigned i = 0; i < n % 3; i++)
        open("/dev/null", O_RDONLY);
}

int main(void) {
    sem_watchdog(60);
    int before = sets_in_use();
    CHECK(before >= 0);
    int bad_get = 0, bad_rm = 0;
    for (unsigned n = 0; n < 300; n++) {
        int id = semget(IPC_PRIVATE, 1, 0600);
        if (id < 0) {
            bad_get++;
            continue;
        }
        track(id);
        close_all(n);
        /* A moment for the broker to see the close, or none: both orders are met. */
        if (n % 2)
            usleep(n % 5 * 100);
        if (semctl(id, 0, IPC_RMID) != 0)
            bad_rm++;
        w_nsets = 0; /* removed: no longer the watchdog's to remove */
        if (n % 3 == 0)
            close_all(n + 1);
    }
    CHECK(bad_get == 0);
    CHECK(bad_rm == 0);
    CHECK(sets_in_use() == before);
    return TEST_DONE();
}
