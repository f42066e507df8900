# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""config_backup and config_restore through ansible-playbook, on real files, checked with real GNU tar."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile

import pytest

from ansible_collections.cepcomunicacion.backup.plugins.module_utils import artifact


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def platform_config(tmp_path):
    """The platform's configuration in miniature: .env, compose file, an nginx tree with a symlink."""
    app = tmp_path / 'opt' / 'app'
    nginx = tmp_path / 'etc' / 'nginx'
    (nginx / 'sites-available').mkdir(parents=True)
    (nginx / 'sites-enabled').mkdir()
    app.mkdir(parents=True)
    (app / '.env').write_text('DATABASE_PASSWORD=s3cret\n')
    os.chmod(str(app / '.env'), 0o600)
    (app / 'docker-compose.yml').write_text('services:\n  web:\n    image: app\n')
    os.chmod(str(app / 'docker-compose.yml'), 0o644)
    (nginx / 'nginx.conf').write_text('worker_processes 2;\n')
    os.chmod(str(nginx / 'nginx.conf'), 0o640)
    (nginx / 'sites-available' / 'app').write_text('server { listen 80; }\n')
    os.symlink('../sites-available/app', str(nginx / 'sites-enabled' / 'app'))
    (nginx / 'cache.swp').write_text('junk')
    if os.geteuid() == 0:
        os.chown(str(nginx / 'nginx.conf'), 0, 33)
    paths = [str(app / '.env'), str(app / 'docker-compose.yml'), str(nginx), str(tmp_path / 'not-there')]
    return {'paths': paths, 'exclude': ['*.swp'], 'backup_root': str(tmp_path / 'backups')}, tmp_path


