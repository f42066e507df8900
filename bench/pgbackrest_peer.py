# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The `pgbackrest` section: pg_backup / pg_restore side by side with Debian's pgBackRest on one database.

pgBackRest is set up the way its user guide asks, on the benchmark's throwaway cluster: WAL archiving
(``archive_mode = on``, ``archive_command = pgbackrest ... archive-push %p``, asynchronous with a spool
directory), a repository, spool, lock and log directory under one temp dir owned by ``postgres``, every
pgBackRest command run as ``postgres``, ``stanza-create``, then ``backup --type=full``. A restore goes into
a new, empty data directory; that cluster is started on a port of its own, waited for until recovery has
ended (``pg_is_in_recovery()`` false), and its database's per-table checksums must equal the original's.

Each pair runs back to back (ours, then pgBackRest at the same compression) so both see the same load.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time

from harness import load_platform, log

STANZA = 'bench'


def installed_version():
    """'pgBackRest 2.45' or None when the program is missing."""
    if not shutil.which('pgbackrest'):
        return None
    return subprocess.run(['pgbackrest', 'version'], check=True, stdout=subprocess.PIPE, text=True).stdout.strip()


class PgBackRest:
    """A pgBackRest configuration for one cluster, every command run as postgres."""

    def __init__(self, cluster, process_max=1):
        self.cluster = cluster
        self.top = tempfile.mkdtemp(prefix='cep-bench-pgbackrest-')
        os.chmod(self.top, 0o711)  # postgres must reach what is inside
        self.paths = {name: os.path.join(self.top, name) for name in ('repo', 'spool', 'lock', 'log')}
        for path in self.paths.values():
            os.makedirs(path, mode=0o750)
            shutil.chown(path, 'postgres', 'postgres')
        self.config = os.path.join(self.top, 'pgbackrest.conf')
        with open(self.config, 'w') as handle:
            handle.write('\n'.join([
                '[global]',
                'repo1-path=%s' % self.paths['repo'],
                'repo1-retention-full=99',
                'spool-path=%s' % self.paths['spool'],
                'lock-path=%s' % self.paths['lock'],
                'log-path=%s' % self.paths['log'],
                'log-level-console=warn',
                'log-level-file=info',
                'archive-async=y',
                'start-fast=y',
                'process-max=%d' % process_max,
                '',
                '[%s]' % STANZA,
                'pg1-path=%s' % cluster.data_dir,
                'pg1-port=%d' % cluster.port,
                'pg1-socket-path=%s' % cluster.socket_dir,
                'pg1-user=postgres',
                '']))
        os.chmod(self.config, 0o640)
        shutil.chown(self.config, 'root', 'postgres')

    def argv(self, command, *options):
        return ['runuser', '-u', 'postgres', '--', 'pgbackrest', '--config=%s' % self.config, '--stanza=%s' % STANZA] \
            + list(options) + [command]

    def run(self, command, *options):
        started = time.monotonic()
        proc = subprocess.run(self.argv(command, *options), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, check=False, cwd=self.top)
        if proc.returncode != 0:
            raise RuntimeError('pgbackrest %s failed (exit %d):\n%s' % (command, proc.returncode, proc.stdout[-3000:]))
        return time.monotonic() - started, proc.stdout

    def archive_settings(self):
        return {'archive_mode': 'on', 'archive_command': 'pgbackrest --config=%s --stanza=%s archive-push %%p' % (
            self.config, STANZA), 'wal_level': 'replica', 'max_wal_senders': '3'}

    def info(self):
        _seconds, out = self.run('info', '--output=json')
        return json.loads(out)[0]['backup']

    def destroy(self):
        shutil.rmtree(self.top, ignore_errors=True)


def wait_promoted(cluster, timeout=300):
    """Wait until the restored cluster has left recovery (the restore is usable for writes)."""
    deadline = time.monotonic() + timeout
    while True:
        if cluster.psql('SELECT pg_is_in_recovery()', check=False).strip() == 'f':
            return
        if time.monotonic() > deadline:
            raise RuntimeError('restored cluster still in recovery after %d s:\n%s' % (timeout, cluster.log_tail()))
        time.sleep(0.1)


