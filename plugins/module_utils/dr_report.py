# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Drill and incident reports of the disaster-recovery playbooks.

The playbooks collect facts as they go (when each phase started and ended,
the recovery point chosen, what each module returned); :func:`build` turns
them into one report with the figures an operator is asked for afterwards:
the RTO (start of the playbook to the smoke tests passing), the age of the
recovery point, the data-loss window, each phase's duration and every step
that was skipped.  :func:`render_markdown` makes the human version and
:func:`write` stores both, atomically, next to the backup logs.
"""

from __future__ import annotations

import os

from ansible_collections.cepcomunicacion.backup.plugins.module_utils.errors import BackupError
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import artifact as artifact_io
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import layout

OUTCOMES = ('recovered', 'failed', 'planned')
REPORT_PREFIX = 'dr'


def _time(value, what):
    if value is None or value == '':
        return None
    try:
        return layout.parse_time(value)
    except ValueError as exc:
        raise BackupError('%s: %s' % (what, exc), reason='bad_time')


def _seconds(start, end):
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


def human_duration(seconds):
    """'1 h 02 min 03 s', '4 min 05 s', '12.3 s'; '-' for unknown."""
    if seconds is None:
        return '-'
    negative = seconds < 0
    seconds = abs(seconds)
    if seconds < 60:
        text = '%.1f s' % seconds
    else:
        whole = int(round(seconds))
        hours, rest = divmod(whole, 3600)
        minutes, secs = divmod(rest, 60)
        text = ('%d h %02d min %02d s' % (hours, minutes, secs)) if hours else ('%d min %02d s' % (minutes, secs))
    return '-' + text if negative else text


def build_phases(phases, finished):
    """Phases with start/end as ISO strings and their duration; an unfinished phase ends at ``finished``."""
    built = []
    for index, phase in enumerate(phases or []):
        if not isinstance(phase, dict) or not phase.get('name'):
            raise BackupError('phase #%d has no name: each phase is {name, start, end}' % (index + 1),
                              reason='bad_phase')
        start = _time(phase.get('start'), 'phase %s start' % phase['name'])
        end = _time(phase.get('end'), 'phase %s end' % phase['name']) or finished
        entry = {'name': phase['name'], 'start': start.isoformat() if start else None,
                 'end': end.isoformat() if end else None, 'duration_seconds': _seconds(start, end)}
        if phase.get('status'):
            entry['status'] = phase['status']
        built.append(entry)
    return built


def compare_rows(before, after):
    """Rows per table in what was replaced (``before``, at the disaster) versus after the recovery.

    By row count: ``lost`` is what the replaced data had beyond the recovered data (rows written after the
    recovery point), ``recovered`` what the recovery brought back (dropped or emptied tables); a table that
    could not be read before is listed in ``unreadable_before``.
    """
    before = dict((k, int(v)) for k, v in (before or {}).items())
    after = dict((k, int(v)) for k, v in (after or {}).items())
    lost, recovered = {}, {}
    for table in sorted(set(before) | set(after)):
        difference = before.get(table, 0) - after.get(table, 0)
        if table not in before:
            continue
        if difference > 0:
            lost[table] = difference
        elif difference < 0:
            recovered[table] = -difference
    return {
        'rows_lost': lost,
        'rows_lost_total': sum(lost.values()),
        'rows_recovered': recovered,
        'rows_recovered_total': sum(recovered.values()),
        'unreadable_before': sorted(set(after) - set(before)),
        'method': 'row counts per table: replaced database versus recovered database',
    }


def build(scenario, host, started, finished=None, smoke_passed=None, recovery_point=None, artifacts=None,
          phases=None, disaster_time=None, data_lost=None, results=None, skipped=None, outcome='recovered',
          check_mode=False, rows_before=None, rows_after=None, now=None):
    """The report document (a dict that serialises to JSON)."""
    if not scenario:
        raise BackupError('a scenario name is required for the report', reason='bad_input')
    if outcome not in OUTCOMES:
        raise BackupError('outcome must be one of %s, not %r' % (', '.join(OUTCOMES), outcome), reason='bad_input')
    now = now or layout.utcnow()
    started_at = _time(started, 'started')
    if started_at is None:
        raise BackupError('started (when the playbook began, UTC) is required to measure the RTO', reason='bad_input')
    finished_at = _time(finished, 'finished') or now
    smoke_at = _time(smoke_passed, 'smoke_passed')
    disaster_at = _time(disaster_time, 'disaster_time')
    point = dict(recovery_point or {})
    point_created = _time(point.get('created'), 'recovery_point.created')
    if point_created is not None:
        point['created'] = point_created.isoformat()
        point['age_seconds'] = _seconds(point_created, started_at)
        point['age'] = human_duration(point['age_seconds'])
    rto = _seconds(started_at, smoke_at) if outcome == 'recovered' else None
    report = {
        'format': 'cepcomunicacion-dr-report',
        'version': 1,
        'scenario': scenario,
        'host': host,
        'outcome': outcome,
        'check_mode': bool(check_mode),
        'started': started_at.isoformat(),
        'finished': finished_at.isoformat(),
        'smoke_passed': smoke_at.isoformat() if smoke_at else None,
        'rto_seconds': rto,
        'rto': human_duration(rto),
        'rto_definition': 'start of the playbook to the smoke tests passing',
        'elapsed_seconds': _seconds(started_at, finished_at),
        'recovery_point': point,
        'disaster_time': disaster_at.isoformat() if disaster_at else None,
        'data_loss_window_seconds': _seconds(point_created, disaster_at),
        'data_loss_window': human_duration(_seconds(point_created, disaster_at)),
        'artifacts': list(artifacts or []),
        'phases': build_phases(phases, finished_at),
        'data_lost': dict(data_lost or {}),
        'results': dict(results or {}),
        'skipped': [dict(step) for step in (skipped or [])],
    }
    if rows_before is not None and rows_after:
        report['data_lost']['vs_disaster'] = compare_rows(rows_before, rows_after)
    if outcome == 'recovered' and smoke_at is None:
        report['skipped'].append({'step': 'rto', 'reason': 'the smoke tests did not run, so no RTO was measured'})
    return report


def _cell(value):
    if value is None:
        return '-'
    if isinstance(value, (dict, list)):
        text = ', '.join('%s: %s' % (k, _cell(v)) for k, v in sorted(value.items())) if isinstance(value, dict) \
            else ', '.join(_cell(v) for v in value)
        return text or '-'
    return str(value).replace('|', '\\|').replace('\n', ' ')


def render_markdown(report):
    """The report for people: the headline figures first, then the details."""
    point = report.get('recovery_point') or {}
    title = {'recovered': 'Recovery report', 'failed': 'FAILED recovery report', 'planned': 'Recovery plan (check mode)'}
    lines = [
        '# %s: %s on %s' % (title[report['outcome']], report['scenario'], report['host'] or '-'),
        '',
        '| | |',
        '|---|---|',
        '| outcome | **%s** |' % report['outcome'],
        '| RTO (%s) | **%s** |' % (report['rto_definition'], report['rto']),
        '| started / finished (UTC) | %s / %s |' % (report['started'], report['finished']),
        '| recovery point | %s |' % _cell(point.get('path') or point.get('name')),
        '| recovery point created (UTC) | %s (age at start: %s) |' % (
            _cell(point.get('created')), point.get('age', '-')),
        '| requested | %s |' % _cell(point.get('requested')),
        '| disaster time (UTC) | %s |' % _cell(report['disaster_time']),
        '| data-loss window (recovery point to disaster) | %s |' % report['data_loss_window'],
        '',
        '## Phases',
        '',
        '| phase | start (UTC) | end (UTC) | duration |',
        '|---|---|---|---|',
    ]
    for phase in report['phases']:
        lines.append('| %s | %s | %s | %s |' % (_cell(phase['name']), _cell(phase['start']), _cell(phase['end']),
                                                human_duration(phase['duration_seconds'])))
    lines += ['', '## Artifacts used', '']
    if report['artifacts']:
        lines += ['| kind | path | sha256 | verified |', '|---|---|---|---|']
        for item in report['artifacts']:
            lines.append('| %s | %s | %s | %s |' % (_cell(item.get('kind')), _cell(item.get('path')),
                                                    _cell(item.get('sha256')), _cell(item.get('verified'))))
    else:
        lines.append('None.')
    lines += ['', '## Data lost', '']
    if report['data_lost']:
        for key, value in sorted(report['data_lost'].items()):
            lines.append('- **%s**: %s' % (key, _cell(value)))
    else:
        lines.append('Not measured.')
    lines += ['', '## Results', '']
    if report['results']:
        for key, value in sorted(report['results'].items()):
            lines.append('- **%s**: %s' % (key, _cell(value)))
    else:
        lines.append('None.')
    lines += ['', '## Steps skipped', '']
    if report['skipped']:
        for step in report['skipped']:
            lines.append('- %s: %s' % (_cell(step.get('step')), _cell(step.get('reason'))))
    else:
        lines.append('None.')
    return '\n'.join(lines) + '\n'


def report_paths(report_dir, report):
    """``<report_dir>/dr-<scenario>-<YYYY-MM-DD_HH-MM-SS>.json`` and ``.md`` (named by the start time)."""
    stamp = layout.format_timestamp(layout.parse_time(report['started']))
    base = os.path.join(report_dir, '%s-%s-%s' % (REPORT_PREFIX, report['scenario'], stamp))
    return base + '.json', base + '.md'


def write(report_dir, report, mode=layout.FILE_MODE):
    """Write the JSON and Markdown reports atomically (the directory is created 0700 if missing)."""
    if not os.path.isabs(report_dir):
        raise BackupError('report_dir %r must be an absolute path' % report_dir, reason='bad_input')
    if not os.path.isdir(report_dir):  # an existing directory (the log directory) keeps its mode
        artifact_io.ensure_directory(report_dir)
    json_path, markdown_path = report_paths(report_dir, report)
    artifact_io.write_json_atomic(json_path, report, mode)
    artifact_io.write_file_atomic(markdown_path, render_markdown(report), mode)
    return json_path, markdown_path
