"""Timers: step timeouts, retry back-off and saga deadlines become messages when due.

A due timer becomes a ``timer`` message in the outbox addressed to the replies topic
(key = saga id), in the same transaction that deletes the timer row, so every state
change of a saga is made by the coordinator that owns its partition. On PostgreSQL the
claim uses ``FOR UPDATE SKIP LOCKED``, so several timer loops can run at once.
"""

from saga.timers._service import TimerService, timer_message

__all__ = ["TimerService", "timer_message"]
