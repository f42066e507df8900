# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The DR drills' S3 peer: moto_server on the drills' own podman network, nowhere else.

    drills_peer.py network        create the podman network cepcomunicacion-drills (10.89.77.0/24) if
                                  missing and make sure the host holds its gateway address
    drills_peer.py start          network, then a fresh (empty, in-memory) moto_server bound to the
                                  gateway only (10.89.77.1:18766) and the drills' bucket created with
                                  Object Lock; prints the endpoint
    drills_peer.py stop           stop the moto_server started by 'start' (no-op when none runs)
    drills_peer.py remove-network stop, then remove the network

scripts/drills.sh starts a fresh peer before each scenario and stops it after, so scenarios never
see each other's objects. The containers reach it over the network's bridge; it is not bound to any
other address. Run with the venv's python (moto and boto3 come from there). State (pid, log) lives
in build/drills/.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

NETWORK = 'cepcomunicacion-drills'
SUBNET = '10.89.77.0/24'
GATEWAY = '10.89.77.1'
PORT = 18766
BUCKET = 'cepcomunicacion-drills'
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STATE = os.path.join(ROOT, 'build', 'drills')
PIDFILE = os.path.join(STATE, 'moto.pid')
LOGFILE = os.path.join(STATE, 'moto.log')
ENDPOINT = 'http://%s:%d' % (GATEWAY, PORT)


def log(message):
    print('drills_peer: %s' % message, file=sys.stderr, flush=True)


def podman(*argv, check=True):
    return subprocess.run(['podman'] + list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          check=check)


def gateway_present():
    shown = subprocess.run(['ip', '-o', '-4', 'addr', 'show'], stdout=subprocess.PIPE, text=True, check=True).stdout
    return (' %s/' % GATEWAY) in shown


def ensure_network():
    if podman('network', 'exists', NETWORK, check=False).returncode != 0:
        log('creating podman network %s (%s)' % (NETWORK, SUBNET))
        podman('network', 'create', '--subnet', SUBNET, '--gateway', GATEWAY, NETWORK)
    if not gateway_present():
        # The bridge (and the host's gateway address on it) appears when the first container joins.
        image = os.environ.get('DRILLS_BASE_IMAGE')
        if not image:
            sys.exit('drills_peer: DRILLS_BASE_IMAGE is not set (scripts/drills.sh sets it)')
        podman('run', '--rm', '--network', NETWORK, image, 'true')
    if not gateway_present():
        sys.exit('drills_peer: the host does not hold %s after starting a container on %s' % (GATEWAY, NETWORK))


def running_pid():
    try:
        with open(PIDFILE, encoding='ascii') as handle:
            pid = int(handle.read().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def stop():
    pid = running_pid()
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    for _attempt in range(50):
        try:
            os.kill(pid, 0)
        except OSError:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
    os.unlink(PIDFILE)
    log('moto_server (pid %d) stopped' % pid)


def start():
    stop()
    ensure_network()
    os.makedirs(STATE, exist_ok=True)
    moto = os.path.join(os.path.dirname(sys.executable), 'moto_server')
    with open(LOGFILE, 'ab') as out:
        process = subprocess.Popen([moto, '-H', GATEWAY, '-p', str(PORT)], stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    with open(PIDFILE, 'w', encoding='ascii') as handle:
        handle.write('%d\n' % process.pid)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            sys.exit('drills_peer: moto_server exited with %d; see %s (is port %d in use?)'
                     % (process.returncode, LOGFILE, PORT))
        try:
            urllib.request.urlopen(ENDPOINT + '/moto-api/', timeout=2).close()
            break
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                stop()
                sys.exit('drills_peer: moto_server did not answer on %s within 30 s; see %s' % (ENDPOINT, LOGFILE))
            time.sleep(0.2)
    # Only 'start' needs boto3 (the venv's).
    import boto3  # pylint: disable=import-outside-toplevel
    client = boto3.client('s3', endpoint_url=ENDPOINT, region_name='us-east-1',
                          aws_access_key_id='drills-access-key', aws_secret_access_key='drills-secret-key-3c9a')
    client.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
    log('moto_server (pid %d) on %s, bucket %s with Object Lock' % (process.pid, ENDPOINT, BUCKET))
    print(ENDPOINT)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('action', choices=['network', 'start', 'stop', 'remove-network'])
    action = parser.parse_args().action
    if action == 'network':
        ensure_network()
    elif action == 'start':
        start()
    elif action == 'stop':
        stop()
    else:
        stop()
        if podman('network', 'exists', NETWORK, check=False).returncode == 0:
            podman('network', 'rm', '--force', NETWORK)
            log('podman network %s removed' % NETWORK)
    return 0


if __name__ == '__main__':
    sys.exit(main())
