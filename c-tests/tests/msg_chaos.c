/* Chaos: several sender and receiver processes share one queue while the parent SIGKILLs
 * random ones and starts replacements.  Every message carries a unique id.
 *
 * Accounting, all in a shared anonymous mapping:
 *  - a sender records `attempted = seq` before msgsnd and `confirmed = seq` after it
 *    returned 0; so a killed sender has at most one message in doubt (attempted, not
 *    confirmed), which may or may not have been queued;
 *  - a receiver receives directly into the next slot of its own array in the shared
 *    mapping, so a message the kernel delivered is recorded even if the receiver is
 *    killed right after msgrcv returns (slots are zero until filled).
 * At the end the parent drains the queue and checks: no id received twice (counting the
 * drained ones), no id that was never attempted, every confirmed id received exactly once,
 * contents intact.  Runs about 2 s. */
#include "../common.h"
#include <stdint.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/msg.h>
#include <sys/prctl.h>

#define NSEND 3
#define NRECV 3
#define MAX_SINST 512     /* sender instances (incl. replacements) */
#define MAX_RINST 512     /* receiver instances */
#define MAXSEQ 4000       /* messages per sender instance */
/* msg_chaos_long.c sets these for longer texts */
#ifndef SLOTS
#define SLOTS 3000        /* messages per receiver instance */
#define SLOT_TEXT 48      /* 8-byte id + up to 40 bytes */
#define TOTAL_CAP 150000L /* messages over the whole run; senders pace themselves */
#endif
#define RUN_MS 1500

struct slot {
    long mtype;
    char mtext[SLOT_TEXT];
};

struct sender_log {
    long attempted;
    long confirmed;
};

struct shared {
    int stop;
    long long start_ms;
    long total_attempted;
    struct sender_log slog[MAX_SINST];
};

static struct shared *sh;
static struct slot *slots; /* MAX_RINST * SLOTS */
static int q;

static long make_id(int inst, long seq) { return (long)(inst + 1) * 100000 + seq; }
static long type_of(long id) { return 1 + id % 5; }
static int plen_of(long id) { return (int)(id % (SLOT_TEXT - 7)); }
static char pbyte(long id, int i) { return (char)(id * 37 + i + 1); }

static void child_setup(void) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    alarm(12);
}

static void sender(int inst) {
    child_setup();
    struct sender_log *log = &sh->slog[inst];
    struct slot m;
    for (long seq = 1; seq <= MAXSEQ; seq++) {
        /* pace: spread TOTAL_CAP messages over RUN_MS so the kills hit a busy queue */
        while (!__atomic_load_n(&sh->stop, __ATOMIC_SEQ_CST) &&
               __atomic_load_n(&sh->total_attempted, __ATOMIC_SEQ_CST) >=
                   TOTAL_CAP * (now_ms() - sh->start_ms) / RUN_MS)
            sleep_ms(1);
        if (__atomic_load_n(&sh->stop, __ATOMIC_SEQ_CST))
            _exit(0);
        long id = make_id(inst, seq);
        int len = plen_of(id);
        memset(&m, 0, sizeof m);
        m.mtype = type_of(id);
        memcpy(m.mtext, &id, 8);
        for (int i = 0; i < len; i++)
            m.mtext[8 + i] = pbyte(id, i);
        __atomic_add_fetch(&sh->total_attempted, 1, __ATOMIC_SEQ_CST);
        __atomic_store_n(&log->attempted, seq, __ATOMIC_SEQ_CST);
        if (msgsnd(q, &m, (size_t)(8 + len), 0) != 0) {
            fprintf(stderr, "  sender %d: msgsnd: %s\n", inst, strerror(errno));
            _exit(2);
        }
        __atomic_store_n(&log->confirmed, seq, __ATOMIC_SEQ_CST);
    }
    _exit(0);
}

