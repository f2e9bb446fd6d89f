"""Cron expressions as people write them (crontab's weekday numbers), as APScheduler triggers:
checked when the config is read, used by the daemon's schedule."""

from __future__ import annotations

import re
from typing import Any

_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _crontab_weekdays(field: str) -> str:
    """Crontab numbers weekdays from Sunday = 0 (and 7); APScheduler 3 from Monday = 0. Names
    mean the same to both, so numbers become names."""
    def name(m: re.Match[str]) -> str:
        n = int(m.group(0))
        if n > 7:
            raise ValueError(f"day of week {n} is not 0-7")
        return _WEEKDAYS[n]
    # Only numbers that are values (not the step of "*/2").
    return re.sub(r"(?<![/\d])\d+", name, field)


def cron_trigger(expr: str, timezone: Any = None) -> Any:
    """A CronTrigger from "minute hour day month day-of-week" (crontab), or with a leading
    seconds field (six fields). Raises ValueError on a bad expression."""
    from apscheduler.triggers.cron import CronTrigger

    fields = expr.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise ValueError(f"expected 5 fields (or 6 with seconds first), got {len(fields)}")
    second, minute, hour, day, month, dow = fields
    return CronTrigger(second=second, minute=minute, hour=hour, day=day, month=month,
                       day_of_week=_crontab_weekdays(dow), timezone=timezone)
