//! System V semaphore sets (not yet implemented).