static void receiver(int inst) {
    child_setup();
    struct slot *mine = slots + (size_t)inst * SLOTS;
    unsigned r = (unsigned)inst * 2654435761u;
    for (int n = 0; n < SLOTS; n++) {
        volatile struct slot *s = &mine[n];
        s->mtype = 0; /* fault the slot's pages in before the call */
        s->mtext[SLOT_TEXT - 1] = 0;
        r = r * 1103515245u + 12345u;
        /* mixed selectors; the selective ones do not block (a receiver waiting for a
         * type the full queue lacks would stall everybody), the fallback blocks */
        long sel;
        int flg = IPC_NOWAIT;
        switch ((r >> 16) % 4) {
        case 0: sel = 0; flg = 0; break;
        case 1: sel = -3; break;                  /* types 1..3, lowest first */
        case 2: sel = 4; flg |= MSG_EXCEPT; break; /* anything but 4 */
        default: sel = 4; break;                  /* only 4 */
        }
        long got = msgrcv(q, &mine[n], SLOT_TEXT, sel, flg);
        if (got < 0 && errno == ENOMSG && (flg & IPC_NOWAIT))
            got = msgrcv(q, &mine[n], SLOT_TEXT, 0, 0);
        if (got < 0) {
            fprintf(stderr, "  receiver %d: msgrcv: %s\n", inst, strerror(errno));
            _exit(2);
        }
    }
    _exit(0);
}

struct child {
    pid_t pid;
    int inst;
    int is_sender;
};

static int next_sinst, next_rinst, spawn_fail;

static void spawn(struct child *c, int is_sender) {
    c->is_sender = is_sender;
    c->pid = 0;
    if (is_sender ? next_sinst >= MAX_SINST : next_rinst >= MAX_RINST)
        return;
    c->inst = is_sender ? next_sinst++ : next_rinst++;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        if (is_sender)
            sender(c->inst);
        receiver(c->inst);
    }
    if (pid < 0)
        spawn_fail++;
    else
        c->pid = pid;
}

static int bad_exits;

/* status of a reaped child: killed by us, or exited 0 */
static void account_exit(struct child *c, int st, int killed_by_us) {
    if (killed_by_us && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)
        return;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return;
    fprintf(stderr, "  %s %d ended with status 0x%x\n", c->is_sender ? "sender" : "receiver", c->inst, st);
    bad_exits++;
}

static uint8_t cnt[MAX_SINST][MAXSEQ + 1];
static int dup_ids, bogus_ids, corrupt;

static void count_id(long id, long mtype, const char *text, long len) {
    long inst = id / 100000 - 1, seq = id % 100000;
    if (inst < 0 || inst >= next_sinst || seq < 1 || seq > MAXSEQ ||
        seq > sh->slog[inst].attempted) {
        if (bogus_ids++ < 5)
            fprintf(stderr, "  unexpected id %ld\n", id);
        return;
    }
    int plen = plen_of(id);
    int ok = mtype == type_of(id) && (len < 0 || len == 8 + plen);
    for (int i = 0; ok && i < plen; i++)
        ok = text[8 + i] == pbyte(id, i);
    for (int i = 8 + plen; ok && len < 0 && i < SLOT_TEXT; i++)
        ok = text[i] == 0;
    if (!ok && corrupt++ < 5)
        fprintf(stderr, "  message %ld corrupt\n", id);
    if (cnt[inst][seq]++ && dup_ids++ < 5)
        fprintf(stderr, "  id %ld received twice\n", id);
}

