"""Calendar periods in the units the code uses them in: seconds (``*_S``) and milliseconds (``*_MS``).

One spelling for the whole package tree (a day used to be ``DAY_S``, ``DAY_MS`` and
``86_400_000`` in three places).
"""

from __future__ import annotations

MINUTE_S = 60
HOUR_S = 3_600
DAY_S = 86_400
WEEK_S = 7 * DAY_S
MS_PER_S = 1_000
DAY_MS = DAY_S * MS_PER_S
WEEK_MS = WEEK_S * MS_PER_S