def bench_pgbackrest(cluster, workdir, collection, db, size_label):
    """pg_backup/pg_restore vs pgBackRest full backup and restore of the same ~1 GB database."""
    version = installed_version()
    if version is None:
        raise RuntimeError('pgbackrest is not installed: run bench/setup.sh (make bench does) or '
                           'apt-get install pgbackrest')
    pgcluster = load_platform('pgcluster')
    checksum = load_platform('checksum')
    jobs = os.cpu_count() or 1
    log('pgbackrest: computing the original database checksums')
    original = checksum.database_checksums(cluster.dsn(db))
    rest = PgBackRest(cluster)
    saved_settings = dict(cluster.settings)
    backups, restores, checks = [], [], []
    try:
        log('pgbackrest: restarting the cluster with WAL archiving; stanza-create; check')
        cluster.settings.update(rest.archive_settings())
        cluster.restart()
        rest.run('stanza-create')
        rest.run('check')
        root = os.path.join(workdir, 'root-pgbackrest')
        dumps = {}
        # (label, our compression, our level, pgBackRest compress-type, level, process-max)
        pairs = (('gzip level 6 (both tools\' default on PostgreSQL 15)', 'auto', None, 'gz', 6),
                 ('zstd level 3', 'zstd', 3, 'zst', 3))
        for label, ours, level, theirs, their_level in pairs:
            args = {'login_host': cluster.host, 'login_port': cluster.port, 'database': db,
                    'backup_root': '%s-%s' % (root, theirs), 'compression': ours}
            if level is not None:
                args['compression_level'] = level
            log('pgbackrest: pg_backup compression=%s level=%s' % (ours, level))
            result, elapsed = collection.module('pg_backup', args)
            dumps[theirs] = result
            backups.append({'name': 'pg_backup %s (%s-%s)' % (ours, result['compression'], result['compression_level']),
                            'tool': 'pg_backup', 'compression': label, 'seconds': round(elapsed, 2),
                            'core_seconds': result['duration'], 'size': result['size']})
            for process_max in (1, jobs) if jobs > 1 else (1,):
                log('pgbackrest: backup --type=full compress-type=%s level %d process-max %d' % (
                    theirs, their_level, process_max))
                seconds, _out = rest.run('backup', '--type=full', '--compress-type=%s' % theirs,
                                         '--compress-level=%d' % their_level, '--process-max=%d' % process_max)
                newest = rest.info()[-1]
                backups.append({
                    'name': 'pgbackrest backup --type=full, %s-%d, process-max %d' % (theirs, their_level, process_max),
                    'tool': 'pgbackrest', 'compression': label, 'process_max': process_max,
                    'seconds': round(seconds, 2), 'size': newest['info']['repository']['delta'],
                    'cluster_size': newest['info']['size'], 'label': newest['label']})
        gz_label = next(row['label'] for row in backups if row['tool'] == 'pgbackrest' and
                        row['name'].endswith('gz-6, process-max %d' % jobs))
        zst_label = next(row['label'] for row in backups if row['tool'] == 'pgbackrest' and
                         row['name'].endswith('zst-3, process-max %d' % jobs))

        # restores: bare pg_restore, the module (gzip and zstd dumps), pgBackRest (gz and zst backups)
        log('pgbackrest: bare createdb + pg_restore -j %d of the gzip dump' % jobs)
        started = time.monotonic()
        cluster.createdb('bare_restore')
        subprocess.run([cluster.bin('pg_restore'), '-j', str(jobs), '-h', cluster.host, '-p', str(cluster.port),
                        '-U', 'postgres', '-d', 'bare_restore', dumps['gz']['path']], check=True,
                       env=cluster.env('bare_restore'))
        restores.append({'name': 'bare: createdb, pg_restore -j %d (gzip dump)' % jobs, 'tool': 'pg_restore (bare)',
                         'seconds': round(time.monotonic() - started, 2)})
        cluster.dropdb('bare_restore')
        for theirs, backup_label in (('gz', gz_label), ('zst', zst_label)):
            dump = dumps[theirs]
            log('pgbackrest: pg_restore module, fresh target, %s dump' % theirs)
            result, elapsed = collection.module('pg_restore', {
                'login_host': cluster.host, 'login_port': cluster.port, 'backup_root': '%s-%s' % (root, theirs),
                'backup': dump['path'], 'database': 'fresh_restore'})
            restores.append({'name': 'pg_restore module, fresh target (%s-%s dump)' % (
                dump['compression'], dump['compression_level']), 'tool': 'pg_restore module',
                'seconds': round(elapsed, 2), 'core_seconds': result['duration'], 'phases': result['phases'],
                'compression': theirs})
            checks.append(('pg_restore module %s' % theirs, checksum.diff(original, checksum.database_checksums(
                cluster.dsn('fresh_restore')))))
            cluster.dropdb('fresh_restore')

            target_dir = os.path.join(rest.top, 'restore-%s' % theirs)
            os.makedirs(os.path.join(target_dir, 'data'), mode=0o700)
            os.makedirs(os.path.join(target_dir, 'run'), mode=0o755)
            os.makedirs(os.path.join(target_dir, 'spool'), mode=0o750)
            open(os.path.join(target_dir, 'postgres.log'), 'a').close()
            for path in ('data', 'run', 'spool', 'postgres.log'):
                shutil.chown(os.path.join(target_dir, path), 'postgres', 'postgres')
            os.chmod(target_dir, 0o711)
            log('pgbackrest: restore --set=%s into a new data directory, start, wait for the end of recovery' %
                backup_label)
            started = time.monotonic()
            # --type=immediate: recover to the end of this backup (not through the WAL archived after it, which
            # here holds the other runs' restores), then promote: the same point a dump restore gives.
            restore_s, _out = rest.run('restore', '--set=%s' % backup_label, '--type=immediate',
                                       '--target-action=promote', '--pg1-path=%s' % os.path.join(target_dir, 'data'),
                                       # its own spool: the live cluster's asynchronous archive-push uses the other
                                       '--spool-path=%s' % os.path.join(target_dir, 'spool'),
                                       # WAL fetched synchronously (the asynchronous archive-get timed out here under
                                       # load while the live cluster was archiving into the same spool)
                                       '--recovery-option=restore_command=pgbackrest --config=%s --stanza=%s '
                                       '--pg1-path=%s --archive-async=n archive-get %%f "%%p"' % (
                                           rest.config, STANZA, os.path.join(target_dir, 'data')),
                                       '--process-max=%d' % jobs)
            restored = pgcluster.ThrowawayCluster(dir=target_dir, settings={'archive_mode': 'off'})
            try:
                restored.start()
                wait_promoted(restored)
                total = time.monotonic() - started
                restores.append({
                    'name': 'pgbackrest restore (%s backup, process-max %d), start, end of recovery' % (theirs, jobs),
                    'tool': 'pgbackrest', 'seconds': round(total, 2), 'restore_seconds': round(restore_s, 2),
                    'start_seconds': round(total - restore_s, 2), 'compression': theirs})
                checks.append(('pgbackrest %s' % theirs, checksum.diff(original, checksum.database_checksums(
                    restored.dsn(db)))))
            finally:
                try:
                    restored.destroy()
                except pgcluster.ClusterError as exc:  # not running: nothing to stop; the files go with rest.top
                    log('pgbackrest: restored cluster already down (%s)' % exc)
    finally:
        cluster.settings.clear()
        cluster.settings.update(saved_settings)
        cluster.restart()
        rest.destroy()
        for theirs in ('gz', 'zst'):
            shutil.rmtree('%s-%s' % (os.path.join(workdir, 'root-pgbackrest'), theirs), ignore_errors=True)
    failed = [(name, diff) for name, diff in checks if diff]
    if failed:
        raise RuntimeError('restored data differs from the original: %s' % failed)

    by_compression = {}
    for row in backups:
        by_compression.setdefault(row['compression'], []).append(row)
    for rows in by_compression.values():
        peer = next(row for row in rows if row['tool'] == 'pgbackrest' and row['process_max'] == 1)
        for row in rows:
            row['time_ratio_vs_pgbackrest'] = round(row['seconds'] / peer['seconds'], 3)
            row['size_ratio_vs_pgbackrest'] = round(row['size'] / float(peer['size']), 3)
    peers = {row['compression']: row for row in restores if row['tool'] == 'pgbackrest'}
    for row in restores:
        peer = peers[row.get('compression', 'gz')]
        row['time_ratio_vs_pgbackrest'] = round(row['seconds'] / peer['seconds'], 3)
    return {'title': 'pgBackRest (Debian package) full backup and restore vs pg_backup and pg_restore',
            'data': size_label, 'baseline': 'pgbackrest', 'pgbackrest_version': version,
            'backups': backups, 'restores': restores, 'rows': backups + restores,
            'checksums_equal': [name for name, _diff in checks],
            'settings': ('WAL archiving on (archive-push, archive-async with a spool dir), start-fast, repository, '
                         'spool, lock and log under one temp dir, commands run as postgres; pgBackRest\'s defaults '
                         'are compress-type gz, level 6, process-max 1; restores use process-max %d like '
                         'pg_restore -j %d, --type=immediate --target-action=promote (the end of the backup, '
                         'like a dump)' % (jobs, jobs))}


