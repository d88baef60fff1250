//! System V message queues (not yet implemented).
