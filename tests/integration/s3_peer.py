# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A real S3-compatible peer for the offsite tests: moto_server on 127.0.0.1, started and stopped here.

``s3_server`` accepts any credentials; ``s3_auth_server`` checks them (moto's
``INITIAL_NO_AUTH_ACTION_COUNT``): its first three requests create an IAM user,
its access key and its S3 policy; every later request must be signed with that key.  moto keeps
everything in memory and does not verify uploaded checksums (the collection
re-verifies itself, which is what the tests prove).
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import boto3
import pytest

MOTO_SERVER = os.path.join(os.path.dirname(sys.executable), 'moto_server')
TEST_KEY = 'testing-access-key'
TEST_SECRET = 'testing-secret-key'
_COUNTER = itertools.count()


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


class MotoServer:
    """One moto_server process on a free loopback port."""

    def __init__(self, extra_env=None):
        self.port = free_port()
        self.endpoint = 'http://127.0.0.1:%d' % self.port
        self.log = tempfile.NamedTemporaryFile(prefix='moto-', suffix='.log', delete=False)
        env = dict(os.environ)
        env.update(extra_env or {})
        self.proc = subprocess.Popen([MOTO_SERVER, '-H', '127.0.0.1', '-p', str(self.port)], env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError('moto_server exited with %s; log in %s' % (self.proc.returncode, self.log.name))
            try:
                with socket.create_connection(('127.0.0.1', self.port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError('moto_server did not listen on %s within 30 s' % self.endpoint)
                time.sleep(0.1)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()
        os.unlink(self.log.name)


def s3_client(endpoint, access_key=TEST_KEY, secret_key=TEST_SECRET):
    return boto3.client('s3', endpoint_url=endpoint, region_name='us-east-1', aws_access_key_id=access_key,
                        aws_secret_access_key=secret_key)


def unique_bucket(prefix='cep'):
    return '%s-%d-%d' % (prefix, os.getpid(), next(_COUNTER))


@pytest.fixture(scope='session')
def s3_server():
    """Endpoint URL of a moto_server that accepts any credentials."""
    server = MotoServer()
    try:
        yield server.endpoint
    finally:
        server.stop()


@pytest.fixture(scope='session')
def s3_auth_server():
    """(endpoint, access key, secret key) of a moto_server that checks signatures."""
    server = MotoServer({'INITIAL_NO_AUTH_ACTION_COUNT': '3'})
    try:
        iam = boto3.client('iam', endpoint_url=server.endpoint, region_name='us-east-1', aws_access_key_id=TEST_KEY,
                           aws_secret_access_key=TEST_SECRET)
        iam.create_user(UserName='backup')
        key = iam.create_access_key(UserName='backup')['AccessKey']
        iam.put_user_policy(UserName='backup', PolicyName='s3', PolicyDocument=json.dumps({
            'Version': '2012-10-17', 'Statement': [{'Effect': 'Allow', 'Action': 's3:*', 'Resource': '*'}]}))
        yield server.endpoint, key['AccessKeyId'], key['SecretAccessKey']
    finally:
        server.stop()


@pytest.fixture
def bucket(s3_server):
    """A fresh, empty bucket on ``s3_server``."""
    name = unique_bucket()
    s3_client(s3_server).create_bucket(Bucket=name)
    return name


@pytest.fixture
def locked_bucket(s3_server):
    """A fresh bucket created with Object Lock (and so versioning)."""
    name = unique_bucket('cep-locked')
    s3_client(s3_server).create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


@pytest.fixture
def s3_env(monkeypatch):
    """Credentials through the environment, as on a server (never on argv)."""
    monkeypatch.setenv('AWS_ACCESS_KEY_ID', TEST_KEY)
    monkeypatch.setenv('AWS_SECRET_ACCESS_KEY', TEST_SECRET)
    monkeypatch.delenv('AWS_PROFILE', raising=False)