int main(void) {
    alarm(30);
    size_t slots_bytes = (size_t)MAX_RINST * SLOTS * sizeof(struct slot);
    sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    slots = mmap(NULL, slots_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    CHECK(sh != MAP_FAILED && slots != MAP_FAILED);
    if (sh == MAP_FAILED || slots == MAP_FAILED)
        return TEST_DONE();
    q = EXPECT_OK(msgget(IPC_PRIVATE, 0600));

    unsigned seed = (unsigned)getpid() * 2246822519u;
    sh->start_ms = now_ms();
    struct child kids[NSEND + NRECV];
    for (int i = 0; i < NSEND + NRECV; i++)
        spawn(&kids[i], i < NSEND);

    int skills = 0, rkills = 0;
    long long start = now_ms();
    while (now_ms() - start < RUN_MS) {
        sleep_ms(5 + (long)(seed >> 28)); /* 5..20 ms */
        seed = seed * 1103515245u + 12345u;
        /* replace children that finished on their own */
        for (int i = 0; i < NSEND + NRECV; i++) {
            int st;
            if (kids[i].pid > 0 && waitpid(kids[i].pid, &st, WNOHANG) == kids[i].pid) {
                account_exit(&kids[i], st, 0);
                spawn(&kids[i], kids[i].is_sender);
            }
        }
        /* kill one at random */
        int v = (int)((seed >> 16) % (NSEND + NRECV));
        if (kids[v].pid > 0) {
            int st;
            kill(kids[v].pid, SIGKILL);
            waitpid(kids[v].pid, &st, 0);
            account_exit(&kids[v], st, 1);
            if (kids[v].is_sender)
                skills++;
            else
                rkills++;
            spawn(&kids[v], kids[v].is_sender);
        }
    }

    /* stop: the receivers are killed first, so that the senders fill the queue for the
     * final drain; a sender still blocked on the full queue after a moment is killed */
    for (int i = NSEND; i < NSEND + NRECV; i++) {
        if (kids[i].pid > 0) {
            int st;
            kill(kids[i].pid, SIGKILL);
            waitpid(kids[i].pid, &st, 0);
            account_exit(&kids[i], st, 1);
        }
    }
    sleep_ms(50); /* the senders fill the queue and block */
    __atomic_store_n(&sh->stop, 1, __ATOMIC_SEQ_CST);
    long long end = now_ms() + 300;
    for (int i = 0; i < NSEND; i++) {
        int st = 0;
        pid_t r = 0;
        while (kids[i].pid > 0 && (r = waitpid(kids[i].pid, &st, WNOHANG)) == 0 && now_ms() < end)
            sleep_ms(2);
        if (kids[i].pid > 0 && r == 0) {
            kill(kids[i].pid, SIGKILL);
            waitpid(kids[i].pid, &st, 0);
            account_exit(&kids[i], st, 1);
        } else if (kids[i].pid > 0) {
            account_exit(&kids[i], st, 0);
        }
    }

    /* account: everything the receivers got, then whatever is left in the queue */
    long received = 0, drained = 0;
    for (int r = 0; r < next_rinst; r++) {
        struct slot *mine = slots + (size_t)r * SLOTS;
        for (int n = 0; n < SLOTS && mine[n].mtype != 0; n++) {
            long id;
            memcpy(&id, mine[n].mtext, 8);
            count_id(id, mine[n].mtype, mine[n].mtext, -1);
            received++;
        }
    }
    struct slot m;
    long n;
    while ((n = msgrcv(q, &m, SLOT_TEXT, 0, IPC_NOWAIT)) >= 0) {
        long id = 0;
        if (n >= 8)
            memcpy(&id, m.mtext, 8);
        count_id(id, m.mtype, m.mtext, n);
        drained++;
    }
    CHECK(errno == ENOMSG);

    long lost = 0, confirmed = 0, in_doubt = 0, doubt_arrived = 0;
    for (int s = 0; s < next_sinst; s++) {
        struct sender_log *log = &sh->slog[s];
        confirmed += log->confirmed;
        for (long seq = 1; seq <= log->confirmed; seq++)
            if (cnt[s][seq] != 1 && lost++ < 5)
                fprintf(stderr, "  confirmed id %ld received %d times\n", make_id(s, seq), cnt[s][seq]);
        if (log->attempted > log->confirmed) {
            in_doubt++;
            doubt_arrived += cnt[s][log->attempted];
        }
        CHECK(log->attempted - log->confirmed <= 1);
    }
    printf("# %d sender instances, %d receiver instances, %d/%d sender/receiver kills, "
           "%ld confirmed, %ld received, %ld drained, %ld in doubt (%ld of them arrived)\n",
           next_sinst, next_rinst, skills, rkills, confirmed, received, drained, in_doubt, doubt_arrived);

    CHECK(bad_exits == 0);
    CHECK(spawn_fail == 0);
    CHECK(dup_ids == 0);
    CHECK(bogus_ids == 0);
    CHECK(corrupt == 0);
    CHECK(lost == 0);
    /* the run did something */
    CHECK(skills >= 3 && rkills >= 3);
    CHECK(confirmed >= 1000 && received >= 1000);
    EXPECT_OK(msgctl(q, IPC_RMID, NULL));
    return TEST_DONE();
}
