# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmarks, side by side with the peers, in one run; regenerates docs/BENCHMARKS.md and its chart.

    make bench                      # bench/setup.sh, then every section on the ~1 GB reference database
    .venv/bin/python bench/run.py --sections database --size 200MB
    .venv/bin/python bench/run.py --sections pgbackrest,dr
    .venv/bin/python bench/run.py --render      # page + chart from the stored JSON, nothing measured

Sections: database (pg_backup vs the seed's pg_dump + sha256sum), restore (pg_restore vs bare pg_restore),
pgbackrest (vs Debian's pgBackRest, bench/pgbackrest_peer.py), media (vs rsync, rsnapshot), offsite (vs bare
boto3), verify (vs sha256sum -c), dr (the database_corruption playbook's RTO, bench/dr_drill.py). Each stores
its figures in docs/benchmarks/<section>.json with the load average at its start; the report and the chart
(docs/benchmarks/benchmarks.png, bench/chart.py) are rendered from all of them plus the optional
docs/benchmarks/drills.json, so a section can be re-run alone.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time

from harness import (CHART, PLATFORM_DIR, REPO, REPORT, RESULTS_DIR, Collection, load_average, load_platform, log, machine,
                     mib, timed)
import dr_drill
import pgbackrest_peer


# --- sections -------------------------------------------------------------------------------

def bench_database(cluster, workdir, collection, db, size_label):
    """pg_backup per compression vs the seed's way (pg_dump -Fc to a file, then sha256sum)."""
    pg_dump = cluster.bin('pg_dump')
    env = cluster.env(db)
    rows = []
    seed_file = os.path.join(workdir, 'seed.dump')
    log('seed way: pg_dump -Fc > file; sha256sum file')
    dump_s = timed([pg_dump, '-Fc', '-h', cluster.host, '-p', str(cluster.port), '-U', 'postgres', '-f', seed_file, db],
                   env=env)
    hash_s = timed(['sha256sum', seed_file], stdout=subprocess.DEVNULL)
    seed = {'name': "seed: pg_dump -Fc, then sha256sum", 'seconds': round(dump_s + hash_s, 2),
            'size': os.path.getsize(seed_file), 'detail': 'dump %.1f s + hash %.1f s' % (dump_s, hash_s)}
    rows.append(seed)
    os.unlink(seed_file)
    bare_file = os.path.join(workdir, 'bare.dump')
    log('bare pg_dump -Fc -Z0')
    bare_s = timed([pg_dump, '-Fc', '-Z0', '-h', cluster.host, '-p', str(cluster.port), '-U', 'postgres', '-f',
                    bare_file, db], env=env)
    rows.append({'name': 'bare pg_dump -Fc -Z0 (no checksum)', 'seconds': round(bare_s, 2),
                 'size': os.path.getsize(bare_file)})
    os.unlink(bare_file)
    for compression, level in (('auto', None), ('gzip', 1), ('zstd', 1), ('zstd', 3), ('none', None)):
        root = os.path.join(workdir, 'root-%s-%s' % (compression, level))
        args = {'login_host': cluster.host, 'login_port': cluster.port, 'database': db, 'backup_root': root,
                'compression': compression}
        if level is not None:
            args['compression_level'] = level
        log('pg_backup compression=%s level=%s' % (compression, level))
        result, elapsed = collection.module('pg_backup', args)
        rows.append({'name': 'pg_backup %s%s (resolved: %s-%s)' % (
            compression, '' if level is None else ' level %d' % level, result['compression'], result['compression_level']),
            'seconds': round(elapsed, 2), 'size': result['size'], 'core_seconds': result['duration'],
            'compression': result['compression'], 'requested': compression})
        shutil.rmtree(root)
    for row in rows:
        row['time_ratio_vs_seed'] = round(row['seconds'] / seed['seconds'], 3)
        row['size_ratio_vs_seed'] = round(row['size'] / float(seed['size']), 3)
    return {'title': 'Database backup (pg_backup) vs the seed script', 'data': size_label, 'rows': rows}


def bench_restore(cluster, workdir, collection, db, size_label):
    """pg_restore module (full, default jobs) vs bare pg_restore -j N of the same dump into an empty database."""
    jobs = os.cpu_count() or 1
    root = os.path.join(workdir, 'root-restore')
    dump_args = {'login_host': cluster.host, 'login_port': cluster.port, 'database': db, 'backup_root': root}
    dump, _elapsed = collection.module('pg_backup', dump_args)
    env = cluster.env(db)
    rows = []
    log('bare: createdb + pg_restore -j %d into an empty database' % jobs)
    started = time.monotonic()
    cluster.createdb('bare_restore')
    subprocess.run([cluster.bin('pg_restore'), '-j', str(jobs), '-h', cluster.host, '-p', str(cluster.port), '-U',
                    'postgres', '-d', 'bare_restore', dump['path']], check=True, env=env)
    bare = {'name': 'bare: createdb, pg_restore -j %d' % jobs, 'seconds': round(time.monotonic() - started, 2)}
    rows.append(bare)
    cluster.dropdb('bare_restore')
    base = {'login_host': cluster.host, 'login_port': cluster.port, 'backup_root': root, 'backup': dump['path']}
    for label, extra in (
            ('pg_restore module, fresh target (verify, scratch, checks, rename)', {'database': 'fresh_restore'}),
            ('pg_restore module over the live database, no safety dump (verify, scratch, checks, swap)',
             {'database': db, 'pre_restore_dump': False}),
            ('pg_restore module over the live database, defaults (adds the pre-restore safety dump)',
             {'database': db})):
        log(label)
        result, elapsed = collection.module('pg_restore', dict(base, **extra))
        rows.append({'name': label, 'seconds': round(elapsed, 2), 'core_seconds': result['duration'],
                     'phases': result['phases']})
        cluster.dropdb(result.get('pre_restore_database') or 'fresh_restore')
    for row in rows:
        row['time_ratio_vs_bare'] = round(row['seconds'] / bare['seconds'], 3)
    return {'title': 'Database restore (pg_restore module) vs bare pg_restore', 'data': size_label, 'rows': rows,
            'dump_size': dump['size'], 'baseline': 'bare'}


def make_media_tree(root, files, total_bytes, seed=7):
    """``files`` files of mixed sizes adding up to about ``total_bytes``, in nested user folders."""
    rng = random.Random(seed)
    weights = [rng.lognormvariate(0, 1.2) for _index in range(files)]
    scale = total_bytes / sum(weights)
    paths = []
    for index, weight in enumerate(weights):
        path = os.path.join(root, 'uploads', 'user%03d' % (index % 200), '%05d.bin' % index)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'wb') as handle:
            handle.write(os.urandom(max(1, int(weight * scale))))
        paths.append(path)
    return paths


def new_space(previous, current):
    """Bytes ``current`` adds when ``previous`` exists (du counts a hard-linked inode once)."""
    if previous is None:
        out = subprocess.run(['du', '-s', '-B1', current], check=True, stdout=subprocess.PIPE, text=True).stdout
        return int(out.split()[0])
    out = subprocess.run(['du', '-s', '-B1', previous, current], check=True, stdout=subprocess.PIPE, text=True).stdout
    return int(out.splitlines()[1].split()[0])


def bench_media(cluster, workdir, collection, db, size_label, files=10000, total=1024 ** 3):
    """media_backup vs bare rsync --link-dest and rsnapshot: first, unchanged, 1% changed; one run."""
    del cluster, db, size_label
    source = os.path.join(workdir, 'media-src')
    log('generating %d files, %s' % (files, mib(total)))
    paths = make_media_tree(source, files, total)
    roots = {name: os.path.join(workdir, 'media-%s' % name) for name in ('module', 'rsync', 'rsync_hax', 'rsnapshot')}
    for root in roots.values():
        os.makedirs(root)
    conf = os.path.join(workdir, 'rsnapshot.conf')
    with open(conf, 'w') as handle:  # rsnapshot wants tabs
        handle.write('config_version\t1.2\nsnapshot_root\t%s/\nno_create_root\t1\ncmd_rsync\t%s\n'
                     'cmd_cp\t/bin/cp\nretain\talpha\t10\nlink_dest\t1\nlockfile\t%s/rsnapshot.pid\n'
                     'backup\t%s/\tlocalhost/\n' % (roots['rsnapshot'], shutil.which('rsync'), workdir, source))
    state = {'module': None, 'rsync': None, 'rsync_hax': None}
    rows = []

    def run_all(phase):
        # media_backup through Ansible, as a user runs it
        result, elapsed = collection.module('media_backup', {'src': [source], 'backup_root': roots['module']})
        rows.append({'tool': 'media_backup', 'phase': phase, 'seconds': round(elapsed, 2),
                     'core_seconds': result['duration'], 'new_space': result['new_space'],
                     'du_new_space': new_space(state['module'], result['snapshot'])})
        state['module'] = result['snapshot']
        # bare rsync -a --link-dest
        target = os.path.join(roots['rsync'], phase)
        argv = ['rsync', '-a'] + (['--link-dest=%s' % state['rsync']] if state['rsync'] else []) + [source + '/',
                                                                                                    target + '/']
        seconds = timed(argv)
        rows.append({'tool': 'rsync -a --link-dest', 'phase': phase, 'seconds': round(seconds, 2),
                     'du_new_space': new_space(state['rsync'], target)})
        state['rsync'] = target
        # the same rsync with what media_backup preserves too: hard links, ACLs, xattrs, numeric ids
        target = os.path.join(roots['rsync_hax'], phase)
        argv = ['rsync', '-aHAX', '--numeric-ids'] + (['--link-dest=%s' % state['rsync_hax']] if state['rsync_hax']
                                                      else []) + [source + '/', target + '/']
        seconds = timed(argv)
        rows.append({'tool': 'rsync -aHAX --numeric-ids --link-dest', 'phase': phase, 'seconds': round(seconds, 2),
                     'du_new_space': new_space(state['rsync_hax'], target)})
        state['rsync_hax'] = target
        # rsnapshot (Debian package)
        seconds = timed(['rsnapshot', '-c', conf, 'alpha'])
        current = os.path.join(roots['rsnapshot'], 'alpha.0')
        previous = os.path.join(roots['rsnapshot'], 'alpha.1')
        rows.append({'tool': 'rsnapshot', 'phase': phase, 'seconds': round(seconds, 2),
                     'du_new_space': new_space(previous if os.path.isdir(previous) else None, current)})

    for phase in ('first', 'unchanged'):
        log('media: %s snapshot' % phase)
        run_all(phase)
    for path in paths[::100]:  # 1% of the files change
        with open(path, 'r+b') as handle:
            handle.write(os.urandom(64))
    log('media: 1% changed')
    run_all('1% changed')
    by = {(row['tool'], row['phase']): row for row in rows}
    for row in rows:
        bare = by[('rsync -a --link-dest', row['phase'])]
        row['time_ratio_vs_rsync'] = round(row['seconds'] / bare['seconds'], 3)
        if 'core_seconds' in row:
            row['core_ratio_vs_rsync'] = round(row['core_seconds'] / bare['seconds'], 3)
    return {'title': 'Media snapshots (media_backup) vs rsync --link-dest and rsnapshot', 'baseline': 'rsync',
            'data': '%d files, %s of random (incompressible) data in 200 folders' % (files, mib(total)),
            'rows': rows}


def render_media(section):
    lines = ['| tool | run | wall time | vs bare rsync | new space | notes |', '|---|---|---:|---:|---:|---|']
    for row in section['rows']:
        notes = ''
        if 'core_seconds' in row:
            notes = 'inside the module %.2f s = %.2f× rsync (the rest is Ansible start-up); manifest included' % (
                row['core_seconds'], row['core_ratio_vs_rsync'])
        lines.append('| %s | %s | %.2f s | %.2f× | %s | %s |' % (
            row['tool'], row['phase'], row['seconds'], row['time_ratio_vs_rsync'], mib(row['du_new_space']), notes))
    return lines


def conclude_media(section):
    by = {(row['tool'], row['phase']): row for row in section['rows']}
    first = by[('media_backup', 'first')]
    unchanged = by[('media_backup', 'unchanged')]
    changed = by[('media_backup', '1% changed')]
    ratio = unchanged['du_new_space'] / float(max(first['du_new_space'], 1))
    hax = by.get(('rsync -aHAX --numeric-ids --link-dest', 'unchanged'))
    hax_text = (' The same rsync with the preservation media_backup asks of it (-HAX --numeric-ids) takes %.2f× bare '
                'rsync on the unchanged run, so that much of the gap is the preservation, the rest the manifest.'
                % hax['time_ratio_vs_rsync']) if hax else ''
    return ('Targets: ≤ 1.2× bare rsync on the incremental runs; new space < 1%% when unchanged. New space of the '
            'unchanged snapshot: **%.3f%%** of the first (%s: directories and the manifest). Incremental wall time: '
            '**%.2f×** (unchanged) and **%.2f×** (1%% changed) bare rsync through `ansible`, of which the module '
            'itself is **%.2f×** and **%.2f×**: the difference is Ansible\'s start-up (about a second), which a '
            'scheduled run of the same core does not pay. %s' % (
                100 * ratio, 'met' if ratio < 0.01 else 'missed', unchanged['time_ratio_vs_rsync'],
                changed['time_ratio_vs_rsync'], unchanged['core_ratio_vs_rsync'], changed['core_ratio_vs_rsync'],
                'The module-internal time meets the 1.2× target.' if max(
                    unchanged['core_ratio_vs_rsync'], changed['core_ratio_vs_rsync']) <= 1.2 else
                'The module-internal time misses the 1.2× target: it also writes a SHA-256 manifest (hashing the '
                'changed files and stat-ing every file) that bare rsync does not.') + hax_text)


def bench_offsite(cluster, workdir, collection, db, size_label, total=256 * 1024 ** 2, files=4):
    """offsite_sync push to moto_server on loopback vs bare boto3 upload_file of the same files; one run."""
    del cluster, db, size_label
    sys.path[:0] = [os.path.join(REPO, 'tests', 'integration'), collection.root]
    # pylint: disable=import-outside-toplevel
    import s3_peer  # the integration suite's moto_server starter
    from ansible_collections.cepcomunicacion.backup.plugins.module_utils import artifact
    root = os.path.join(workdir, 'offsite-root')
    directory = os.path.join(root, 'database')
    os.makedirs(directory)
    log('offsite: writing %d dumps, %s of random data' % (files, mib(total)))
    paths = []
    for index in range(files):
        path = os.path.join(directory, 'cepcomunicacion_2026-11-%02d_02-00-00.dump' % (index + 1))
        with artifact.ArtifactWriter(path) as writer:
            for _chunk in range(total // files // (4 * 1024 ** 2)):
                writer.write(os.urandom(4 * 1024 ** 2))
            writer.commit({'kind': 'database'})
        paths.append(path)
    size = sum(os.path.getsize(path) for path in paths)
    server = s3_peer.MotoServer()
    rows = []
    try:
        client = s3_peer.s3_client(server.endpoint)
        for name in ('bare', 'module', 'module-noverify'):
            client.create_bucket(Bucket='bench-%s' % name)
        log('offsite: bare boto3 upload_file')
        started = time.monotonic()
        for path in paths:
            client.upload_file(path, 'bench-bare', 'web1/database/' + os.path.basename(path))
        bare = {'name': 'bare boto3 upload_file (default TransferConfig, no sidecars, no read-back)',
                'seconds': round(time.monotonic() - started, 2), 'bytes': size}
        rows.append(bare)
        base = {'backup_root': root, 'prefix': 'web1', 'endpoint_url': server.endpoint,
                'access_key': s3_peer.TEST_KEY, 'secret_key': s3_peer.TEST_SECRET,
                'status_file': os.path.join(workdir, 'status.json'), 'kinds': ['database']}
        for label, bucket, extra in (
                ('offsite_sync push (sidecars, SHA-256 checksum, read-back verify)', 'bench-module', {}),
                ('offsite_sync push, verify_upload: false', 'bench-module-noverify', {'verify_upload': False})):
            log('offsite: %s' % label)
            result, elapsed = collection.module('offsite_sync', dict(base, bucket=bucket, **extra))
            rows.append({'name': label, 'seconds': round(elapsed, 2), 'core_seconds': result['duration'],
                         'bytes': result['bytes_uploaded']})
    finally:
        server.stop()
    for row in rows:
        row['time_ratio_vs_bare'] = round(row['seconds'] / bare['seconds'], 3)
        row['throughput_ratio_vs_bare'] = round(bare['seconds'] / row.get('core_seconds', row['seconds']), 3)
        row['mib_per_s'] = round(size / 1048576.0 / row.get('core_seconds', row['seconds']), 1)
    return {'title': 'Offsite push (offsite_sync) vs bare boto3 upload_file to moto_server on loopback',
            'baseline': 'bare', 'rows': rows,
            'data': '%d dumps, %s of random (incompressible) data' % (files, mib(size))}


def conclude_offsite(section):
    rows = section['rows']
    verified, unverified = rows[1], rows[2]
    return ('Target: push throughput ≥ 0.9× a bare boto3 `upload_file` of the same files. Inside the module (core '
            'time, without Ansible\'s start-up) the push reaches **%.2f×** the bare throughput with the read-back '
            'verification (%.1f MiB/s) and **%.2f×** without it (%.1f MiB/s): %s. The read-back downloads every '
            'byte again, because an S3-compatible server is not trusted to have stored what it acknowledged (moto '
            'does not verify checksums); `verify_upload: false` trades that proof for speed.' % (
                verified['throughput_ratio_vs_bare'], verified['mib_per_s'], unverified['throughput_ratio_vs_bare'],
                unverified['mib_per_s'],
                'met with verification' if verified['throughput_ratio_vs_bare'] >= 0.9 else
                ('met only without verification' if unverified['throughput_ratio_vs_bare'] >= 0.9 else 'missed')))


def bench_verify(workdir, collection, total=1024 ** 3, files=30):
    """backup_check's deep verify of every artifact vs `sha256sum -c` over the same files; one run, warm cache."""
    sys.path.insert(0, collection.root)
    from ansible_collections.cepcomunicacion.backup.plugins.module_utils import artifact, catalogue, health, layout
    root = os.path.join(workdir, 'verify-root')
    directory = layout.KINDS['database'].directory(root)
    artifact.ensure_directory(directory)
    log('writing %d artifacts, %s' % (files, mib(total)))
    now = layout.utcnow()
    chunk = os.urandom(1024 * 1024)
    for index in range(files):
        created = now - datetime.timedelta(hours=index)
        with artifact.ArtifactWriter(os.path.join(directory, layout.database_dump_name('database', created))) as out:
            for _block in range(max(1, total // files // len(chunk))):
                out.write(chunk[index:] + chunk[:index])
            out.commit({'kind': 'database', 'created': created.isoformat()})
    sidecars = sorted(name for name in os.listdir(directory) if name.endswith('.sha256'))
    subprocess.run(['cat'] + [name[:-len('.sha256')] for name in sidecars], cwd=directory, check=True,
                   stdout=subprocess.DEVNULL)  # warm the page cache for both, so both measure hashing
    log('sha256sum -c over %d files' % len(sidecars))
    bare_s = timed(['sha256sum', '-c', '--quiet'] + sidecars, cwd=directory)
    items = catalogue.list_artifacts(root, ['database'])
    log('health.verify_artifacts (the deep checksum check) over the same files')
    started = time.monotonic()
    results = health.verify_artifacts(items, health.Settings({'backup_root': root}).verify_workers)
    core_s = time.monotonic() - started
    if sorted(status for status, _actual in results.values()) != ['ok'] * len(items):
        raise RuntimeError('verify found a mismatch in freshly written artifacts: %s' % results)
    result, module_s = collection.module('backup_check', {
        'backup_root': root, 'status_file': os.path.join(workdir, 'verify-status.json'), 'kinds': ['database'],
        'deep': True})
    rows = [{'name': 'sha256sum -c (coreutils), %d files' % len(sidecars), 'seconds': round(bare_s, 2)},
            {'name': 'deep verify in the core (catalogue.verify, %d threads)' % health.Settings(
                {'backup_root': root}).verify_workers, 'seconds': round(core_s, 2)},
            {'name': 'backup_check deep: true through `ansible` (every check)', 'seconds': round(module_s, 2),
             'core_seconds': result['duration']}]
    for row in rows:
        row['time_ratio_vs_bare'] = round(row['seconds'] / bare_s, 3)
    shutil.rmtree(root)
    return {'title': 'Deep verify (backup_check deep: true) vs sha256sum -c', 'baseline': 'bare',
            'data': '%d dump artifacts, %s of random (incompressible) data, page cache warm' % (files, mib(total)),
            'rows': rows}


def conclude_verify(section):
    core = section['rows'][1]
    return ('Target: deep verify in ≤ 0.35× the wall time of `sha256sum -c` over the same files. The core takes '
            '**%.2f×** (%s): hashlib (SHA-NI) streams each file once into a reused buffer, and files are hashed on '
            'parallel threads (hashlib releases the GIL). Through `ansible` the module also pays Ansible\'s start-up '
            'and runs every other check.' % (core['time_ratio_vs_bare'],
                                             'met' if core['time_ratio_vs_bare'] <= 0.35 else 'missed'))


def bench_pgbackrest(cluster, workdir, collection, db, size_label):
    return pgbackrest_peer.bench_pgbackrest(cluster, workdir, collection, db, size_label)


def bench_dr(cluster, workdir, collection, db, size_label):
    return dr_drill.bench_dr(cluster, workdir, collection, db, size_label)


# In the order they run and appear in the report; dr damages and restores the database, so it runs last.
SECTIONS = {'database': bench_database, 'restore': bench_restore, 'pgbackrest': bench_pgbackrest,
            'media': bench_media, 'offsite': bench_offsite, 'verify': bench_verify, 'dr': bench_dr}
NEEDS_DATABASE = {'database', 'restore', 'pgbackrest', 'dr'}
DRILLS = os.path.join(RESULTS_DIR, 'drills.json')


# --- report ---------------------------------------------------------------------------------

def _verdict(row, time_target, size_target=None):
    ok = row['time_ratio_vs_seed'] <= time_target and (size_target is None or row['size_ratio_vs_seed'] <= size_target)
    return 'meets' if ok else 'misses'


def conclude_database(section):
    auto = next(row for row in section['rows'] if row.get('requested') == 'auto')
    zstd = [row for row in section['rows'] if row.get('compression') == 'zstd']
    zstd_text = '; '.join('%s: **%.2f×** the time at **%.2f×** the size (%s)' % (
        row['name'].split(' (')[0], row['time_ratio_vs_seed'], row['size_ratio_vs_seed'], _verdict(row, 0.5, 1.0))
        for row in zstd)
    return (
        'Target: the default at ≤ 0.5× the seed\'s wall time at no larger size. The default (`auto`, gzip level 6 '
        'on PostgreSQL 15) takes **%.2f×** the seed\'s time at **%.2f×** its size: it %s the target, for a measured '
        'reason. On PostgreSQL 15 the only compression a plain `pg_restore` reads is pg_dump\'s own single-threaded '
        'gzip, and it is the bottleneck; the seed\'s separate `sha256sum` pass, which pg_backup folds into the write, '
        'is all there is to save while the default stays restorable by hand (the issue\'s hard requirement). '
        'With zstd (streamed through the `zstd` program on PostgreSQL 15): %s. A zstd dump is restored by '
        '`zstd -dc FILE | pg_restore` or by the pg_restore module; `compression: zstd` is the setting for '
        'operators who want the speed, and `auto` switches to native zstd on PostgreSQL 16+, where a plain '
        'pg_restore reads it. On small data the ~1 s of Ansible start-up dominates every ratio; read the 1 GB '
        'run.' % (auto['time_ratio_vs_seed'], auto['size_ratio_vs_seed'], _verdict(auto, 0.5, 1.0), zstd_text))


def conclude_restore(section):
    rows = section['rows']
    nearest = rows[1]
    swap = rows[2]
    return ('The module restoring into a fresh target takes **%.2f×** bare `pg_restore -j`, and over the live '
            'database without the safety dump **%.2f×** (target ≤ 1.15×: %s). Verify (one streaming SHA-256 pass), '
            'the scratch-database checks (table list, exact row counts) and the swap are what it adds; the default '
            'also takes a pre-restore safety dump of the live database, which costs a full pg_dump and is reported '
            'separately because it is a choice (`pre_restore_dump: false` skips it).' % (
                nearest['time_ratio_vs_bare'], swap['time_ratio_vs_bare'],
                'met' if swap['time_ratio_vs_bare'] <= 1.15 else 'missed'))


CONCLUSIONS = {'database': conclude_database, 'restore': conclude_restore, 'media': conclude_media,
               'verify': conclude_verify, 'offsite': conclude_offsite,
               'pgbackrest': pgbackrest_peer.conclude_pgbackrest, 'dr': dr_drill.conclude_dr}
RENDERERS = {'media': render_media, 'pgbackrest': pgbackrest_peer.render_pgbackrest, 'dr': dr_drill.render_dr}


def first_line(argv):
    try:
        out = subprocess.run(argv, check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout
    except OSError:
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def versions(cluster=None):
    """Versions of the programs and libraries the sections measure (what this run used)."""
    found = {}
    if cluster is not None:
        found['PostgreSQL (server)'] = cluster.psql('SHOW server_version').strip()
        found['pg_dump'] = first_line([cluster.bin('pg_dump'), '--version'])
    for name, argv in (('pgBackRest', ['pgbackrest', 'version']), ('rsync', ['rsync', '--version']),
                       ('rsnapshot', ['dpkg-query', '-W', '-f=${Version}', 'rsnapshot']),
                       ('zstd', ['zstd', '--version']), ('coreutils sha256sum', ['sha256sum', '--version'])):
        if shutil.which(argv[0]):
            found[name] = first_line(argv)
    found['ansible-core'] = first_line([os.path.join(os.path.dirname(sys.executable), 'ansible'), '--version'])
    try:
        from importlib import metadata  # pylint: disable=import-outside-toplevel
        for package in ('boto3', 'moto', 'psycopg2-binary'):
            try:
                found[package] = metadata.version(package)
            except metadata.PackageNotFoundError:
                pass
    except ImportError:
        pass
    found['Python'] = sys.version.split()[0]
    return {key: value for key, value in found.items() if value}


def tidy_version(name, text):
    """'rsync  version 3.5.0  protocol version 32' -> '3.5.0' (the server's full string is kept)."""
    if name.startswith('PostgreSQL'):
        return text
    match = re.search(r'\d+(?:\.\d+)+(?:-\w+)?', text)
    return match.group(0) if match else text


def load_sections():
    sections = {}
    for name in sorted(os.listdir(RESULTS_DIR)) if os.path.isdir(RESULTS_DIR) else []:
        if name.endswith('.json') and name != os.path.basename(DRILLS):
            with open(os.path.join(RESULTS_DIR, name)) as handle:
                section = json.load(handle)
            sections[section.get('name', name[:-len('.json')])] = section
    drills = {}
    if os.path.exists(DRILLS):
        with open(DRILLS) as handle:
            drills = json.load(handle)
    return sections, drills


def glance(sections):
    """One row per ratio the issues asked for: ours, the peer, the ratio, the target, the verdict."""
    rows = []

    def add(measure, ours, peer, ratio, target, verdict):
        rows.append('| %s | %s | %s | %s | %s | %s |' % (measure, ours, peer, ratio, target, verdict))

    database = sections.get('database')
    if database:
        seed = database['rows'][0]
        for row in database['rows']:
            if row.get('requested') == 'auto' or (row.get('compression') == 'zstd' and 'level 3' in row['name']):
                add('database backup, %s' % row['name'].split(' (')[0], '%.1f s, %s' % (row['seconds'], mib(row['size'])),
                    'seed: pg_dump -Fc + sha256sum %.1f s, %s' % (seed['seconds'], mib(seed['size'])),
                    '%.2f× time, %.2f× size' % (row['time_ratio_vs_seed'], row['size_ratio_vs_seed']),
                    '≤ 0.5× time, ≤ 1× size', _verdict(row, 0.5, 1.0))
    restore = sections.get('restore')
    if restore:
        bare = restore['rows'][0]
        for row in restore['rows'][1:3]:
            add(row['name'].split(' (')[0],
                '%.1f s' % row['seconds'], '%s %.1f s' % (bare['name'], bare['seconds']),
                '%.2f×' % row['time_ratio_vs_bare'], '≤ 1.15×',
                'meets' if row['time_ratio_vs_bare'] <= 1.15 else 'misses')
    media = sections.get('media')
    if media:
        by = {(row['tool'], row['phase']): row for row in media['rows']}
        for phase in ('unchanged', '1% changed'):
            ours, bare = by[('media_backup', phase)], by[('rsync -a --link-dest', phase)]
            add('media snapshot, %s (inside the module / through ansible)' % phase,
                '%.2f s / %.2f s' % (ours['core_seconds'], ours['seconds']), 'rsync --link-dest %.2f s' % bare['seconds'],
                '%.2f× / %.2f×' % (ours['core_ratio_vs_rsync'], ours['time_ratio_vs_rsync']), '≤ 1.2×',
                'meets' if ours['core_ratio_vs_rsync'] <= 1.2 else 'misses')
        first, unchanged = by[('media_backup', 'first')], by[('media_backup', 'unchanged')]
        share = unchanged['du_new_space'] / float(max(first['du_new_space'], 1))
        add('media snapshot, new space when unchanged', mib(unchanged['du_new_space']),
            'first snapshot %s' % mib(first['du_new_space']), '%.3f%%' % (100 * share), '< 1%',
            'meets' if share < 0.01 else 'misses')
    offsite = sections.get('offsite')
    if offsite:
        bare = offsite['rows'][0]
        for row in offsite['rows'][1:]:
            add(row['name'], '%.1f MiB/s (core)' % row['mib_per_s'], 'boto3 upload_file %.1f MiB/s' % bare['mib_per_s'],
                '%.2f× throughput' % row['throughput_ratio_vs_bare'], '≥ 0.9×',
                'meets' if row['throughput_ratio_vs_bare'] >= 0.9 else 'misses')
    verify = sections.get('verify')
    if verify:
        bare, core = verify['rows'][0], verify['rows'][1]
        add('deep verify (core)', '%.1f s' % core['seconds'], 'sha256sum -c %.1f s' % bare['seconds'],
            '%.2f×' % core['time_ratio_vs_bare'], '≤ 0.35×', 'meets' if core['time_ratio_vs_bare'] <= 0.35 else 'misses')
    rest = sections.get('pgbackrest')
    if rest:
        for row in rest['backups']:
            if row['tool'] == 'pg_backup':
                peer = next(other for other in rest['backups'] if other['tool'] == 'pgbackrest' and
                            other['compression'] == row['compression'] and other['process_max'] == 1)
                add('database backup vs pgBackRest full, %s' % row['compression'],
                    '%.1f s, %s' % (row['seconds'], mib(row['size'])),
                    'pgBackRest %.1f s, %s' % (peer['seconds'], mib(peer['size'])),
                    '%.2f× time, %.2f× size' % (row['time_ratio_vs_pgbackrest'], row['size_ratio_vs_pgbackrest']),
                    'none set (reported)', '-')
        for row in rest['restores']:
            if row['tool'] == 'pg_restore module':
                peer = next(other for other in rest['restores'] if other['tool'] == 'pgbackrest' and
                            other['compression'] == row['compression'])
                add('database restore vs pgBackRest restore + start, %s' % row['compression'],
                    '%.1f s' % row['seconds'], 'pgBackRest %.1f s' % peer['seconds'],
                    '%.2f×' % row['time_ratio_vs_pgbackrest'], 'none set (reported)', '-')
    dr = sections.get('dr')
    if dr:
        add('database_corruption playbook RTO, %s, localhost' % dr['data'].split(' (')[0], '%.1f s (restore phase %.1f s)' % (
            dr['rto_seconds'], dr['restore_phase_seconds']), '-', '-', '≤ %d s' % dr['rto_target_seconds'],
            'meets' if dr['rto_seconds'] <= dr['rto_target_seconds'] else 'misses')
    if not rows:
        return []
    return ['## At a glance: every ratio asked for, side by side with the peer', '',
            '| measure | ours | peer | ratio | target | verdict |', '|---|---|---|---:|---|---|'] + rows + ['']


def render_drills(drills):
    lines = ['## Disaster-recovery drills: RTO per scenario', '',
             'From `docs/benchmarks/drills.json` (`{scenario: {rto_seconds, wall_seconds, note}}`), filled in from the '
             'RTO lines the drills print (`make drills`, tests/integration/test_dr_playbooks.py); the 1 GB figure is '
             'the `dr` section below.', '',
             '| scenario | RTO | drill wall time | where |', '|---|---:|---:|---|']
    for scenario, figures in sorted(drills.items()):
        wall = figures.get('wall_seconds')
        lines.append('| %s | %.1f s | %s | %s |' % (
            scenario, figures['rto_seconds'], '%.1f s' % wall if wall is not None else '-', figures.get('note', '')))
    return lines + ['']


def render_table(section):
    if section.get('baseline') == 'bare':
        lines = ['| run | wall time | time vs bare | notes |', '|---|---:|---:|---|']
    else:
        lines = ['| run | wall time | size | time vs seed | size vs seed | notes |', '|---|---:|---:|---:|---:|---|']
    for row in section['rows']:
        notes = row.get('detail', '')
        if 'core_seconds' in row:
            notes = 'core %.1f s (rest is Ansible start-up)' % row['core_seconds']
        if row.get('phases'):
            notes += '; phases: ' + ', '.join('%s %.1f s' % item for item in sorted(row['phases'].items()))
        if section.get('baseline') == 'bare':
            lines.append('| %s | %.1f s | %.2f× | %s |' % (row['name'], row['seconds'], row['time_ratio_vs_bare'], notes))
        else:
            lines.append('| %s | %.1f s | %s | %.2f× | %.2f× | %s |' % (
                row['name'], row['seconds'], mib(row['size']), row['time_ratio_vs_seed'], row['size_ratio_vs_seed'],
                notes))
    return lines


def render():
    """docs/BENCHMARKS.md and the chart from docs/benchmarks/*.json; returns False when the chart was not drawn."""
    sections, drills = load_sections()
    ordered = [sections[name] for name in SECTIONS if name in sections]
    ordered += [section for name, section in sorted(sections.items()) if name not in SECTIONS]
    newest = max(ordered, key=lambda section: section['meta']['date']) if ordered else None
    lines = ['# Benchmarks', '',
             'Generated by `make bench` (`bench/run.py`) from the figures in `docs/benchmarks/*.json`; do not edit by '
             'hand (`bench/run.py --render` rebuilds this page and the chart from the JSON without measuring). Each '
             'section is one run, the collection side by side with its peer, on the reference platform\'s generated '
             'data (`reference_platform/generate_data.py`).', '',
             '**Noise.** The benchmark machine is shared with other workers running tests, so timings are noisy. '
             'Within a section the collection and its peer run back to back in the same run, so both see the same '
             'load; read the ratios more than the seconds. Each section records the load average (1, 5, 15 min) at '
             'its start (sections measured before this was recorded show "not recorded").', '']
    if newest:
        machine_info = newest['meta']['machine']
        lines += ['**Machine.** %s, %s cores, kernel %s, Python %s.' % (
            machine_info['cpu'] or 'unknown CPU', machine_info['cores'], machine_info['kernel'],
            machine_info.get('python', '?')), '']
        found = {}
        for section in sorted(ordered, key=lambda item: item['meta']['date']):
            found.update(section['meta'].get('versions', {}))
        if found:
            lines += ['**Versions** (newest run): ' + '; '.join('%s %s' % (name, tidy_version(name, text)) for name, text
                                                                in sorted(found.items())) + '.', '']
    chart_drawn = draw_chart(sections, drills)
    if os.path.exists(CHART):
        lines += ['![Drill RTOs and backup/restore timings, ours (blue) vs the peers (grey)](benchmarks/%s)' %
                  os.path.basename(CHART), '']
    lines += glance(sections)
    if drills:
        lines += render_drills(drills)
    for section in ordered:
        meta = section['meta']
        load = meta.get('load_average_at_start')
        lines += ['## %s' % section['title'], '',
                  'Run %s on %s (%s cores), %s; PostgreSQL %s; data: %s; load average at start: %s%s.' % (
                      meta['date'], meta['machine']['cpu'] or 'unknown CPU', meta['machine']['cores'],
                      meta['machine']['kernel'], meta.get('postgres', '?'), section['data'],
                      ', '.join('%.2f' % value for value in load) if load else 'not recorded',
                      '; the section took %.0f s' % meta['section_seconds'] if meta.get('section_seconds') else ''), '']
        renderer = RENDERERS.get(section.get('name'), render_table)
        lines += renderer(section)
        conclusion = CONCLUSIONS[section['name']](section) if section.get('name') in CONCLUSIONS else ''
        if conclusion:
            lines += ['', conclusion]
        lines.append('')
    with open(REPORT, 'w') as handle:
        handle.write('\n'.join(lines))
    return chart_drawn


def draw_chart(sections, drills):
    try:
        import chart  # pylint: disable=import-outside-toplevel
    except ImportError as exc:
        log('chart NOT regenerated (%s): pip install -r bench/requirements.txt, or run make bench' % exc)
        return False
    return chart.draw(sections, drills, CHART)


def parse_size(text):
    units = {'KB': 1024, 'MB': 1024 ** 2, 'GB': 1024 ** 3}
    text = text.strip().upper()
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return int(float(text[:-len(suffix)]) * factor)
    return int(text)


def run_section(name, args, cluster, workdir, collection, db, label):
    if name == 'verify':
        return bench_verify(workdir, collection, parse_size(args.verify_size))
    if name == 'media':
        return bench_media(cluster, workdir, collection, db, label, args.media_files, parse_size(args.media_size))
    if name == 'offsite':
        return bench_offsite(cluster, workdir, collection, db, label, parse_size(args.offsite_size))
    return SECTIONS[name](cluster, workdir, collection, db, label)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sections', default=','.join(SECTIONS), help='comma-separated: %s' % ', '.join(SECTIONS))
    parser.add_argument('--size', default='1GB', help='reference database size (default 1GB)')
    parser.add_argument('--workdir', default=None, help='scratch space (default: a temp dir, removed afterwards)')
    parser.add_argument('--media-files', type=int, default=10000, help='media section: number of files')
    parser.add_argument('--media-size', default='1GB', help='media section: total size of the files')
    parser.add_argument('--offsite-size', default='1GB', help='offsite section: total size of the dumps pushed')
    parser.add_argument('--verify-size', default='1GB', help='verify section: total size of the artifacts')
    parser.add_argument('--render', '--render-only', dest='render', action='store_true',
                        help='only rebuild docs/BENCHMARKS.md and the chart from docs/benchmarks/*.json (no measuring)')
    args = parser.parse_args(argv)
    if args.render:
        drawn = render()
        log('wrote %s%s' % (REPORT, ' and %s' % CHART if drawn else ''))
        return 0 if drawn else 1
    sections = [name.strip() for name in args.sections.split(',') if name.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error('unknown section(s): %s (known: %s)' % (', '.join(unknown), ', '.join(SECTIONS)))
    sections = [name for name in SECTIONS if name in sections]  # dr last: it damages and restores the database
    if 'pgbackrest' in sections and pgbackrest_peer.installed_version() is None:
        parser.error('the pgbackrest section needs Debian\'s pgbackrest package: run bench/setup.sh (make bench does)')
    pgcluster = load_platform('pgcluster')
    if not args.workdir:  # bench/output/ is git-ignored and left out of scripts/ansible_test.sh's mirror
        os.makedirs(os.path.join(REPO, 'bench', 'output'), exist_ok=True)
    workdir = args.workdir or tempfile.mkdtemp(prefix='run-', dir=os.path.join(REPO, 'bench', 'output'))
    os.makedirs(workdir, exist_ok=True)
    cluster = pgcluster.ThrowawayCluster()
    cluster.start()
    try:
        db = 'cepcomunicacion'
        db_size = 0
        if set(sections) & NEEDS_DATABASE:
            cluster.createdb(db)
            log('generating %s of reference data' % args.size)
            started = time.monotonic()
            subprocess.run([sys.executable, os.path.join(PLATFORM_DIR, 'generate_data.py'), '--dsn', cluster.dsn(db),
                            '--size', args.size, '--quiet'], check=True, stdout=subprocess.DEVNULL)
            db_size = int(cluster.psql("SELECT pg_database_size('%s')" % db).strip())
            log('generated %s in %.0f s' % (mib(db_size), time.monotonic() - started))
        postgres_version = cluster.psql('SHOW server_version').strip()
        tool_versions = versions(cluster)
        collection = Collection(workdir)
        os.makedirs(RESULTS_DIR, exist_ok=True)
        label = '%s generated (%s in PostgreSQL)' % (args.size, mib(db_size))
        for name in sections:
            load = load_average()
            log('%s: starting (load average %s)' % (name, ' '.join('%.2f' % value for value in load)))
            started = time.monotonic()
            section = run_section(name, args, cluster, workdir, collection, db, label)
            section['meta'] = {'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
                               'machine': machine(), 'postgres': postgres_version, 'versions': tool_versions,
                               'load_average_at_start': load, 'section_seconds': round(time.monotonic() - started, 1)}
            section['name'] = name
            with open(os.path.join(RESULTS_DIR, '%s.json' % name), 'w') as handle:
                json.dump(section, handle, indent=2)
                handle.write('\n')
            log('%s: done in %.0f s' % (name, section['meta']['section_seconds']))
    finally:
        cluster.destroy()
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    drawn = render()
    log('wrote %s%s' % (REPORT, ' and %s' % CHART if drawn else ''))
    return 0


if __name__ == '__main__':
    sys.exit(main())
