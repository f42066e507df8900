# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""media_backup and media_restore through ansible-playbook, with real rsync on real files."""

from __future__ import annotations

import datetime
import errno
import hashlib
import os
import shutil
import signal
import stat
import subprocess
import time

import pytest

from conftest import tree_state

from ansible_collections.cepcomunicacion.backup.plugins.module_utils import job_lock, layout

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason='mounting a tmpfs and chown need root (CI runs as root)')


def make_tree(root, files=60, size=256 * 1024, seed=0):
    """A media tree: nested directories, varied modes and owners, a symlink, fixed mtimes."""
    for index in range(files):
        directory = os.path.join(root, 'users', str(index % 6), 'y%d' % (index % 3))
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, 'file-%03d.bin' % index)
        with open(path, 'wb') as handle:
            handle.write(hashlib.sha256(b'%d-%d' % (seed, index)).digest() * (size // 32))
        os.chmod(path, 0o640 if index % 2 else 0o604)
        os.utime(path, (1700000000 + index, 1700000000 + index))
        if os.geteuid() == 0 and index % 5 == 0:
            os.chown(path, 1000 + index % 3, 2000 + index % 2)
    os.symlink('users/0/y0/file-000.bin', os.path.join(root, 'latest-upload'))
    with open(os.path.join(root, 'notes.txt'), 'w') as handle:
        handle.write('hello\n')
    return root


def in_snapshot(snapshot, source, relative=''):
    return os.path.join(snapshot, source.lstrip('/'), relative)


def du_kib(*paths):
    """Blocks counted the way du counts them: a hard-linked inode only once, first path first."""
    out = subprocess.run(['du', '-s', '-k'] + list(paths), capture_output=True, text=True, check=True).stdout
    return [int(line.split()[0]) for line in out.splitlines()]


@pytest.fixture
def media(tmp_path):
    source = str(tmp_path / 'srv' / 'uploads')
    os.makedirs(source)
    make_tree(source)
    return source, str(tmp_path / 'backups')


def test_check_then_snapshot_round_trip(ansible, media, tmp_path):
    source, root = media
    args = {'src': [source], 'backup_root': root}
    predicted = ansible.run('media_backup', args, check=True)
    assert predicted.get('failed') is not True, predicted['_output']
    assert predicted['changed'] is True and predicted['files_transferred'] == 61
    assert not os.path.exists(root), 'check mode must write nothing'

    first = ansible.run('media_backup', args)
    assert first['changed'] is True and first.get('failed') is not True, first['_output']
    assert first['files_total'] == 61 and first['files_transferred'] == 61 and first['files_linked'] == 0
    assert os.readlink(os.path.join(root, 'media', 'latest')) == os.path.basename(first['snapshot'])
    assert stat.S_IMODE(os.stat(first['snapshot']).st_mode) == 0o700
    for sidecar in (first['snapshot'] + '.meta.json', first['snapshot'] + '.manifest.json'):
        assert stat.S_IMODE(os.stat(sidecar).st_mode) == 0o600

    # byte-identical, with modes, owners and mtimes
    assert tree_state(in_snapshot(first['snapshot'], source)) == tree_state(source)

    # restore everything into another root: the same again
    dest = str(tmp_path / 'restored')
    restored = ansible.run('media_restore', {'backup_root': root, 'dest': dest})
    assert restored['changed'] is True and restored.get('failed') is not True, restored['_output']
    assert restored['verified'] is True and restored['files_restored'] == 62  # 61 files + 1 symlink
    assert tree_state(os.path.join(dest, source.lstrip('/'))) == tree_state(source)
    again = ansible.run('media_restore', {'backup_root': root, 'dest': dest})
    assert again['changed'] is False and again['files_restored'] == 0 and again['files_identical'] == 62

    # backup_info verifies snapshot directories through the manifest
    info = ansible.run('backup_info', {'backup_root': root, 'kinds': ['media'], 'verify': True})
    assert [a['status'] for a in info['artifacts']] == ['ok'] and info['failed_verification'] == []


def test_unchanged_second_snapshot_shares_inodes_and_uses_under_one_percent(ansible, media):
    source, root = media
    first = ansible.run('media_backup', {'src': [source], 'backup_root': root})
    second = ansible.run('media_backup', {'src': [source], 'backup_root': root})
    assert second['changed'] and second['files_linked'] == 61 and second['files_transferred'] == 0, second['_output']
    assert second['files_hashed'] == 0, 'an unchanged tree must not be re-hashed'
    old, new = du_kib(first['snapshot'], second['snapshot'])
    manifest_kib = (os.stat(second['snapshot'] + '.manifest.json').st_blocks * 512) // 1024
    assert (new + manifest_kib) < 0.01 * old, (old, new, manifest_kib)
    assert second['new_space'] < 0.01 * second['bytes_total']

    # change one file: it gets a new inode, the others still share theirs
    changed = os.path.join(source, 'users', '1', 'y1', 'file-001.bin')
    with open(changed, 'ab') as handle:
        handle.write(b'appended')
    third = ansible.run('media_backup', {'src': [source], 'backup_root': root})
    assert third['files_transferred'] == 1 and third['files_linked'] == 60 and third['files_hashed'] == 1
    relative = os.path.relpath(changed, source)

    def inode(snap, rel):
        return os.lstat(in_snapshot(snap, source, rel)).st_ino

    assert inode(third['snapshot'], relative) != inode(second['snapshot'], relative)
    unchanged = os.path.join('users', '2', 'y2', 'file-002.bin')
    assert inode(first['snapshot'], unchanged) == inode(second['snapshot'], unchanged) == inode(third['snapshot'], unchanged)
    # the older snapshot still holds the old bytes: nothing was rewritten in place
    with open(in_snapshot(second['snapshot'], source, relative), 'rb') as handle:
        assert not handle.read().endswith(b'appended')


def test_check_mode_predicts_the_changed_files(ansible, media):
    source, root = media
    ansible.run('media_backup', {'src': [source], 'backup_root': root})
    for index in (3, 4):
        with open(os.path.join(source, 'users', str(index), 'y%d' % (index % 3), 'file-%03d.bin' % index), 'ab') as h:
            h.write(b'x')
    before = sorted(os.listdir(os.path.join(root, 'media')))
    predicted = ansible.run('media_backup', {'src': [source], 'backup_root': root}, check=True)
    assert predicted['changed'] is True and predicted['files_transferred'] == 2 and predicted['files_linked'] == 59
    assert sorted(os.listdir(os.path.join(root, 'media'))) == before


def test_retention_prunes_old_snapshots_without_breaking_newer_ones(ansible, media):
    source, root = media
    media_dir = os.path.join(root, 'media')
    first = ansible.run('media_backup', {'src': [source], 'backup_root': root})
    # age the first snapshot by renaming it to a date 40 days ago (metadata follows the name)
    old_name = layout.media_snapshot_name(layout.utcnow() - datetime.timedelta(days=40))
    old_path = os.path.join(media_dir, old_name)
    os.rename(first['snapshot'], old_path)
    for suffix in ('.meta.json', '.manifest.json'):
        os.rename(first['snapshot'] + suffix, old_path + suffix)
    second = ansible.run('media_backup', {'src': [source], 'backup_root': root, 'retention_days': 0})
    assert second['pruned'] == [] and second['previous'] == old_path
    probe = in_snapshot(second['snapshot'], source, os.path.join('users', '2', 'y2', 'file-002.bin'))
    assert os.lstat(probe).st_nlink == 2, 'linked to the older snapshot'
    third = ansible.run('media_backup', {'src': [source], 'backup_root': root, 'retention_days': 30})
    assert third['pruned'] == [old_path], third['_output']
    assert not os.path.exists(old_path) and not os.path.exists(old_path + '.manifest.json')
    assert os.lstat(probe).st_nlink == 2, 'now shared by the second and third snapshots only'
    info = ansible.run('backup_info', {'backup_root': root, 'kinds': ['media'], 'verify': True})
    assert [a['status'] for a in info['artifacts']] == ['ok', 'ok']
    assert tree_state(in_snapshot(second['snapshot'], source)) == tree_state(source)


def test_restore_repairs_deleted_altered_and_added_files_and_keeps_what_was_there(ansible, media):
    source, root = media
    snap = ansible.run('media_backup', {'src': [source], 'backup_root': root})
    expected = tree_state(source)
    deleted = os.path.join(source, 'users', '0', 'y0', 'file-006.bin')
    altered = os.path.join(source, 'users', '1', 'y1', 'file-007.bin')
    added = os.path.join(source, 'users', '2', 'ransom-note.txt')
    os.unlink(deleted)
    with open(altered, 'r+b') as handle:  # same size, same mtime: only the content says it changed
        handle.write(b'ENCRYPTED')
    os.utime(altered, ns=(expected[os.path.relpath(altered, source)][5],) * 2)
    with open(added, 'w') as handle:
        handle.write('pay up\n')

    predicted = ansible.run('media_restore', {'backup_root': root, 'delete': True}, check=True)
    assert predicted['changed'] is True and predicted['files_restored'] == 2 and predicted['files_removed'] == 1
    assert os.path.exists(added) and not os.path.exists(deleted), 'check mode changes nothing'

    result = ansible.run('media_restore', {'backup_root': root, 'delete': True})
    assert result['changed'] is True and result.get('failed') is not True, result['_output']
    assert result['snapshot'] == snap['snapshot']
    assert result['files_restored'] == 2 and result['files_removed'] == 1 and result['files_identical'] == 60
    assert tree_state(source) == expected
    pre = result['pre_restore']
    assert pre.startswith(os.path.join(root, 'media', 'pre-restore') + '/')
    with open(os.path.join(pre, altered.lstrip('/')), 'rb') as handle:
        assert handle.read(9) == b'ENCRYPTED'
    with open(os.path.join(pre, added.lstrip('/'))) as handle:
        assert handle.read() == 'pay up\n'
    assert result['duration'] > 0

    again = ansible.run('media_restore', {'backup_root': root, 'delete': True})
    assert again['changed'] is False and again['files_restored'] == 0 and again['files_removed'] == 0


def test_selective_restore_touches_only_matching_paths(ansible, media):
    source, root = media
    ansible.run('media_backup', {'src': [source], 'backup_root': root})
    one_user = os.path.join(source, 'users', '3')
    other = os.path.join(source, 'users', '4', 'y1', 'file-004.bin')
    shutil.rmtree(one_user)
    os.unlink(other)
    result = ansible.run('media_restore', {'backup_root': root, 'paths': [one_user]})
    assert result['changed'] is True and result['files_restored'] == 10, result['_output']
    assert os.path.isdir(one_user) and len(os.listdir(os.path.join(one_user, 'y0'))) > 0
    assert not os.path.exists(other), 'a path outside the pattern is left alone'


def test_flipped_byte_in_snapshot_is_reported_by_path_and_nothing_restored(ansible, media, tmp_path):
    source, root = media
    snap = ansible.run('media_backup', {'src': [source], 'backup_root': root})
    relative = os.path.join('users', '5', 'y2', 'file-005.bin')
    damaged = in_snapshot(snap['snapshot'], source, relative)
    with open(damaged, 'r+b') as handle:
        byte = handle.read(1)
        handle.seek(0)
        handle.write(bytes([byte[0] ^ 1]))
    dest = str(tmp_path / 'restore-here')
    result = ansible.run('media_restore', {'backup_root': root, 'dest': dest})
    assert result.get('failed') is True
    assert os.path.join(source.lstrip('/'), relative) in result['msg']
    assert result['bad_paths'] == [os.path.join(source.lstrip('/'), relative)]
    assert not os.path.exists(dest)
    info = ansible.run('backup_info', {'backup_root': root, 'kinds': ['media'], 'verify': True})
    assert info['failed_verification'][0]['status'] == 'mismatch'


def test_sigkill_mid_snapshot_keeps_latest_on_a_complete_snapshot(ansible, media):
    source, root = media
    first = ansible.run('media_backup', {'src': [source], 'backup_root': root})
    big = os.path.join(source, 'big.bin')
    with open(big, 'wb') as handle:
        handle.write(os.urandom(4 * 1024 * 1024))
    playbook, _result = ansible.playbook('media_backup', {'src': [source], 'backup_root': root, 'bwlimit': 256})
    proc = subprocess.Popen(ansible.command(playbook), env=ansible.env(), cwd=ansible.workdir,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    media_dir = os.path.join(root, 'media')
    try:
        deadline = time.monotonic() + 60
        while not any(n.startswith('.tmp-2') for n in os.listdir(media_dir)):
            if time.monotonic() > deadline:
                pytest.fail('the snapshot never started')
            time.sleep(0.05)
        time.sleep(1.5)  # rsync is inside the 4 MiB file now, at 256 KiB/s
        # The module runs in a session of its own (Ansible's local connection); its PID is in the lock file.
        holder = job_lock.read_holder(job_lock.lock_path(root, 'media'))
        assert holder.get('pid'), holder
        os.killpg(os.getpgid(int(holder['pid'])), signal.SIGKILL)  # the module and its rsync
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # ansible-playbook and its workers
        proc.wait(timeout=30)
    leftovers = [n for n in os.listdir(media_dir) if n.startswith('.tmp-')]
    assert leftovers, 'killed while copying'
    assert os.readlink(os.path.join(media_dir, 'latest')) == os.path.basename(first['snapshot'])
    info = ansible.run('backup_info', {'backup_root': root, 'kinds': ['media'], 'verify': True})
    assert [a['path'] for a in info['artifacts']] == [first['snapshot']]
    assert info['failed_verification'] == []

    again = ansible.run('media_backup', {'src': [source], 'backup_root': root})
    assert again['changed'] and again.get('failed') is not True, again['_output']
    assert set(leftovers) <= set(again['cleaned']), (leftovers, again['cleaned'])
    assert not any(n.startswith('.tmp-') for n in os.listdir(media_dir))
    assert os.readlink(os.path.join(media_dir, 'latest')) == os.path.basename(again['snapshot'])


@needs_root
def test_disk_full_during_snapshot_fails_clearly_and_keeps_latest(ansible, tmp_path):
    source = str(tmp_path / 'uploads')
    os.makedirs(source)
    make_tree(source, files=20, size=128 * 1024)  # ~2.5 MB
    root = str(tmp_path / 'full')
    os.makedirs(root)
    subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', root], check=True)
    try:
        first = ansible.run('media_backup', {'src': [source], 'backup_root': root})
        assert first['changed'] and first.get('failed') is not True, first['_output']
        with open(os.path.join(source, 'huge.bin'), 'wb') as handle:
            handle.write(os.urandom(20 * 1024 * 1024))
        result = ansible.run('media_backup', {'src': [source], 'backup_root': root})
        assert result.get('failed') is True
        assert 'no space left on the backup filesystem' in result['msg'] and result['reason'] == 'no_space'
        media_dir = os.path.join(root, 'media')
        assert os.readlink(os.path.join(media_dir, 'latest')) == os.path.basename(first['snapshot'])
        assert not any(n.startswith('.tmp-') for n in os.listdir(media_dir)), 'the partial copy is removed'
        info = ansible.run('backup_info', {'backup_root': root, 'kinds': ['media'], 'verify': True})
        assert [a['path'] for a in info['artifacts']] == [first['snapshot']]
        assert info['failed_verification'] == []
    finally:
        subprocess.run(['umount', root], check=False)


def test_bad_source_is_refused_clearly(ansible, tmp_path):
    result = ansible.run('media_backup', {'src': [str(tmp_path / 'nope')], 'backup_root': str(tmp_path / 'b')})
    assert result.get('failed') is True and 'does not exist or is not a directory' in result['msg']
    assert not (tmp_path / 'b').exists()


def test_xattrs_and_acls_survive_snapshot_and_restore(ansible, media, tmp_path):
    source, root = media
    target = os.path.join(source, 'users', '1', 'y1', 'file-001.bin')
    try:
        os.setxattr(target, 'user.cep.origin', b'upload-42')
    except OSError as exc:  # the filesystem under the test's temp dir has no user xattrs: nothing to prove
        if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        pytest.skip('no user xattrs on this filesystem: %s' % exc)
    setfacl = shutil.which('setfacl')
    if setfacl:
        subprocess.run([setfacl, '-m', 'u:nobody:r', target], check=True)
    snap = ansible.run('media_backup', {'src': [source], 'backup_root': root})
    assert snap['changed'] is True, snap['_output']
    copy = in_snapshot(snap['snapshot'], source, os.path.relpath(target, source))
    assert os.getxattr(copy, 'user.cep.origin') == b'upload-42'
    if setfacl:
        assert 'user:nobody:r' in subprocess.run(['getfacl', '-c', copy], capture_output=True, text=True,
                                                 check=True).stdout
    dest = str(tmp_path / 'restored')
    restored = ansible.run('media_restore', {'backup_root': root, 'dest': dest})
    assert restored['changed'] is True, restored['_output']
    assert os.getxattr(os.path.join(dest, target.lstrip('/')), 'user.cep.origin') == b'upload-42'
