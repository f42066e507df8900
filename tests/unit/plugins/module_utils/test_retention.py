# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The retention planner on hand-built calendars (UTC, no DST)."""

from __future__ import annotations

import datetime

import pytest

from ansible_collections.cepcomunicacion.backup.plugins.module_utils.retention import Item, Policy, plan_prune

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 11, 29, 2, 0, 0, tzinfo=UTC)


def daily(days_ago, hours=0):
    moment = NOW - datetime.timedelta(days=days_ago, hours=hours)
    return Item('d-%s' % moment.strftime('%Y-%m-%dT%H'), moment, 'daily')


def weekly(weeks_ago):
    moment = NOW - datetime.timedelta(weeks=weeks_ago)
    return Item('w-%d' % weeks_ago, moment, 'weekly')


def test_daily_window_keeps_exactly_thirty_days():
    items = [daily(n) for n in range(0, 40)]
    plan = plan_prune(items, Policy(daily_days=30), NOW)
    assert plan.prune == ['d-%s' % (NOW - datetime.timedelta(days=n)).strftime('%Y-%m-%dT%H') for n in range(39, 30, -1)]
    assert len(plan.keep) == 31  # day 0 .. day 30 inclusive: the boundary is kept


def test_boundary_one_second_outside_is_pruned():
    inside = Item('inside', NOW - datetime.timedelta(days=7), 'daily')
    outside = Item('outside', NOW - datetime.timedelta(days=7, seconds=1), 'daily')
    newest = Item('newest', NOW, 'daily')
    plan = plan_prune([outside, inside, newest], Policy(daily_days=7), NOW)
    assert plan.prune == ['outside']
    assert plan.keep == ['inside', 'newest']


def test_newest_is_never_pruned_even_when_older_than_window():
    items = [daily(90), daily(60), daily(45)]
    plan = plan_prune(items, Policy(daily_days=30), NOW)
    assert plan.keep == [items[2].key]
    assert plan.prune == [items[0].key, items[1].key]
    assert 'never pruned' in plan.reasons[items[2].key]


def test_single_ancient_backup_survives():
    only = daily(400)
    assert plan_prune([only], Policy(daily_days=1), NOW).prune == []


def test_future_dated_backup_is_kept_but_not_counted_as_newest():
    future = Item('future', NOW + datetime.timedelta(days=3), 'daily')
    real_newest = daily(40)
    older = daily(50)
    plan = plan_prune([future, real_newest, older], Policy(daily_days=30), NOW)
    assert 'future' in plan.keep
    assert real_newest.key in plan.keep, 'the real newest backup must survive a clock-skewed one'
    assert plan.prune == [older.key]


def test_small_clock_skew_counts_as_present():
    slightly_ahead = Item('ahead', NOW + datetime.timedelta(minutes=2), 'daily')
    old = daily(40)
    plan = plan_prune([slightly_ahead, old], Policy(daily_days=30), NOW)
    assert plan.prune == [old.key]


def test_weekly_tier_uses_weeks_and_is_independent_of_daily():
    items = [weekly(n) for n in range(0, 15)] + [daily(0), daily(31)]
    plan = plan_prune(items, Policy(daily_days=30, weekly_weeks=12), NOW)
    assert sorted(plan.prune) == sorted(['w-13', 'w-14', daily(31).key])


def test_zero_means_keep_forever():
    items = [daily(n * 100) for n in range(5)]
    assert plan_prune(items, Policy(daily_days=0), NOW).prune == []


def test_monthly_representatives_are_kept():
    items = [Item('m%d-%d' % (month, day), datetime.datetime(2026, month, day, 2, tzinfo=UTC), 'daily')
             for month in (8, 9, 10) for day in (1, 15, 28)]
    plan = plan_prune(items + [daily(0)], Policy(daily_days=7, monthly_months=3), NOW)
    # newest of September and October are monthly representatives; August is outside 3 months
    assert 'm10-28' in plan.keep and 'm9-28' in plan.keep
    assert 'm8-28' not in plan.keep
    assert 'm10-1' in plan.prune


def test_leap_day_and_year_end():
    now = datetime.datetime(2029, 1, 1, 0, 0, tzinfo=UTC)
    leap = Item('leap', datetime.datetime(2028, 2, 29, tzinfo=UTC), 'daily')
    dec = Item('dec', datetime.datetime(2028, 12, 31, tzinfo=UTC), 'daily')
    plan = plan_prune([leap, dec], Policy(daily_days=30), now)
    assert plan.prune == ['leap'] and plan.keep == ['dec']


@pytest.mark.parametrize('bad', [-1, None])
def test_policy_rejects_negative(bad):
    with pytest.raises(ValueError):
        Policy(daily_days=bad)


def test_naive_datetime_rejected():
    with pytest.raises(ValueError):
        Item('x', datetime.datetime(2026, 1, 1), 'daily')
