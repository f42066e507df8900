# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import datetime

import pytest

from ansible_collections.cepcomunicacion.backup.plugins.module_utils import layout

UTC = datetime.timezone.utc


@pytest.mark.parametrize('kind,name,expected', [
    ('database', 'cepcomunicacion_2026-11-29_02-00-00.dump', datetime.datetime(2026, 11, 29, 2, tzinfo=UTC)),
    ('database', 'cepcomunicacion_2026-11-29_02-00-00.dump.zst', datetime.datetime(2026, 11, 29, 2, tzinfo=UTC)),
    ('database_weekly', 'cepcomunicacion_weekly_2026-W48.dump', datetime.datetime(2026, 11, 23, tzinfo=UTC)),
    ('database_weekly', 'cepcomunicacion_weekly_2021-W01.dump', datetime.datetime(2021, 1, 4, tzinfo=UTC)),
    ('config', 'config_2026-11-29_02-30-00.tar.gz', datetime.datetime(2026, 11, 29, 2, 30, tzinfo=UTC)),
    ('media', '2026-11-29_03-00-00', datetime.datetime(2026, 11, 29, 3, tzinfo=UTC)),
])
def test_names_parse(kind, name, expected):
    assert layout.KINDS[kind].parse(name)[1] == expected


@pytest.mark.parametrize('kind,name', [
    ('database', 'cepcomunicacion_2026-11-29_02-00-00.dump.sha256'),
    ('database', '.tmp-cepcomunicacion_2026-11-29_02-00-00.dump.123'),
    ('database', 'notes.txt'),
    ('media', 'latest'),
    ('config', 'config_2026-11-29.tar.gz'),
])
def test_other_names_are_not_artifacts(kind, name):
    assert layout.KINDS[kind].parse(name) is None


def test_names_round_trip():
    moment = datetime.datetime(2027, 1, 3, 23, 59, 59, tzinfo=UTC)  # ISO week 53 of 2026
    assert layout.database_dump_name('database', moment) == 'cepcomunicacion_2027-01-03_23-59-59.dump'
    assert layout.database_dump_name('database_weekly', moment) == 'cepcomunicacion_weekly_2026-W53.dump'
    assert layout.database_dump_name('database', moment, zstd=True).endswith('.dump.zst')


@pytest.mark.parametrize('text', ['2026-11-29T02:00:00Z', '2026-11-29 02:00', '2026-11-29T03:00:00+01:00',
                                  '2026-11-29_02-00-00'])
def test_parse_time_is_utc(text):
    assert layout.parse_time(text) == datetime.datetime(2026, 11, 29, 2, tzinfo=UTC)


def test_parse_time_rejects_garbage_with_hint():
    with pytest.raises(ValueError, match='UTC ISO 8601'):
        layout.parse_time('yesterday')
