# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Prometheus textfile for node_exporter's textfile collector, rendered from the status document.

Written atomically (temporary name in the same directory, fsync, rename) so
the collector never reads half a file; mode 0644 because node_exporter runs
as its own user and the file holds no secret.  Every metric is a gauge named
``cepcomunicacion_backup_<what>_<unit>`` with base units (seconds, bytes)::

    cepcomunicacion_backup_last_success_timestamp_seconds{kind="database"} 1764381600
    cepcomunicacion_backup_size_bytes{kind="database"} 2191795
    cepcomunicacion_backup_health_status 0
"""

from __future__ import annotations

import os

from ansible_collections.cepcomunicacion.backup.plugins.module_utils import artifact as artifact_io
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import layout

PREFIX = 'cepcomunicacion_backup'
FILE_MODE = 0o644
SEVERITY_VALUE = {'ok': 0, 'warning': 1, 'critical': 2}


def escape(value):
    return str(value).replace('\\', '\\\\').replace('\n', '\\n').replace('"', '\\"')


def _timestamp(value):
    if not value:
        return None
    try:
        return layout.parse_time(value).timestamp()
    except ValueError:
        return None


class Exposition:
    """Collects samples and renders the text exposition format, HELP and TYPE once per metric."""

    def __init__(self):
        self.metrics = []
        self.samples = {}
        self.help = {}

    def gauge(self, name, help_text, value, **labels):
        if value is None:
            return
        full = '%s_%s' % (PREFIX, name)
        if full not in self.samples:
            self.metrics.append(full)
            self.samples[full] = []
            self.help[full] = help_text
        self.samples[full].append((labels, float(value)))

    def render(self):
        lines = []
        for name in self.metrics:
            lines.append('# HELP %s %s' % (name, self.help[name].replace('\\', '\\\\').replace('\n', ' ')))
            lines.append('# TYPE %s gauge' % name)
            for labels, value in self.samples[name]:
                label_text = ','.join('%s="%s"' % (key, escape(labels[key])) for key in sorted(labels))
                lines.append('%s%s %s' % (name, '{%s}' % label_text if label_text else '', _number(value)))
        return '\n'.join(lines) + '\n'


def _number(value):
    if value == int(value) and abs(value) < 1e15:
        return '%d' % value
    return repr(value)


def render(document, now=None):
    """The textfile for one status document (its ``jobs`` and ``check`` sections)."""
    now = now or layout.utcnow()
    out = Exposition()
    check = document.get('check') or {}
    jobs = document.get('jobs') or {}
    for kind, summary in sorted((check.get('kinds') or {}).items()):
        created = _timestamp(summary.get('created') or summary.get('last_success'))
        out.gauge('last_success_timestamp_seconds', 'Unix time of the newest complete backup of each kind '
                  '(offsite: the last successful offsite copy).', created, kind=kind)
        out.gauge('size_bytes', 'Size of the newest backup of each kind.', summary.get('size'), kind=kind)
        duration = summary.get('duration')
        if duration is None and isinstance(jobs.get(kind), dict):
            duration = jobs[kind].get('duration')
        out.gauge('duration_seconds', 'How long the newest backup of each kind took.', duration, kind=kind)
        out.gauge('artifacts', 'Number of complete backups of each kind on the backup filesystem.',
                  summary.get('count'), kind=kind)
        out.gauge('max_age_seconds', 'Freshness limit of each kind.',
                  summary['max_age_hours'] * 3600 if summary.get('max_age_hours') is not None else None, kind=kind)
    for job, entry in sorted(jobs.items()):
        if not isinstance(entry, dict):
            continue
        out.gauge('job_last_exit_code', 'Exit status of the last run of each job (0 success).',
                  entry.get('exit_code'), job=job)
        out.gauge('job_last_run_timestamp_seconds', 'Unix time the last run of each job started.',
                  _timestamp(entry.get('last_run')), job=job)
        out.gauge('job_last_success_timestamp_seconds', 'Unix time of the last successful run of each job.',
                  _timestamp(entry.get('last_success')), job=job)
    if check:
        out.gauge('health_status', 'Overall backup health: 0 ok, 1 warning, 2 critical.',
                  SEVERITY_VALUE.get(check.get('health'), 2))
        out.gauge('healthy', '1 when every check passed, else 0.', 1 if check.get('health') == 'ok' else 0)
        counts = dict((severity, 0) for severity in SEVERITY_VALUE)
        for finding in check.get('findings') or []:
            counts[finding.get('severity', 'critical')] = counts.get(finding.get('severity', 'critical'), 0) + 1
        for severity in SEVERITY_VALUE:
            out.gauge('check_findings', 'Findings of the last check by severity.', counts[severity], severity=severity)
        out.gauge('check_timestamp_seconds', 'Unix time of the last health check.', _timestamp(check.get('last_run')))
        out.gauge('check_duration_seconds', 'How long the last health check took.', check.get('duration'))
        disk = check.get('disk') or {}
        if disk.get('used_percent') is not None:
            out.gauge('disk_used_ratio', 'Used fraction of the backup filesystem.', disk['used_percent'] / 100.0)
        out.gauge('disk_available_bytes', 'Bytes available on the backup filesystem.', disk.get('available_bytes'))
        restore = check.get('restore_test') or {}
        if restore.get('result'):
            out.gauge('restore_test_success', '1 when the last restore test restored the newest dump, else 0.',
                      1 if restore['result'] == 'ok' else 0)
            out.gauge('restore_test_duration_seconds', 'How long the last restore test took.', restore.get('duration'))
            out.gauge('restore_test_timestamp_seconds', 'Unix time the last restore test finished.',
                      _timestamp(restore.get('finished')))
        alerts = check.get('alerts') or {}
        out.gauge('alert_delivery_failures', 'Alert deliveries that failed in the last check.',
                  alerts.get('failed_last_run', 0))
    return out.render()


def write(path, document, now=None):
    """Render and write the textfile atomically; returns the path."""
    directory = os.path.dirname(path) or '.'
    if not os.path.isdir(directory):
        artifact_io.ensure_directory(directory, 0o755)
    artifact_io.write_file_atomic(path, render(document, now), FILE_MODE)
    return path
