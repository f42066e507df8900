# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The manifest of a snapshot directory: what it holds, so it can be verified without the source.

``<snapshot>.manifest.json`` sits beside the snapshot directory (never inside
it, so a restore never has to skip it).  It is one JSON document::

    {"format": "cepcomunicacion-manifest", "version": 1, "snapshot": "2026-11-29_03-00-00",
     "entries": [["srv/app/uploads/a.jpg", "f", 33188, 33, 33, 51234, 1764385200000000000, "<sha256>"],
                 ["srv/app/uploads/logo", "l", 41471, 0, 0, 9, 1764385200000000000, "a.jpg"],
                 ["srv/app/uploads", "d", 16877, 33, 33, 4096, 1764385200000000000, null]]}

Each entry is ``[relative path, type, st_mode, uid, gid, size, mtime_ns, sha256 | link target | null]``
with type ``f`` (regular file), ``d`` (directory), ``l`` (symlink) or ``o`` (device, fifo,
socket).  Paths are relative to the snapshot directory, in sorted order; names
that are not UTF-8 are kept through ``surrogateescape``.  The metadata sidecar
records the manifest's SHA-256, so a manifest cannot be edited unnoticed.

Building is incremental: a file whose size and mtime equal the previous
manifest's entry *and* whose inode is the one the previous snapshot holds at
the same path (rsync ``--link-dest`` made it a hard link) reuses the previous
hash instead of reading the file again.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import stat

from ansible_collections.cepcomunicacion.backup.plugins.module_utils.errors import BackupError
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import artifact as artifact_io
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import layout

FORMAT = 'cepcomunicacion-manifest'
VERSION = 1
PATH, TYPE, MODE, UID, GID, SIZE, MTIME, DATA = range(8)


class Entry:
    __slots__ = ('path', 'type', 'mode', 'uid', 'gid', 'size', 'mtime_ns', 'data')

    def __init__(self, path, kind, mode, uid, gid, size, mtime_ns, data):
        self.path = path
        self.type = kind
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.size = size
        self.mtime_ns = mtime_ns
        self.data = data

    @property
    def sha256(self):
        return self.data if self.type == 'f' else None

    def row(self):
        return [self.path, self.type, self.mode, self.uid, self.gid, self.size, self.mtime_ns, self.data]


def entry_type(st):
    if stat.S_ISREG(st.st_mode):
        return 'f'
    if stat.S_ISDIR(st.st_mode):
        return 'd'
    if stat.S_ISLNK(st.st_mode):
        return 'l'
    return 'o'


class Manifest:
    def __init__(self, snapshot, entries):
        self.snapshot = snapshot
        self.entries = entries
        self.by_path = dict((entry.path, entry) for entry in entries)

    def files(self):
        return [entry for entry in self.entries if entry.type == 'f']

    def to_bytes(self):
        document = {'format': FORMAT, 'version': VERSION, 'snapshot': self.snapshot,
                    'entries': [entry.row() for entry in self.entries]}
        return (json.dumps(document, separators=(',', ':')) + '\n').encode('utf-8')

    def select(self, patterns):
        """The entries a selective restore touches: matching paths, what is under them, and their parents."""
        if not patterns:
            return list(self.entries)
        chosen = set()
        for entry in self.entries:
            if matches(entry.path, patterns):
                chosen.add(entry.path)
                parent = os.path.dirname(entry.path)
                while parent:
                    chosen.add(parent)
                    parent = os.path.dirname(parent)
        return [entry for entry in self.entries if entry.path in chosen]


def matches(relpath, patterns):
    """True when ``relpath`` (or one of its parent directories) matches a pattern.

    Patterns are shell globs against the original absolute path
    (``/srv/app/uploads/users/42/*``); a pattern naming a directory selects
    everything under it.
    """
    absolute = '/' + relpath
    for pattern in patterns:
        pattern = pattern.rstrip('/') or '/'
        if fnmatch.fnmatchcase(absolute, pattern) or absolute.startswith(pattern + '/') or pattern == '/':
            return True
        parent = os.path.dirname(absolute)
        while parent not in ('/', ''):
            if fnmatch.fnmatchcase(parent, pattern):
                return True
            parent = os.path.dirname(parent)
    return False


def walk(root):
    """Yield (relative path, lstat) for everything under ``root``, sorted, without following symlinks."""
    stack = ['']
    while stack:
        relative_dir = stack.pop()
        directory = os.path.join(root, relative_dir) if relative_dir else root
        try:
            names = sorted(os.listdir(directory), reverse=True)
        except OSError as exc:
            raise BackupError('cannot read %s: %s' % (directory, exc.strerror or exc), path=directory)
        for name in names:
            relative = os.path.join(relative_dir, name) if relative_dir else name
            st = os.lstat(os.path.join(root, relative))
            yield relative, st
            if stat.S_ISDIR(st.st_mode):
                stack.append(relative)


