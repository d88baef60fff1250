/* msg_chaos with texts of 8 to 1024 bytes: most are long enough that ipcshim's senders
 * write them into their stash before taking the queue's lock and its receivers read them
 * ahead of it (src/msg/client.rs), so the kills also land in those windows. */
#define SLOTS 1000
#define SLOT_TEXT 1024
#define TOTAL_CAP 50000L
#include "msg_chaos.c"
