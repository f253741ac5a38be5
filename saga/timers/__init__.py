"""Timers: step timeouts, retry back-off and saga deadlines become messages when due.

A due timer becomes a ``timer`` message in the outbox addressed to the replies topic
(key = saga id), in the same transaction that deletes the timer row, so every state
change of a saga is made by the coordinator that owns its partition. On PostgreSQL the
claim uses ``FOR UPDATE SKIP LOCKED``, so several timer loops can run at once.

The loop does not poll on a fixed beat: it sleeps until the earliest timer is due
(at least ``interval``, 100 ms, and at most ``max_interval``, 1 s, between two looks).
Commits through its store that set an earlier timer wake it at once, so the timers its
own coordinator sets fire on time; the look at least every ``max_interval`` finds the
timers other processes set. An idle coordinator thus runs about one timer query a
second instead of ten.
"""

from saga.timers._service import TimerService, timer_message

__all__ = ["TimerService", "timer_message"]