def build(snapshot_dir, previous_dir=None, previous=None):
    """Describe ``snapshot_dir``; returns (Manifest, stats dict).

    ``stats``: files, bytes, hashed, reused, linked (same inode as the previous
    snapshot), transferred, bytes_transferred and new_space (bytes in blocks
    that this snapshot does not share with the previous one).
    """
    entries = []
    stats = {'files': 0, 'bytes': 0, 'hashed': 0, 'reused': 0, 'linked': 0, 'transferred': 0,
             'bytes_transferred': 0, 'new_space': 0}
    seen_inodes = set()
    old = previous.by_path if previous is not None else {}
    for relative, st in sorted(walk(snapshot_dir)):
        kind = entry_type(st)
        data = None
        shared = False
        if kind in ('f', 'l') and previous_dir is not None:
            try:
                prev_st = os.lstat(os.path.join(previous_dir, relative))
                shared = (prev_st.st_ino, prev_st.st_dev) == (st.st_ino, st.st_dev)
            except OSError:
                shared = False
        if kind == 'f':
            stats['files'] += 1
            stats['bytes'] += st.st_size
            before = old.get(relative)
            if (shared and before is not None and before.type == 'f' and before.size == st.st_size
                    and before.mtime_ns == st.st_mtime_ns and before.data):
                data = before.data
                stats['reused'] += 1
            else:
                data = artifact_io.sha256_file(os.path.join(snapshot_dir, relative))[0]
                stats['hashed'] += 1
            if shared:
                stats['linked'] += 1
            else:
                stats['transferred'] += 1
                stats['bytes_transferred'] += st.st_size
        elif kind == 'l':
            data = os.readlink(os.path.join(snapshot_dir, relative))
        if not shared and (st.st_ino, st.st_dev) not in seen_inodes:
            stats['new_space'] += st.st_blocks * 512
        seen_inodes.add((st.st_ino, st.st_dev))
        entries.append(Entry(relative, kind, st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, data))
    return Manifest(os.path.basename(snapshot_dir.rstrip('/')), entries), stats


def write(path, manifest):
    """Write the manifest atomically (0600); returns its SHA-256 and size."""
    data = manifest.to_bytes()
    artifact_io.write_file_atomic(path, data)
    return hashlib.sha256(data).hexdigest(), len(data)


def load(path, expected_sha256=None):
    """Read a manifest; with ``expected_sha256`` (from the metadata sidecar) refuse an altered one."""
    try:
        with open(path, 'rb') as handle:
            data = handle.read()
    except (IOError, OSError) as exc:
        raise BackupError('the manifest %s cannot be read (%s); the snapshot cannot be verified'
                          % (path, exc.strerror or exc), path=path, reason='no_manifest')
    if expected_sha256:
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected_sha256:
            raise BackupError('the manifest %s does not match the SHA-256 in its metadata sidecar; it was altered '
                              'or damaged, so this snapshot cannot be trusted' % path, path=path,
                              reason='manifest_mismatch')
    try:
        document = json.loads(data.decode('utf-8'))
        if document.get('format') != FORMAT:
            raise ValueError('not a manifest')
        entries = [Entry(*row) for row in document['entries']]
    except (ValueError, KeyError, TypeError) as exc:
        raise BackupError('the manifest %s is not readable (%s)' % (path, exc), path=path, reason='bad_manifest')
    return Manifest(document.get('snapshot'), entries)


def load_for(snapshot_path):
    """The manifest of a snapshot directory, checked against its metadata sidecar."""
    metadata = artifact_io.read_metadata(snapshot_path) or {}
    return load(layout.manifest_path(snapshot_path), metadata.get('manifest_sha256'))


def verify(snapshot_dir, manifest, entries=None):
    """Compare a snapshot with its manifest; returns a list of {'path', 'problem'} (empty: intact).

    Problems: ``missing``, ``type`` (a file became a directory...), ``size``,
    ``sha256`` (content changed: a flipped byte), ``link`` (symlink target), ``extra``
    (present in the snapshot but not in the manifest; only when all entries are checked).
    """
    problems = []
    checked = manifest.entries if entries is None else entries
    for entry in checked:
        path = os.path.join(snapshot_dir, entry.path)
        try:
            st = os.lstat(path)
        except OSError:
            problems.append({'path': entry.path, 'problem': 'missing'})
            continue
        if entry_type(st) != entry.type:
            problems.append({'path': entry.path, 'problem': 'type'})
        elif entry.type == 'f':
            if st.st_size != entry.size:
                problems.append({'path': entry.path, 'problem': 'size'})
            elif artifact_io.sha256_file(path)[0] != entry.data:
                problems.append({'path': entry.path, 'problem': 'sha256'})
        elif entry.type == 'l' and os.readlink(path) != entry.data:
            problems.append({'path': entry.path, 'problem': 'link'})
    if entries is None:
        for relative, _st in walk(snapshot_dir):
            if relative not in manifest.by_path:
                problems.append({'path': relative, 'problem': 'extra'})
    return problems


def verify_snapshot(snapshot_path):
    """Verify a snapshot directory by its manifest: (ok: bool, problems list)."""
    try:
        manifest = load_for(snapshot_path)
    except BackupError as exc:
        return False, [{'path': layout.manifest_path(snapshot_path), 'problem': exc.details.get('reason', 'manifest')}]
    problems = verify(snapshot_path, manifest)
    return not problems, problems
