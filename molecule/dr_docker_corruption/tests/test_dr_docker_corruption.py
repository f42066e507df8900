# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""After the docker_corruption recovery: the platform is back exactly as the backups had it.

Run by Molecule's testinfra verifier with the local backend (the drill runs on this machine, under
DRILL_DOCKER_PREFIX). side_effect.yml removed the containers and images, damaged the compose file, deleted
.env and ran playbooks/dr/docker_corruption.yml; these tests check the outcome an operator cares about.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import subprocess
import tarfile
import urllib.parse
import urllib.request

import psycopg2
import pytest

PREFIX = os.environ.get('DRILL_DOCKER_PREFIX', '/tmp/cepcomunicacion-drill-docker')
APP_DIR = os.path.join(PREFIX, 'app')
BACKUPS = os.path.join(PREFIX, 'backups')
PROJECT = 'cepcomunicacion-drill-docker'
IMAGE = 'localhost/cepcomunicacion-app:drill-docker'
MEDIA = ('user1/photo.jpg', 'courses/7/temario día.txt', 'docs/readme.txt')
ENGINE = dict(os.environ, DOCKER_HOST='unix://%s/podman.sock' % PREFIX)


def load(name):
    with open(os.path.join(PREFIX, name), encoding='utf-8') as handle:
        return json.load(handle)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def docker(*argv):
    run = subprocess.run(['docker'] + list(argv), env=ENGINE, capture_output=True, text=True, check=False, timeout=60)
    assert run.returncode == 0, (argv, run.stderr)
    return run.stdout


def get(path):
    url = 'http://127.0.0.1:%d%s' % (load('drill.json')['app_port'], urllib.parse.quote(path))
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback, http only)
        return response.status, response.read()


def config_archives():
    return sorted(glob.glob(os.path.join(BACKUPS, 'config', 'config_*.tar.gz')))


@pytest.fixture(scope='module')
def report():
    reports = sorted(glob.glob(os.path.join(PREFIX, 'log', 'dr-docker_corruption-*.json')))
    assert len(reports) == 1, 'one report expected (check mode writes none): %s' % reports
    with open(reports[0], encoding='utf-8') as handle:
        document = json.load(handle)
    assert os.path.exists(reports[0][:-len('.json')] + '.md'), 'the Markdown report is missing'
    return document


def test_app_container_runs_the_rebuilt_image():
    ids = docker('ps', '-q', '--filter', 'label=com.docker.compose.project=%s' % PROJECT).split()
    assert len(ids) == 1, 'one running app container expected, found %s' % ids
    state = json.loads(docker('inspect', '--type', 'container', '--format', '{{json .State}}', ids[0]))
    assert state['Running'] is True
    assert docker('inspect', '--type', 'container', '--format', '{{.Config.Image}}', ids[0]).strip() == IMAGE
    created = docker('image', 'inspect', '--format', '{{.Created}}', IMAGE).strip()
    disaster = load('damage.json')['disaster_time']
    # RFC 3339 on both sides; the image was rebuilt after docker-compose down --rmi all removed it.
    assert created[:19] >= disaster[:19], (created, disaster)


def test_app_answers_with_the_database_courses():
    status, body = get('/health')
    assert status == 200 and json.loads(body)['database'] == 'up'
    status, body = get('/courses')
    courses = json.loads(body)
    state = load('drill.json')
    with psycopg2.connect(host='127.0.0.1', port=state['db_port'], user='postgres', dbname='cepcomunicacion',
                          password=os.environ['DRILL_DB_PASSWORD']) as conn:
        with conn.cursor() as cur:
            cur.execute('SELECT id, code FROM public.courses ORDER BY id')
            rows = cur.fetchall()
    conn.close()
    assert status == 200 and len(rows) == 40  # the tiny reference data set
    assert [(c['id'], c['code']) for c in courses] == rows


@pytest.mark.parametrize('name', ['docker-compose.yml', '.env'])
def test_compose_files_equal_the_backup(host, name):
    archive = config_archives()[-1]
    live = os.path.join(APP_DIR, name)
    with tarfile.open(archive) as tar:
        member = tar.getmember(live.lstrip('/'))
        backed_up = tar.extractfile(member).read()
    with open(live, 'rb') as handle:
        assert handle.read() == backed_up, '%s differs from %s' % (live, archive)
    assert host.file(live).mode == member.mode
    if name == '.env':
        assert host.file(live).mode == 0o600


def test_damaged_compose_file_kept_in_pre_restore():
    damaged = load('damage.json')['damaged_compose_sha256']
    archives = glob.glob(os.path.join(BACKUPS, 'config', 'pre-restore', 'config_*.tar.gz'))
    assert len(archives) == 1, archives
    with tarfile.open(archives[0]) as tar:
        data = tar.extractfile(os.path.join(APP_DIR, 'docker-compose.yml').lstrip('/')).read()
    assert sha256(data) == damaged


@pytest.mark.parametrize('path', MEDIA)
def test_media_served_byte_for_byte(path):
    snapshot = os.path.realpath(os.path.join(BACKUPS, 'media', 'latest'))
    backed_up = glob.glob(os.path.join(snapshot, '**', path), recursive=True)
    assert len(backed_up) == 1, (snapshot, path)
    with open(backed_up[0], 'rb') as handle:
        expected = handle.read()
    with open(os.path.join(APP_DIR, 'uploads', path), 'rb') as handle:
        assert handle.read() == expected
    status, body = get('/media/' + path)
    assert status == 200 and sha256(body) == sha256(expected)


def test_schedule_is_back(host):
    cron = host.file(os.path.join(PREFIX, 'cron.d', 'cepcomunicacion-backup'))
    assert cron.exists
    for when, job in (('0 2 * * *', ' database'), ('30 2 * * *', ' config'), ('0 3 * * *', ' media')):
        assert any(line.startswith(when) and job in line for line in cron.content_string.splitlines()), (when, job)


def test_report_has_the_rto_and_what_was_done(report):
    assert report['scenario'] == 'docker_corruption'
    assert report['outcome'] == 'recovered'
    assert isinstance(report['rto_seconds'], (int, float)) and 0 < report['rto_seconds'] < 300
    assert report['recovery_point']['kind'] == 'config'
    assert report['recovery_point']['path'] == config_archives()[-1]
    assert report['recovery_point']['verification'] == 'ok'
    assert report['artifacts'][0]['sha256'] == open(config_archives()[-1] + '.sha256').read().split()[0]
    assert report['disaster_time'] is not None
    results = report['results']
    assert sorted(results['config_files_restored']) == sorted(os.path.join(APP_DIR, n) for n in ('.env', 'docker-compose.yml'))
    assert results['compose_validated'] is True
    assert results['images_built'] == ['app']
    assert list(results['containers'].values()) == [IMAGE]
    assert results['bind_mounts'] == [os.path.join(APP_DIR, 'uploads')]
    assert [s['step'] for s in report['skipped']] == ['media restore'], report['skipped']
    assert 'media intact' in report['skipped'][0]['reason']
    names = [p['name'] for p in report['phases']]
    for phase in ('restore_config', 'media', 'images', 'containers', 'wait_app', 'smoke', 'schedule'):
        assert phase in names, names
    print('\ndocker_corruption drill: RTO %s (%s s); phases: %s' % (
        report['rto'], report['rto_seconds'],
        ', '.join('%s %s s' % (p['name'], p.get('duration_seconds')) for p in report['phases'])))