def state(path):
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return ('l', os.readlink(path))
    if stat.S_ISDIR(st.st_mode):
        return ('d', stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    with open(path, 'rb') as handle:
        return ('f', handle.read(), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, int(st.st_mtime))


def tree(root):
    found = {}
    for directory, subdirs, files in os.walk(root):
        for name in subdirs + files:
            path = os.path.join(directory, name)
            found[os.path.relpath(path, root)] = state(path)
    return found


def test_backup_check_apply_skip_and_round_trip(ansible, platform_config):
    args, base = platform_config
    predicted = ansible.run('config_backup', dict(args, skip_unchanged=True), check=True)
    assert predicted['changed'] is True and predicted.get('failed') is not True, predicted['_output']
    assert not os.path.exists(args['backup_root'])

    first = ansible.run('config_backup', dict(args, skip_unchanged=True))
    assert first['changed'] is True and first['missing'] == [str(base / 'not-there')], first['_output']
    assert mode(first['path']) == 0o600 and mode(os.path.dirname(first['path'])) == 0o700
    assert 's3cret' not in first['_output']
    check = subprocess.run(['sha256sum', '-c', os.path.basename(first['path']) + '.sha256'],
                           cwd=os.path.dirname(first['path']), capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    listing = subprocess.run(['tar', '-tzf', first['path']], capture_output=True, text=True, check=True).stdout
    assert (str(base / 'etc' / 'nginx' / 'nginx.conf').lstrip('/') + '\n') in listing
    assert 'cache.swp' not in listing, 'excluded'

    again_check = ansible.run('config_backup', dict(args, skip_unchanged=True), check=True)
    again = ansible.run('config_backup', dict(args, skip_unchanged=True))
    assert again_check['changed'] is False and again['changed'] is False and again['path'] == first['path']
    assert sorted(os.listdir(os.path.dirname(first['path']))) == sorted(
        [os.path.basename(first['path']) + s for s in ('', '.sha256', '.meta.json')] + ['pre-restore'])

    # extracted by GNU tar: same bytes, modes, owners, mtimes, symlink
    original = tree(str(base / 'etc'))
    out = base / 'gnu-tar'
    out.mkdir()
    subprocess.run(['tar', '-xzpf', first['path'], '--numeric-owner', '-C', str(out)], check=True)
    assert tree(str(out) + str(base / 'etc')) == {k: v for k, v in original.items() if not k.endswith('.swp')}

    # lose the files, restore them to their original paths through the module
    os.unlink(args['paths'][0])
    os.unlink(str(base / 'etc' / 'nginx' / 'sites-enabled' / 'app'))
    with open(args['paths'][1], 'w') as handle:
        handle.write('services: {}\n')
    restored = ansible.run('config_restore', {'backup_root': args['backup_root']})
    assert restored['changed'] is True and restored.get('failed') is not True, restored['_output']
    assert sorted(restored['restored']) == sorted([args['paths'][0], args['paths'][1],
                                                   str(base / 'etc' / 'nginx' / 'sites-enabled' / 'app')])
    assert state(args['paths'][0])[1:3] == (b'DATABASE_PASSWORD=s3cret\n', 0o600)
    assert tree(str(base / 'etc')) == original
    # the pre-restore archive holds what was overwritten
    with tarfile.open(restored['pre_restore']) as pre:
        assert pre.extractfile(args['paths'][1].lstrip('/')).read() == b'services: {}\n'
    assert artifact.sha256_file(restored['pre_restore'])[0] == artifact.read_sha256_sidecar(restored['pre_restore'])
    assert ansible.run('config_restore', {'backup_root': args['backup_root']})['changed'] is False


def test_diff_mode_shows_text_changes(ansible, platform_config):
    args, base = platform_config
    ansible.run('config_backup', args)
    conf = str(base / 'etc' / 'nginx' / 'nginx.conf')
    with open(conf, 'w') as handle:
        handle.write('worker_processes 8;\n')
    os.chmod(conf, 0o640)
    playbook, result_file = ansible.playbook('config_restore', {'backup_root': args['backup_root'], 'paths': [conf]},
                                             check=True)
    proc = subprocess.run(ansible.command(playbook) + ['--diff'], env=ansible.env(), cwd=ansible.workdir,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert '-worker_processes 8;' in proc.stdout and '+worker_processes 2;' in proc.stdout, proc.stdout
    with open(conf) as handle:
        assert handle.read() == 'worker_processes 8;\n', 'check mode writes nothing'


def test_selective_restore_into_dest(ansible, platform_config, tmp_path):
    args, base = platform_config
    ansible.run('config_backup', args)
    dest = str(tmp_path / 'inspect')
    result = ansible.run('config_restore', {'backup_root': args['backup_root'], 'dest': dest,
                                            'paths': [str(base / 'etc' / 'nginx' / 'sites-available')]})
    assert result['changed'] is True and result['restored'] == [str(base / 'etc' / 'nginx' / 'sites-available' / 'app')]
    restored = os.path.join(dest, str(base).lstrip('/'), 'etc', 'nginx', 'sites-available', 'app')
    with open(restored) as handle:
        assert handle.read() == 'server { listen 80; }\n'
    written = [os.path.relpath(os.path.join(d, f), dest) for d, _s, fs in os.walk(dest) for f in fs]
    assert written == [os.path.relpath(restored, dest)], 'nothing else restored'


def test_checksum_mismatch_is_refused(ansible, platform_config):
    args, base = platform_config
    first = ansible.run('config_backup', args)
    conf = str(base / 'etc' / 'nginx' / 'nginx.conf')
    os.unlink(conf)
    with open(first['path'], 'r+b') as handle:
        handle.seek(first['size'] // 2)
        byte = handle.read(1)
        handle.seek(first['size'] // 2)
        handle.write(bytes([byte[0] ^ 0xff]))
    result = ansible.run('config_restore', {'backup_root': args['backup_root']})
    assert result.get('failed') is True and 'failed verification' in result['msg']
    assert result['reason'] == 'checksum_mismatch'
    assert not os.path.exists(conf), 'nothing restored'


def plant_archive(backup_root, members, name='config_2030-01-01_00-00-00.tar.gz'):
    """An archive a tampering attacker wrote, with valid sidecars (so only the member check can stop it)."""
    directory = os.path.join(backup_root, 'config')
    artifact.ensure_directory(directory)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode='w:gz') as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    path = os.path.join(directory, name)
    with artifact.ArtifactWriter(path) as writer:
        writer.write(buffer.getvalue())
        writer.commit({'kind': 'config', 'created': '2030-01-01T00:00:00+00:00'})
    return path


def member(name, data=b'', kind=tarfile.REGTYPE, linkname=''):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.mode = 0o644
    return info, data if kind == tarfile.REGTYPE else None


@pytest.mark.parametrize('members, words', [
    ([member('safe.txt', b'ok'), member('../../escaped.txt', b'pwned')], '".."'),
    ([member('safe.txt', b'ok'), member('/tmp/cep-absolute-escape.txt', b'pwned')], 'absolute path'),
    ([member('link', kind=tarfile.SYMTYPE, linkname='/tmp'), member('link/cep-symlink-escape.txt', b'pwned')],
     'symlink'),
    ([member('hard', kind=tarfile.LNKTYPE, linkname='../../../etc/passwd')], '".."'),
    ([member('hard', kind=tarfile.LNKTYPE, linkname='etc/not-in-archive')], 'hard link'),
], ids=['dotdot', 'absolute', 'symlink', 'hardlink-dotdot', 'hardlink-outside'])
def test_tampered_archive_is_refused_and_nothing_written(ansible, tmp_path, members, words):
    backup_root = str(tmp_path / 'backups')
    plant_archive(backup_root, members)
    dest = tmp_path / 'dest'
    dest.mkdir()
    result = ansible.run('config_restore', {'backup_root': backup_root, 'dest': str(dest)})
    assert result.get('failed') is True and words in result['msg'], result['msg']
    assert result['reason'] == 'unsafe_member'
    assert os.listdir(str(dest)) == [], 'nothing was written, not even the safe member'
    assert not os.path.exists(str(tmp_path / 'escaped.txt'))
    assert not os.path.exists('/tmp/cep-absolute-escape.txt') and not os.path.exists('/tmp/cep-symlink-escape.txt')


def test_symlink_on_disk_leading_outside_dest_is_refused(ansible, tmp_path):
    backup_root = str(tmp_path / 'backups')
    plant_archive(backup_root, [member('etc/app.conf', b'x')])
    dest = tmp_path / 'dest'
    outside = tmp_path / 'outside'
    dest.mkdir()
    outside.mkdir()
    os.symlink(str(outside), str(dest / 'etc'))
    result = ansible.run('config_restore', {'backup_root': backup_root, 'dest': str(dest)})
    assert result.get('failed') is True and 'leads outside' in result['msg']
    assert os.listdir(str(outside)) == []