def render_pgbackrest(section):
    from harness import mib  # pylint: disable=import-outside-toplevel
    lines = ['Setup: %s. %s. The restored cluster fetches the backup\'s WAL with a synchronous archive-get (an own '
             'restore_command with `--archive-async=n`: the asynchronous one timed out here under load while the live '
             'cluster archived into the same repository).' % (section['pgbackrest_version'], section['settings']), '',
             '| backup | compression | wall time | size | time vs pgBackRest | size vs pgBackRest | notes |',
             '|---|---|---:|---:|---:|---:|---|']
    for row in section['backups']:
        notes = ''
        if 'core_seconds' in row:
            notes = 'core %.1f s (rest is Ansible start-up); logical dump of one database' % row['core_seconds']
        elif 'cluster_size' in row:
            notes = 'physical copy of the whole cluster (%s before compression)' % mib(row['cluster_size'])
        lines.append('| %s | %s | %.1f s | %s | %.2f× | %.2f× | %s |' % (
            row['name'], row['compression'], row['seconds'], mib(row['size']), row['time_ratio_vs_pgbackrest'],
            row['size_ratio_vs_pgbackrest'], notes))
    lines += ['', '| restore | wall time | time vs pgBackRest (same compression) | notes |', '|---|---:|---:|---|']
    for row in section['restores']:
        notes = ''
        if 'core_seconds' in row:
            notes = 'core %.1f s; phases: %s' % (row['core_seconds'], ', '.join(
                '%s %.1f s' % item for item in sorted(row['phases'].items())))
        elif 'restore_seconds' in row:
            notes = 'restore %.1f s + start and WAL replay to the end of recovery %.1f s' % (
                row['restore_seconds'], row['start_seconds'])
        lines.append('| %s | %.1f s | %.2f× | %s |' % (
            row['name'], row['seconds'], row['time_ratio_vs_pgbackrest'], notes))
    return lines


