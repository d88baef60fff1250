/* msg_chaos with texts of 8 to 4096 bytes: ipcshim's messages then take one to four
 * 1 KiB blocks, so a freed slot often keeps a chain of another length than the next
 * message needs, and once the queue's memory has all been handed out, the chains free
 * slots kept are gathered back (src/msg/layout.rs `release_kept_texts`) while processes
 * are killed around them. */
#define SLOTS 250
#define SLOT_TEXT 4096
#define TOTAL_CAP 20000L
#include "msg_chaos.c"
