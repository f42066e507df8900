# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Retention planning: a pure function from (artifacts, policy, now) to a plan.

Nothing here touches the disk, so every calendar case is unit-tested on
hand-built lists.  All times are UTC datetimes.

Rules, in order:

* an artifact dated in the future (beyond ``clock_skew``) is kept and flagged:
  it cannot be judged, and it never counts as the newest;
* the newest artifact of each tier that is not in the future is always kept:
  retention never removes the last good backup, however old it is;
* an artifact inside its tier's window is kept (daily: ``daily_days``,
  weekly: ``weekly_weeks``); a window of 0 means keep forever;
* with ``monthly_months`` > 0 the newest artifact of each of the last N
  calendar months (any tier) is kept as that month's representative;
* everything else is pruned.
"""

from __future__ import annotations

import datetime

TIERS = ('daily', 'weekly')


class Policy:
    def __init__(self, daily_days=30, weekly_weeks=12, monthly_months=0,
                 clock_skew=datetime.timedelta(minutes=5)):
        for label, value in (('daily_days', daily_days), ('weekly_weeks', weekly_weeks),
                             ('monthly_months', monthly_months)):
            if value is None or int(value) < 0:
                raise ValueError('%s must be 0 (keep forever) or a positive number, not %r' % (label, value))
        self.daily_days = int(daily_days)
        self.weekly_weeks = int(weekly_weeks)
        self.monthly_months = int(monthly_months)
        self.clock_skew = clock_skew

    def window(self, tier):
        if tier == 'weekly':
            return datetime.timedelta(weeks=self.weekly_weeks) if self.weekly_weeks else None
        return datetime.timedelta(days=self.daily_days) if self.daily_days else None


class Item:
    """What the planner needs of an artifact: a key, when it was made, its tier."""

    def __init__(self, key, created, tier='daily'):
        if created.tzinfo is None:
            raise ValueError('created must be timezone-aware (UTC): %r' % (key,))
        self.key = key
        self.created = created
        self.tier = tier

    def __repr__(self):
        return 'Item(%r, %s, %s)' % (self.key, self.created.isoformat(), self.tier)


class Plan:
    def __init__(self):
        self.keep = []
        self.prune = []
        self.reasons = {}

    def _add(self, target, item, reason):
        target.append(item.key)
        self.reasons[item.key] = reason


def _month_index(moment):
    return moment.year * 12 + moment.month - 1


def plan_prune(items, policy, now):
    """Return a :class:`Plan` with ``keep`` and ``prune`` lists of keys, oldest first."""
    items = sorted(items, key=lambda item: (item.created, str(item.key)))
    horizon = now + policy.clock_skew
    newest = {}
    for item in items:
        if item.created <= horizon:
            newest[item.tier] = item
    monthly = {}
    if policy.monthly_months:
        first_month = _month_index(now) - policy.monthly_months + 1
        for item in items:
            if item.created <= horizon and _month_index(item.created) >= first_month:
                monthly[_month_index(item.created)] = item
    monthly_keys = set(id(item) for item in monthly.values())

    plan = Plan()
    for item in items:
        window = policy.window(item.tier)
        if item.created > horizon:
            plan._add(plan.keep, item, 'dated in the future (clock skew?); kept, never counted as newest')
        elif newest.get(item.tier) is item:
            plan._add(plan.keep, item, 'newest %s backup; the last good backup is never pruned' % item.tier)
        elif window is None:
            plan._add(plan.keep, item, '%s retention is 0 (keep forever)' % item.tier)
        elif item.created >= now - window:
            plan._add(plan.keep, item, 'inside the %s window' % item.tier)
        elif id(item) in monthly_keys:
            plan._add(plan.keep, item, 'monthly representative of %s' % item.created.strftime('%Y-%m'))
        else:
            plan._add(plan.prune, item, 'older than the %s window' % item.tier)
    return plan
