# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where artifacts live under a backup root and what they are called.

One place for the names in PRODUCT.md, so that writing, listing, retention and
restore all agree.  Timestamps in names are UTC.
"""

from __future__ import annotations

import datetime
import os
import re

DEFAULT_BACKUP_ROOT = '/var/backups/cepcomunicacion'
DEFAULT_PREFIX = 'cepcomunicacion'
PRE_RESTORE_DIR = 'pre-restore'
LOCK_DIR = '.locks'
TIMESTAMP_FORMAT = '%Y-%m-%d_%H-%M-%S'
TEMP_MARK = '.tmp-'
SHA256_SUFFIX = '.sha256'
META_SUFFIX = '.meta.json'
MANIFEST_SUFFIX = '.manifest.json'
LATEST_LINK = 'latest'
DIR_MODE = 0o700
FILE_MODE = 0o600

_TS = r'(?P<ts>\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2})'
_PREFIX = r'(?P<prefix>[A-Za-z0-9][A-Za-z0-9._-]*?)'


class KindSpec:
    """How one kind of artifact is stored: its directory and its file names."""

    def __init__(self, name, subdir, pattern, is_dir=False, tier='daily'):
        self.name = name
        self.subdir = subdir
        self.pattern = re.compile(pattern)
        self.is_dir = is_dir
        self.tier = tier

    def directory(self, backup_root):
        return os.path.join(backup_root, self.subdir)

    def parse(self, filename):
        """Return (prefix, created datetime) for a matching name, else None."""
        match = self.pattern.match(filename)
        if not match:
            return None
        groups = match.groupdict()
        if 'ts' in groups:
            created = parse_timestamp(groups['ts'])
        else:
            created = iso_week_start(int(groups['year']), int(groups['week']))
        return groups.get('prefix'), created


KINDS = {
    'database': KindSpec(
        'database', 'database',
        r'^' + _PREFIX + r'_' + _TS + r'\.dump(?P<ext>\.zst)?$'),
    'database_weekly': KindSpec(
        'database_weekly', os.path.join('database', 'weekly'),
        r'^' + _PREFIX + r'_weekly_(?P<year>\d{4})-W(?P<week>\d{2})\.dump(?P<ext>\.zst)?$',
        tier='weekly'),
    'database_pre_restore': KindSpec(
        'database_pre_restore', os.path.join('database', PRE_RESTORE_DIR),
        r'^' + _PREFIX + r'_' + _TS + r'\.dump(?P<ext>\.zst)?$', tier='pre_restore'),
    'config': KindSpec(
        'config', 'config',
        r'^config_' + _TS + r'\.tar\.(?P<ext>gz|zst)$'),
    'media': KindSpec(
        'media', 'media', r'^' + _TS + r'$', is_dir=True),
}

# Every subdirectory of a backup root, in the order they are created.
SUBDIRS = ('database', os.path.join('database', 'weekly'), 'media', 'config',
           os.path.join('database', PRE_RESTORE_DIR), os.path.join('media', PRE_RESTORE_DIR),
           os.path.join('config', PRE_RESTORE_DIR))


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def format_timestamp(moment):
    return moment.astimezone(datetime.timezone.utc).strftime(TIMESTAMP_FORMAT)


def parse_timestamp(text):
    return datetime.datetime.strptime(text, TIMESTAMP_FORMAT).replace(tzinfo=datetime.timezone.utc)


def iso_week_label(moment):
    year, week, _day = moment.astimezone(datetime.timezone.utc).isocalendar()
    return '%04d-W%02d' % (year, week)


def iso_week_start(year, week):
    """Monday 00:00 UTC of an ISO week."""
    day = datetime.datetime.strptime('%04d-W%02d-1' % (year, week), '%G-W%V-%u')
    return day.replace(tzinfo=datetime.timezone.utc)


def parse_time(value):
    """Parse an operator-supplied UTC time ('2026-11-29 02:00', ISO 8601, or a name's stamp)."""
    if isinstance(value, datetime.datetime):
        moment = value
    else:
        text = str(value).strip()
        moment = None
        for candidate in (text, text.replace('Z', '+00:00')):
            try:
                moment = datetime.datetime.fromisoformat(candidate)
                break
            except ValueError:
                pass
        if moment is None:
            try:
                moment = parse_timestamp(text)
            except ValueError:
                raise ValueError(
                    "cannot read the time %r: use UTC ISO 8601 such as '2026-11-29T02:00:00Z' "
                    "or '2026-11-29 02:00'" % text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc)


def compact_timestamp(moment):
    """A timestamp that fits in an identifier: 20261129t020000."""
    return moment.astimezone(datetime.timezone.utc).strftime('%Y%m%dt%H%M%S')


def database_dump_name(kind, moment, prefix=DEFAULT_PREFIX, zstd=False):
    ext = '.dump.zst' if zstd else '.dump'
    if kind == 'database_weekly':
        return '%s_weekly_%s%s' % (prefix, iso_week_label(moment), ext)
    return '%s_%s%s' % (prefix, format_timestamp(moment), ext)


def sidecar_paths(path):
    return path + SHA256_SUFFIX, path + META_SUFFIX


def is_temporary(filename):
    return filename.startswith(TEMP_MARK)


def media_snapshot_name(moment):
    """``YYYY-MM-DD_HH-MM-SS``: the directory name of a media snapshot."""
    return format_timestamp(moment)


def config_archive_name(moment, compression='gz'):
    return 'config_%s.tar.%s' % (format_timestamp(moment), compression)


def manifest_path(snapshot_path):
    """The manifest sidecar of a snapshot directory: ``<snapshot>.manifest.json`` beside it."""
    return snapshot_path.rstrip('/') + MANIFEST_SUFFIX
