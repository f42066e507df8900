# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""After playbooks/dr/ransomware.yml: everything equals the offsite point, secrets are rotated, evidence kept."""

from __future__ import annotations

import hashlib
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'tests'))
import drill_checks  # noqa: E402

OLD_PASSWORD = 'molecule-test-only-5f1c'
NEW_PASSWORD = 'rotated-after-ransomware-7d21'


def login(host, password):
    return host.run("PGPASSWORD='%s' psql -X -w -h 127.0.0.1 -U postgres -Atc 'SELECT 1' cepcomunicacion" % password)


def test_database_equals_the_offsite_point(host):
    drill_checks.assert_tables_equal_point(host)


def test_media_equals_the_offsite_point_without_encrypted_files_or_notes(host):
    drill_checks.assert_media_equal_point(host)


def test_encrypted_files_kept_in_quarantine(host):
    found = drill_checks.run(host, "find /var/backups -path '*quarantine*' -name '*.locked' -type f").split('\n')
    media = [path for path in found if 'temario.txt.locked' in path]
    assert media, 'the encrypted media files were not kept in a quarantine: %s' % found


def test_database_password_rotated(host):
    assert login(host, OLD_PASSWORD).rc != 0, 'the old (leaked) password still works'
    assert login(host, NEW_PASSWORD).rc == 0, 'the new password does not work'


def test_app_secrets_rotated(host):
    env = host.file(drill_checks.PLATFORM + '/.env')
    assert env.mode == 0o600
    text = env.content_string
    assert OLD_PASSWORD not in text and NEW_PASSWORD in text
    secrets = dict(line.split('=', 1) for line in text.splitlines() if '=' in line and not line.startswith('#'))
    # molecule/shared/platform.yml wrote each as the sha256 of a fixed word: every one must have changed
    for key, word in (('SECRET_KEY', 'secret-key'), ('SESSION_SECRET', 'session'), ('JWT_SECRET', 'jwt')):
        assert secrets[key] and secrets[key] != hashlib.sha256(word.encode()).hexdigest(), '%s was not rotated' % key


def test_scheduled_backups_work_with_the_new_password(host):
    result = host.run('env -i PATH=/usr/bin:/bin /usr/local/bin/cepcomunicacion-backup database')
    assert result.rc == 0, result.stderr


def test_app_answers(host):
    drill_checks.assert_app_answers(host)


def test_schedule_back(host):
    drill_checks.assert_schedule_present(host)


def test_report_lists_the_encrypted_files(host):
    report = drill_checks.report(host, 'ransomware')
    text = str(report)
    assert 'temario.txt.locked' in text and 'README_TO_DECRYPT.txt' in text