def conclude_pgbackrest(section):
    backups = section['backups']
    restores = section['restores']
    ours_gz = next(row for row in backups if row['tool'] == 'pg_backup' and row['compression'].startswith('gzip'))
    ours_zst = next(row for row in backups if row['tool'] == 'pg_backup' and row['compression'].startswith('zstd'))
    peer_gz, peer_zst = (next(row for row in backups if row['tool'] == 'pgbackrest' and row['process_max'] == 1 and
                              row['compression'] == ours['compression']) for ours in (ours_gz, ours_zst))
    fastest = min((row for row in backups if row['tool'] == 'pgbackrest'), key=lambda row: row['seconds'])
    module_gz = next(row for row in restores if row['tool'] == 'pg_restore module' and row['compression'] == 'gz')
    module_zst = next(row for row in restores if row['tool'] == 'pg_restore module' and row['compression'] == 'zst')
    rest_gz = next(row for row in restores if row['tool'] == 'pgbackrest' and row['compression'] == 'gz')
    return (
        'No target was set for this comparison; it is reported. At the same compression and one process each, '
        'pg_backup takes **%.2f×** pgBackRest\'s full-backup time with gzip-6 (the default of both) and **%.2f×** '
        'with zstd-3 (inside the module, without Ansible\'s start-up: %.2f× and %.2f×), for **%.2f×** and **%.2f×** '
        'its size. The two do different work: pg_dump writes the rows of one database and leaves the indexes to be '
        'rebuilt at restore; pgBackRest copies every file of the cluster (indexes, catalogs, the other databases) '
        'plus the WAL of the backup, and needs WAL archiving running all the time. pgBackRest\'s fastest backup '
        'here: %s, %.1f s. On restore the difference in kind shows most: pgBackRest copies the files back and '
        'replays only the backup\'s WAL (restore, start and end of recovery: %.1f s), while a logical restore reloads '
        'the rows and rebuilds every index: the pg_restore module takes **%.2f×** pgBackRest\'s time with gzip and '
        '**%.2f×** with zstd. What pg_backup buys for it: one checksummed file per database that a plain '
        '`pg_restore` reads on any server of the same or a newer major version, row-level restores (the '
        'accidental_deletion playbook) and no archiving to run; what pgBackRest buys: point-in-time recovery%s. '
        'Every restore in this section was checked: per-table checksums equal to the '
        'original database (%s).' % (
            ours_gz['time_ratio_vs_pgbackrest'], ours_zst['time_ratio_vs_pgbackrest'],
            ours_gz['core_seconds'] / peer_gz['seconds'], ours_zst['core_seconds'] / peer_zst['seconds'],
            ours_gz['size_ratio_vs_pgbackrest'], ours_zst['size_ratio_vs_pgbackrest'], fastest['name'],
            fastest['seconds'], rest_gz['seconds'], module_gz['time_ratio_vs_pgbackrest'],
            module_zst['time_ratio_vs_pgbackrest'],
            ' and a faster whole-cluster restore' if rest_gz['seconds'] < module_gz['seconds'] else '',
            ', '.join(section['checksums_equal'])))
