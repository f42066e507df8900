# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Prometheus textfile: standard names, valid exposition, atomic write."""

from __future__ import annotations

import datetime
import os

import pytest

from ansible_collections.cepcomunicacion.backup.plugins.module_utils import metrics

DOCUMENT = {
    'jobs': {'database': {'exit_code': 0, 'last_run': '2026-11-29T02:00:00+00:00',
                          'last_success': '2026-11-29T02:00:00+00:00', 'duration': 4.5},
             'media': {'exit_code': 2, 'last_run': '2026-11-29T03:00:00+00:00'}},
    'check': {'health': 'warning', 'last_run': '2026-11-29T06:00:00+00:00', 'duration': 1.25,
              'kinds': {'database': {'created': '2026-11-29T02:00:00+00:00', 'size': 2191795, 'count': 3,
                                     'max_age_hours': 24.0},
                        'off"site': {'last_success': '2026-11-29T04:00:00+00:00', 'max_age_hours': 26.0}},
              'findings': [{'severity': 'ok'}, {'severity': 'warning'}],
              'disk': {'used_percent': 42.5, 'available_bytes': 1000},
              'restore_test': {'result': 'failed', 'duration': 3.0, 'finished': '2026-11-29T05:00:00+00:00'},
              'alerts': {'failed_last_run': 1}},
}


def stamp(text):
    return datetime.datetime.fromisoformat(text).timestamp()


def samples(text):
    parser = pytest.importorskip('prometheus_client.parser')
    found = {}
    for family in parser.text_string_to_metric_families(text):
        assert family.type == 'gauge'
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_render_is_valid_exposition_with_standard_names():
    found = samples(metrics.render(DOCUMENT))
    assert found[('cepcomunicacion_backup_last_success_timestamp_seconds', (('kind', 'database'),))] == stamp('2026-11-29T02:00:00+00:00')
    assert found[('cepcomunicacion_backup_size_bytes', (('kind', 'database'),))] == 2191795
    assert found[('cepcomunicacion_backup_duration_seconds', (('kind', 'database'),))] == 4.5  # from the job
    assert found[('cepcomunicacion_backup_last_success_timestamp_seconds', (('kind', 'off"site'),))] == stamp('2026-11-29T04:00:00+00:00')
    assert found[('cepcomunicacion_backup_job_last_exit_code', (('job', 'media'),))] == 2
    assert found[('cepcomunicacion_backup_health_status', ())] == 1
    assert found[('cepcomunicacion_backup_healthy', ())] == 0
    assert found[('cepcomunicacion_backup_check_findings', (('severity', 'warning'),))] == 1
    assert found[('cepcomunicacion_backup_restore_test_success', ())] == 0
    assert found[('cepcomunicacion_backup_disk_used_ratio', ())] == 0.425
    assert found[('cepcomunicacion_backup_alert_delivery_failures', ())] == 1


def test_help_and_type_once_per_metric():
    text = metrics.render(DOCUMENT)
    assert text.count('# TYPE cepcomunicacion_backup_size_bytes gauge') == 1
    assert text.endswith('\n')


def test_empty_document_renders_nothing_harmful():
    assert samples(metrics.render({'jobs': {}})) == {}


def test_write_is_atomic_and_world_readable(tmp_path):
    path = str(tmp_path / 'textfile' / 'backup.prom')
    metrics.write(path, DOCUMENT)
    metrics.write(path, DOCUMENT)
    assert os.listdir(str(tmp_path / 'textfile')) == ['backup.prom']
    assert os.stat(path).st_mode & 0o777 == 0o644
