# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The drill/incident report: the figures an operator is asked for, computed right, written safely."""

from __future__ import annotations

import json
import os
import stat

import pytest

from ansible_collections.cepcomunicacion.backup.plugins.module_utils import dr_report
from ansible_collections.cepcomunicacion.backup.plugins.module_utils.errors import BackupError

POINT = {'requested': 'newest verified', 'kind': 'database', 'created': '2026-11-29T02:00:00+00:00',
         'path': '/b/database/cepcomunicacion_2026-11-29_02-00-00.dump'}


def build(**extra):
    args = dict(scenario='database_corruption', host='db1', started='2026-11-29T09:00:00Z',
                finished='2026-11-29T09:02:00Z', smoke_passed='2026-11-29T09:01:12.5', recovery_point=POINT,
                phases=[{'name': 'preflight', 'start': '2026-11-29T09:00:00Z', 'end': '2026-11-29T09:00:10Z'},
                        {'name': 'restore', 'start': '2026-11-29T09:00:10Z', 'end': '2026-11-29T09:01:00Z'},
                        {'name': 'report', 'start': '2026-11-29T09:01:50Z'}])
    args.update(extra)
    return dr_report.build(**args)


def test_rto_age_window_and_phase_durations():
    report = build(disaster_time='2026-11-29T08:30:00Z')
    assert report['rto_seconds'] == 72.5 and report['rto'] == '1 min 12 s'
    assert report['elapsed_seconds'] == 120.0
    assert report['recovery_point']['age_seconds'] == 7 * 3600.0 and report['recovery_point']['age'] == '7 h 00 min 00 s'
    assert report['data_loss_window_seconds'] == 6.5 * 3600
    assert [(p['name'], p['duration_seconds']) for p in report['phases']] == [
        ('preflight', 10.0), ('restore', 50.0), ('report', 10.0)]  # an open phase ends at 'finished'
    assert report['skipped'] == []


def test_no_rto_without_smoke_tests_or_when_failed():
    report = build(smoke_passed=None)
    assert report['rto_seconds'] is None and report['rto'] == '-'
    assert report['skipped'][-1]['step'] == 'rto'
    failed = build(outcome='failed')
    assert failed['rto_seconds'] is None and failed['outcome'] == 'failed'


@pytest.mark.parametrize('before,after,lost,recovered,unreadable', [
    ({'a': 10, 'b': 5}, {'a': 8, 'b': 5}, {'a': 2}, {}, []),
    ({'a': 10}, {'a': 10, 'b': 3}, {}, {}, ['b']),  # b could not be read in the damaged database
    ({'a': 0, 'b': 7}, {'a': 4, 'b': 9}, {}, {'a': 4, 'b': 2}, []),
])
def test_rows_lost_versus_the_disaster(before, after, lost, recovered, unreadable):
    report = build(rows_before=before, rows_after=after)
    compared = report['data_lost']['vs_disaster']
    assert compared['rows_lost'] == lost and compared['rows_lost_total'] == sum(lost.values())
    assert compared['rows_recovered'] == recovered and compared['unreadable_before'] == unreadable


def test_not_measured_rows_add_nothing():
    assert 'vs_disaster' not in build(rows_before=None, rows_after={'a': 1})['data_lost']


@pytest.mark.parametrize('extra,message', [
    ({'started': ''}, 'started'),
    ({'started': 'yesterday'}, 'cannot read the time'),
    ({'scenario': ''}, 'scenario'),
    ({'outcome': 'fine'}, 'outcome'),
    ({'phases': [{'start': '2026-11-29T09:00:00Z'}]}, 'phase #1 has no name'),
])
def test_bad_input_is_named(extra, message):
    with pytest.raises(BackupError, match=message):
        build(**extra)


def test_markdown_has_the_headline_figures_and_escapes_cells():
    report = build(skipped=[{'step': 'HTTP smoke tests', 'reason': 'no app | url'}],
                   artifacts=[{'kind': 'database', 'path': POINT['path'], 'sha256': 'ab' * 32, 'verified': True}])
    text = dr_report.render_markdown(report)
    assert text.startswith('# Recovery report: database_corruption on db1')
    assert '| RTO (start of the playbook to the smoke tests passing) | **1 min 12 s** |' in text
    assert '| restore | 2026-11-29T09:00:10+00:00 | 2026-11-29T09:01:00+00:00 | 50.0 s |' in text
    assert 'ab' * 32 in text and 'no app \\| url' in text
    assert dr_report.render_markdown(build(outcome='planned')).startswith('# Recovery plan (check mode)')


def test_write_is_atomic_private_and_named_by_start_time(tmp_path):
    report = build()
    json_path, md_path = dr_report.write(str(tmp_path / 'log'), report)
    assert os.path.basename(json_path) == 'dr-database_corruption-2026-11-29_09-00-00.json'
    assert md_path == json_path[:-5] + '.md'
    with open(json_path) as handle:
        assert json.load(handle)['rto_seconds'] == 72.5
    assert stat.S_IMODE(os.stat(json_path).st_mode) == 0o600 == stat.S_IMODE(os.stat(md_path).st_mode)
    assert sorted(os.listdir(tmp_path / 'log')) == sorted([os.path.basename(json_path), os.path.basename(md_path)])
    with pytest.raises(BackupError, match='absolute'):
        dr_report.write('relative/dir', report)


def test_existing_report_directory_keeps_its_mode(tmp_path):
    log = tmp_path / 'log'
    log.mkdir()
    os.chmod(log, 0o755)
    dr_report.write(str(log), build())
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o755


def test_human_duration():
    assert [dr_report.human_duration(s) for s in (None, 0.04, 59.94, 61, 3725, -5)] == [
        '-', '0.0 s', '59.9 s', '1 min 01 s', '1 h 02 min 05 s', '-5.0 s']
