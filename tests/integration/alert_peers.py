# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Real alert peers on 127.0.0.1 for the backup_check tests; import the fixtures into a test module.

* ``smtp_server``: aiosmtpd with STARTTLS (a self-signed certificate made by
  ``openssl`` for IP 127.0.0.1, given to the client as its CA) and AUTH
  (LOGIN/PLAIN, one user); it records every message it accepts.
* ``webhooks``: a stdlib ThreadingHTTPServer on 127.0.0.1:0 that records every
  request (time, method, path, headers, body) and answers like Slack (200
  "ok"), Discord (204) and Healthchecks (200 "OK"); a test can queue other
  answers (429 with Retry-After, 500) per path prefix.
"""

from __future__ import annotations

import collections
import email
import email.policy
import http.server
import json
import os
import socket
import ssl
import subprocess
import threading
import time

import pytest

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

SMTP_USER = 'alerts@example.org'
SMTP_PASSWORD = 'S3cret-smtp-pa55'


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def self_signed_certificate(directory):
    """(cert, key) for CN/SAN 127.0.0.1, made with openssl."""
    cert = os.path.join(directory, 'smtp-cert.pem')
    key = os.path.join(directory, 'smtp-key.pem')
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert,
                    '-days', '2', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cert, key


class Mailbox:
    def __init__(self):
        self.messages = []
        self.auth_failures = 0

    async def handle_DATA(self, server, session, envelope):  # pylint: disable=invalid-name
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append({'from': envelope.mail_from, 'to': list(envelope.rcpt_tos), 'message': message,
                              'subject': str(message['Subject']), 'body': message.get_content(),
                              'authenticated': bool(session.authenticated)})
        return '250 OK'

    def authenticator(self, server, session, envelope, mechanism, auth_data):
        if isinstance(auth_data, LoginPassword) and auth_data.login.decode() == SMTP_USER \
                and auth_data.password.decode() == SMTP_PASSWORD:
            return AuthResult(success=True)
        self.auth_failures += 1
        return AuthResult(success=False, handled=False)  # handled=True would leave the client hanging


class SmtpPeer:
    def __init__(self, directory):
        self.cert, self.key = self_signed_certificate(directory)
        self.mailbox = Mailbox()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        self.port = free_port()
        self.controller = Controller(self.mailbox, hostname='127.0.0.1', port=self.port, tls_context=context,
                                     require_starttls=True, auth_required=True, auth_require_tls=True,
                                     authenticator=self.mailbox.authenticator)

    @property
    def messages(self):
        return self.mailbox.messages

    def email_options(self, password=SMTP_PASSWORD, **extra):
        options = {'smtp_host': '127.0.0.1', 'smtp_port': self.port, 'security': 'starttls', 'username': SMTP_USER,
                   'password': password, 'sender': 'backup@example.org', 'recipients': ['ops@example.org'],
                   'ca_file': self.cert}
        options.update(extra)
        return options


class Recorder(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(('127.0.0.1', 0), RecordingHandler)
        self.requests = []
        self.scripted = collections.defaultdict(collections.deque)
        self.lock = threading.Lock()

    @property
    def base(self):
        return 'http://127.0.0.1:%d' % self.server_address[1]

    def answer(self, prefix, status, headers=None, body=b''):
        """Queue one answer for the next request whose path starts with ``prefix``."""
        self.scripted[prefix].append((status, headers or {}, body))

    def default_answer(self, path):
        if path.startswith('/slack'):
            return 200, {'Content-Type': 'text/plain'}, b'ok'
        if path.startswith('/discord'):
            return 204, {}, b''
        return 200, {'Content-Type': 'text/plain'}, b'OK'

    def take(self, path):
        with self.lock:
            for prefix, queue in self.scripted.items():
                if path.startswith(prefix) and queue:
                    return queue.popleft()
        return self.default_answer(path)

    def to(self, prefix):
        return [request for request in self.requests if request['path'].startswith(prefix)]


class RecordingHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # pylint: disable=invalid-name
        length = int(self.headers.get('Content-Length') or 0)
        body = self.rfile.read(length) if length else b''
        path, _sep, query = self.path.partition('?')
        status, headers, answer = self.server.take(path)
        record = {'time': time.monotonic(), 'method': self.command, 'path': path, 'query': query,
                  'headers': dict(self.headers), 'body': body, 'status': status}
        if self.headers.get('Content-Type', '').startswith('application/json'):
            record['json'] = json.loads(body.decode('utf-8'))
        with self.server.lock:
            self.server.requests.append(record)
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header('Content-Length', str(len(answer)))
        self.end_headers()
        if answer:
            self.wfile.write(answer)

    do_GET = do_POST

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture
def smtp_server(tmp_path):
    peer = SmtpPeer(str(tmp_path))
    peer.controller.start()
    try:
        yield peer
    finally:
        peer.controller.stop()


@pytest.fixture
def webhooks():
    server = Recorder()
    thread = threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
