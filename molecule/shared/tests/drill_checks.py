# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every DR drill checks after its playbook ran (imported by molecule/dr_*/tests/test_*.py).

The prepared image recorded the recovery point's state (per-table checksums, media manifest with modes
and owners) in POINT_FILE when it took the backups; molecule/shared/files/drill_state.py measures the
same now. ``host`` is pytest-testinfra's fixture (podman backend).
"""

from __future__ import annotations

import json

POINT_FILE = '/var/lib/cepcomunicacion-drill/point.json'
STATE_TOOL = '/usr/local/lib/cepcomunicacion-drill/drill_state.py'
PLATFORM = '/opt/cepcomunicacion'
REPORT_DIR = '/var/log/cepcomunicacion'
CRON_FILE = '/etc/cron.d/cepcomunicacion-backup'
APP = 'http://127.0.0.1:8080'


def run(host, command):
    result = host.run(command)
    assert result.rc == 0, '%s exited %d: %s %s' % (command, result.rc, result.stdout, result.stderr)
    return result.stdout


def point(host):
    return json.loads(host.file(POINT_FILE).content_string)


def state(host):
    return json.loads(run(host, 'python3 %s %s' % (STATE_TOOL, PLATFORM)))


def differences(expected, actual):
    """{key: (expected, actual)} for every key whose value differs or is missing on one side."""
    return {key: (expected.get(key), actual.get(key)) for key in sorted(set(expected) | set(actual))
            if expected.get(key) != actual.get(key)}


def assert_tables_equal_point(host, except_tables=()):
    expected = {k: v for k, v in point(host)['tables'].items() if k not in except_tables}
    actual = {k: v for k, v in state(host)['tables'].items() if k not in except_tables}
    diff = differences(expected, actual)
    assert not diff, 'tables differ from the recovery point: %s' % diff


def assert_media_equal_point(host):
    diff = differences(point(host)['media'], state(host)['media'])
    assert not diff, 'media differs from the recovery point (sha256, size, mode, owner): %s' % diff


def assert_app_answers(host):
    courses = json.loads(run(host, 'curl -fsS %s/courses' % APP))
    rows = point(host)['tables']['public.courses']['rows']
    listed = courses['courses'] if isinstance(courses, dict) and 'courses' in courses else courses
    assert len(listed) == rows, 'the app lists %d courses, the database holds %d' % (len(listed), rows)
    run(host, 'curl -fsS -o /dev/null %s/health' % APP)


def assert_schedule_present(host):
    cron = host.file(CRON_FILE)
    assert cron.exists, '%s is missing: the backup schedule was not re-enabled' % CRON_FILE
    jobs = [line for line in cron.content_string.splitlines()
            if line.strip() and not line.lstrip().startswith('#') and 'cepcomunicacion-backup' in line]
    assert len(jobs) >= 5, 'the schedule is not active again:\n%s' % cron.content_string
    assert host.service('cron').is_running


def report(host, scenario):
    listing = run(host, 'ls -1t %s' % REPORT_DIR).split()
    names = [name for name in listing if name.startswith('dr-%s-' % scenario) and name.endswith('.json')]
    assert names, 'no drill report dr-%s-*.json in %s (%s)' % (scenario, REPORT_DIR, listing)
    data = json.loads(host.file('%s/%s' % (REPORT_DIR, names[0])).content_string)
    markdown = '%s/%s' % (REPORT_DIR, names[0][:-len('.json')] + '.md')
    assert host.file(markdown).exists, '%s is missing' % markdown
    assert data['outcome'] == 'recovered', data
    assert data['rto_seconds'] > 0, data
    assert data['phases'] and all(phase.get('duration_seconds') is not None for phase in data['phases']), data
    return data
