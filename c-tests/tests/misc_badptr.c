/* Bad buffers and negative ids for the *ctl calls: the kernel's errno, never a crash.
 * EFAULT needs the object to exist (the id is looked up first), except for IPC_SET, whose
 * structure is copied in before the lookup. */
#include "../common.h"
#include <sys/mman.h>
#include <sys/msg.h>
#include <sys/shm.h>

int main(void) {
    void *bad = (void *)1;
    /* A page that exists but cannot be read or written. */
    void *none = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(none != MAP_FAILED);
    int id = EXPECT_OK(shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600));
    int q = EXPECT_OK(msgget(IPC_PRIVATE, IPC_CREAT | 0600));

    EXPECT_ERR(shmctl(-1, IPC_SET, NULL), EINVAL);
    EXPECT_ERR(shmctl(-1, IPC_INFO, NULL), EINVAL);
    EXPECT_ERR(shmctl(id, IPC_STAT, bad), EFAULT);
    EXPECT_ERR(shmctl(id, IPC_STAT, none), EFAULT);
    EXPECT_ERR(shmctl(id, IPC_SET, bad), EFAULT);
    EXPECT_ERR(shmctl(id, IPC_SET, none), EFAULT);
    EXPECT_ERR(shmctl(0, IPC_INFO, bad), EFAULT);
    EXPECT_ERR(shmctl(0, SHM_INFO, none), EFAULT);
    EXPECT_ERR(shmctl(id + 12345, IPC_STAT, NULL), EINVAL);
    EXPECT_ERR(shmctl(id + 12345, IPC_SET, NULL), EFAULT);

    EXPECT_ERR(msgctl(-1, IPC_STAT, NULL), EINVAL);
    EXPECT_ERR(msgctl(q, IPC_STAT, bad), EFAULT);
    EXPECT_ERR(msgctl(q, IPC_STAT, none), EFAULT);
    EXPECT_ERR(msgctl(q, IPC_SET, bad), EFAULT);
    EXPECT_ERR(msgctl(0, IPC_INFO, none), EFAULT);
    EXPECT_ERR(msgctl(q + 12345, IPC_STAT, NULL), EINVAL);
    EXPECT_ERR(msgctl(q + 12345, IPC_SET, NULL), EFAULT);

    /* The objects are untouched by all of that. */
    struct shmid_ds ds;
    EXPECT_OK(shmctl(id, IPC_STAT, &ds));
    CHECK(ds.shm_segsz == 4096 && (ds.shm_perm.mode & 0777) == 0600);
    struct msqid_ds mds;
    EXPECT_OK(msgctl(q, IPC_STAT, &mds));
    CHECK((mds.msg_perm.mode & 0777) == 0600);
    EXPECT_OK(shmctl(id, IPC_RMID, NULL));
    EXPECT_OK(msgctl(q, IPC_RMID, NULL));
    return TEST_DONE();
}
