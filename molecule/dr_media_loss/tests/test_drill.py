# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""After playbooks/dr/media_loss.yml: the media equals the snapshot again; the newer upload is kept."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'tests'))
import drill_checks  # noqa: E402

NEWER = 'students/after-the-snapshot.txt'


def test_media_equals_the_snapshot(host):
    expected = drill_checks.point(host)['media']
    actual = drill_checks.state(host)['media']
    assert NEWER in actual, 'the file uploaded after the snapshot was not kept'
    del actual[NEWER]
    diff = drill_checks.differences(expected, actual)
    assert not diff, 'media differs from the snapshot (sha256, size, mode, owner): %s' % diff


def test_media_served_again(host):
    out = drill_checks.run(host, "curl -fsS http://127.0.0.1:8080/media/courses/7/temario.txt")
    assert 'Temario del curso 7' in out


def test_database_untouched(host):
    drill_checks.assert_tables_equal_point(host)


def test_schedule_present(host):
    drill_checks.assert_schedule_present(host)


def test_report(host):
    report = drill_checks.report(host, 'media_loss')
    assert report['recovery_point']['kind'] == 'media'
