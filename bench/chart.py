# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""docs/benchmarks/benchmarks.png: drill RTOs and the backup/restore timings side by side with the peers.

Drawn from the same JSON as docs/BENCHMARKS.md, with matplotlib's headless Agg backend
(bench/requirements.txt; `make bench` installs it into the venv).
"""

from __future__ import annotations

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=wrong-import-position

OURS = '#1f77b4'
PEER = '#bbbbbb'
TARGET = '#d62728'

OUR_NAMES = ('pg_backup', 'pg_restore module', 'media_backup', 'offsite_sync', 'backup_check', 'deep verify',
             'database_corruption', 'of which')


def is_ours(name):
    return name.startswith(OUR_NAMES)


def short(name, width=52):
    return name if len(name) <= width else name[:width - 1] + '…'


def bars(axis, title, items, unit='s', target=None, target_label=None):
    """Horizontal bars, top to bottom in the order given; items: (label, value, ours)."""
    items = [item for item in items if item[1] is not None]
    labels = [short(label) for label, _value, _ours in items]
    values = [value for _label, value, _ours in items]
    colours = [OURS if ours else PEER for _label, _value, ours in items]
    positions = list(range(len(items)))[::-1]
    axis.barh(positions, values, color=colours, edgecolor='#333333', linewidth=0.4)
    axis.set_yticks(positions)
    axis.set_yticklabels(labels, fontsize=7)
    axis.set_title(title, fontsize=9, loc='left')
    axis.tick_params(axis='x', labelsize=7)
    axis.set_xlabel(unit, fontsize=7)
    peak = max(values + [target or 0]) if values else 1
    for position, value in zip(positions, values):
        axis.text(value + peak * 0.01, position, '%.1f' % value, va='center', fontsize=6)
    if target is not None:
        axis.axvline(target, color=TARGET, linestyle='--', linewidth=1)
        axis.text(target, -0.45, ' ' + (target_label or 'target'), color=TARGET, fontsize=6, va='bottom')
    axis.set_xlim(0, peak * 1.15)


def panels(sections, drills):
    """(title, items, kwargs) per panel, from the sections present."""
    out = []
    if drills or 'dr' in sections:
        items = []
        dr = sections.get('dr')
        if dr:
            items.append(('database_corruption, %s, localhost (bench)' % dr['data'].split(' generated')[0],
                          dr['rto_seconds'], True))
            items.append(('of which the restore phase', dr['restore_phase_seconds'], True))
        for scenario, figures in sorted(drills.items()):
            items.append(('%s (%s)' % (scenario, figures.get('note', 'drill')), figures.get('rto_seconds'), True))
        out.append(('Disaster recovery RTO (start of playbook to smoke tests passing)', items,
                    {'target': dr['rto_target_seconds'] if dr else 120,
                     'target_label': 'target %d s' % (dr['rto_target_seconds'] if dr else 120)}))
    if 'database' in sections:
        out.append(('Database backup, %s' % sections['database']['data'].split(' (')[0],
                    [(row['name'], row['seconds'], is_ours(row['name'])) for row in sections['database']['rows']], {}))
    if 'restore' in sections:
        out.append(('Database restore', [(row['name'], row['seconds'], is_ours(row['name']))
                                         for row in sections['restore']['rows']], {}))
    if 'pgbackrest' in sections:
        section = sections['pgbackrest']
        out.append(('vs pgBackRest: full backup', [(row['name'], row['seconds'], row['tool'] == 'pg_backup')
                                                   for row in section['backups']], {}))
        out.append(('vs pgBackRest: restore (until the database is usable)',
                    [(row['name'], row['seconds'], row['tool'] == 'pg_restore module') for row in section['restores']],
                    {}))
    if 'media' in sections:
        out.append(('Media snapshots (first, unchanged, 1% changed)',
                    [('%s: %s' % (row['tool'], row['phase']), row['seconds'], row['tool'] == 'media_backup')
                     for row in sections['media']['rows']], {}))
    if 'offsite' in sections:
        out.append(('Offsite push to S3 (moto on loopback)',
                    [(row['name'], row['seconds'], is_ours(row['name'])) for row in sections['offsite']['rows']], {}))
    if 'verify' in sections:
        out.append(('Deep verify vs sha256sum -c',
                    [(row['name'], row['seconds'], is_ours(row['name'])) for row in sections['verify']['rows']], {}))
    return out


def draw(sections, drills, path):
    """Write the chart to ``path``; ``sections`` maps a section name to its JSON, ``drills`` is drills.json."""
    found = panels(sections, drills)
    if not found:
        return False
    columns = 2
    rows = (len(found) + columns - 1) // columns
    heights = []
    for index in range(0, len(found), columns):
        heights.append(max(len(items) for _title, items, _kwargs in found[index:index + columns]) + 2)
    figure, axes = plt.subplots(rows, columns, figsize=(15, 0.28 * sum(heights) + 1.2),
                                gridspec_kw={'height_ratios': heights}, squeeze=False)
    for axis, (title, items, kwargs) in zip(axes.flat, found):
        bars(axis, title, items, **kwargs)
    for axis in list(axes.flat)[len(found):]:
        axis.axis('off')
    handles = [plt.Rectangle((0, 0), 1, 1, color=OURS), plt.Rectangle((0, 0), 1, 1, color=PEER)]
    figure.legend(handles, ['cepcomunicacion.backup', 'peer / baseline'], loc='upper right', fontsize=8, ncol=2)
    figure.suptitle('cepcomunicacion.backup benchmarks (wall time, seconds; shorter is better)', fontsize=11,
                    x=0.01, ha='left')
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    figure.savefig(path, dpi=110, metadata={'Software': None})
    plt.close(figure)
    return True
