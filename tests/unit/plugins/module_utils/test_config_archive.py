# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Config archive core: collecting with excludes, the content digest, member validation."""

from __future__ import annotations

import os
import tarfile

import pytest

from ansible_collections.cepcomunicacion.backup.plugins.module_utils import config_archive
from ansible_collections.cepcomunicacion.backup.plugins.module_utils.errors import BackupError


def info(name, kind=tarfile.REGTYPE, linkname=''):
    member = tarfile.TarInfo(name)
    member.type = kind
    member.linkname = linkname
    return member


def test_collect_applies_excludes_and_reports_missing(tmp_path):
    (tmp_path / 'etc' / 'cache').mkdir(parents=True)
    (tmp_path / 'etc' / 'a.conf').write_text('a')
    (tmp_path / 'etc' / 'a.conf.swp').write_text('junk')
    (tmp_path / 'etc' / 'cache' / 'big').write_text('junk')
    entries, missing = config_archive.collect([str(tmp_path / 'etc'), str(tmp_path / 'gone')],
                                              ['*.swp', str(tmp_path / 'etc' / 'cache')])
    assert [path for path, _st in entries] == [str(tmp_path / 'etc'), str(tmp_path / 'etc' / 'a.conf')]
    assert missing == [str(tmp_path / 'gone')]


def test_content_digest_ignores_mtime_but_not_content(tmp_path):
    path = tmp_path / 'f'
    path.write_text('one')
    before = config_archive.content_digest(config_archive.collect([str(path)])[0])
    os.utime(str(path), (1, 1))
    assert config_archive.content_digest(config_archive.collect([str(path)])[0]) == before
    path.write_text('two')
    assert config_archive.content_digest(config_archive.collect([str(path)])[0]) != before


@pytest.mark.parametrize('members, message', [
    ([info('../x')], '".."'),
    ([info('a/../../x')], '".."'),
    ([info('/etc/passwd')], 'absolute path'),
    ([info('l', tarfile.SYMTYPE, '/'), info('l/etc/passwd')], 'symlink'),
    ([info('h', tarfile.LNKTYPE, 'etc/shadow')], 'hard link'),
    ([info('dev', tarfile.CHRTYPE)], 'device or fifo'),
])
def test_unsafe_members_are_refused(tmp_path, members, message):
    with pytest.raises(BackupError, match=message):
        config_archive.validate_members(members, str(tmp_path))


def test_safe_members_pass(tmp_path):
    members = [info('etc/nginx', tarfile.DIRTYPE), info('etc/nginx/a.conf'),
               info('etc/nginx/enabled', tarfile.SYMTYPE, '/etc/nginx/a.conf'),
               info('etc/nginx/copy', tarfile.LNKTYPE, 'etc/nginx/a.conf')]
    assert sorted(config_archive.validate_members(members, str(tmp_path))) == [
        'etc/nginx', 'etc/nginx/a.conf', 'etc/nginx/copy', 'etc/nginx/enabled']
