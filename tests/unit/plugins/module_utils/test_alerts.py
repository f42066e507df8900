# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Alerts: de-duplication, retries (429 Retry-After), payloads, redaction.  HTTP against a real local server."""

from __future__ import annotations

import datetime
import http.server
import json
import threading

import pytest

from ansible_collections.cepcomunicacion.backup.plugins.module_utils import alerts
from ansible_collections.cepcomunicacion.backup.plugins.module_utils.health import Finding

NOW = datetime.datetime(2026, 11, 29, 12, 0, tzinfo=datetime.timezone.utc)


def finding(key='freshness:database', severity='critical'):
    check, subject = key.split(':')
    return Finding(check, subject, severity, 'stale daily database dump', 'made 30 h ago. Next step: run it.')


class FakeChannel:
    def __init__(self, name, fail=False):
        self.name = name
        self.fail = fail
        self.sent = []

    def send(self, message):
        if self.fail:
            raise alerts.DeliveryError('cannot reach https://hooks.example/SECRET', retryable=False)
        self.sent.append(message)
        return 1


def run(notifier, findings, active, now):
    plan, active = notifier.plan(findings, active, now)
    deliveries = notifier.deliver(plan, active, now, 'web1', findings, 'critical')
    return active, deliveries


def test_same_finding_alerts_once_then_reminds_then_resolves():
    channel = FakeChannel('slack')
    notifier = alerts.Notifier(alerts.Settings({'renotify_hours': 6}), [channel])
    active = {}
    for hours in (0, 1, 5):
        active, _deliveries = run(notifier, [finding()], active, NOW + datetime.timedelta(hours=hours))
    assert len(channel.sent) == 1 and 'CRITICAL on web1' in channel.sent[0].subject
    active, deliveries = run(notifier, [finding()], active, NOW + datetime.timedelta(hours=6))
    assert len(channel.sent) == 2 and deliveries[0]['event'] == 'reminder'
    active, deliveries = run(notifier, [finding(severity='ok')], active, NOW + datetime.timedelta(hours=7))
    assert len(channel.sent) == 3 and 'RESOLVED on web1' in channel.sent[2].subject and active == {}
    run(notifier, [finding(severity='ok')], active, NOW + datetime.timedelta(hours=8))
    assert len(channel.sent) == 3


def test_escalation_alerts_again_and_severity_filter():
    channel = FakeChannel('email')
    notifier = alerts.Notifier(alerts.Settings({}), [channel])
    active, _deliveries = run(notifier, [finding(severity='warning')], {}, NOW)
    active, _deliveries = run(notifier, [finding(severity='critical')], active, NOW + datetime.timedelta(minutes=5))
    assert len(channel.sent) == 2
    quiet = alerts.Notifier(alerts.Settings({'alert_severity': 'critical'}), [FakeChannel('email')])
    plan, active = quiet.plan([finding(severity='warning')], {}, NOW)
    assert plan['email']['problems'] == [] and active == {}


def test_a_failing_channel_does_not_stop_the_others_and_is_due_again():
    good, bad = FakeChannel('slack'), FakeChannel('discord', fail=True)
    notifier = alerts.Notifier(alerts.Settings({'discord_webhook_url': 'https://hooks.example/SECRET'}), [bad, good])
    active, deliveries = run(notifier, [finding()], {}, NOW)
    assert [item['delivered'] for item in deliveries] == [False, True]
    assert 'SECRET' not in deliveries[0]['error'] and '********' in deliveries[0]['error']
    plan, _active = notifier.plan([finding()], active, NOW + datetime.timedelta(minutes=1))
    assert [f.key for f in plan['discord']['problems']] == ['freshness:database'] and not plan['slack']['problems']
    state = alerts.state_document(None, active, deliveries, NOW)
    assert state['failures'][0]['channel'] == 'discord' and state['failed_last_run'] == 1


def raiser(error):
    def action():
        raise error
    return action


@pytest.mark.parametrize('header, expected', [('3', 3.0), ('', None), (None, None), ('soon', None),
                                              ('Sun, 29 Nov 2026 12:00:10 GMT', 10.0)])
def test_retry_after(header, expected):
    assert alerts.parse_retry_after(header, now=NOW.timestamp()) == expected


def test_retry_policy_backoff_retry_after_and_permanent_errors():
    waits = []
    policy = alerts.RetryPolicy(retries=3, delay=1.0, max_delay=30, sleep=waits.append)
    outcomes = [alerts.DeliveryError('500'), alerts.DeliveryError('429', retry_after=7), None]

    def action():
        outcome = outcomes.pop(0)
        if outcome:
            raise outcome
    assert policy.run(action, 'x') == 3 and waits == [1.0, 7]
    with pytest.raises(alerts.DeliveryError) as info:
        policy.run(raiser(alerts.DeliveryError('401', retryable=False)), 'x')
    assert info.value.attempts == 1
    with pytest.raises(alerts.DeliveryError, match='longer than alert_max_retry_delay'):
        policy.run(raiser(alerts.DeliveryError('429', retry_after=3600)), 'x')


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # pylint: disable=invalid-name
        body = self.rfile.read(int(self.headers['Content-Length']))
        self.server.seen.append((self.path, body))
        status, headers = self.server.answers.pop(0) if self.server.answers else (200, {})
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header('Content-Length', '0')
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    server.seen, server.answers = [], []
    thread = threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_slack_payload_and_429_over_http(receiver):
    url = 'http://127.0.0.1:%d/services/T/B/secret' % receiver.server_address[1]
    receiver.answers = [(429, {'Retry-After': '0'}), (200, {})]
    settings = alerts.Settings({'slack_webhook_url': url, 'alert_retry_delay': 0.01})
    channel = alerts.build_channels(settings)[0]
    message = alerts.compose('web1', [finding()], [], [], 'critical', NOW)
    assert channel.send(message) == 2
    assert json.loads(receiver.seen[1][1]) == {'text': '*%s*\n%s' % (message.subject, message.text)}


def test_http_404_is_permanent_and_redacted(receiver):
    url = 'http://127.0.0.1:%d/api/webhooks/1/secret-token' % receiver.server_address[1]
    receiver.answers = [(404, {})]
    settings = alerts.Settings({'discord_webhook_url': url, 'alert_retry_delay': 0.01})
    notifier = alerts.Notifier(settings, alerts.build_channels(settings))
    _active, deliveries = run(notifier, [finding()], {}, NOW)
    assert deliveries[0]['attempts'] == 1 and 'HTTP 404' in deliveries[0]['error']
    assert 'secret-token' not in json.dumps(deliveries) and len(receiver.seen) == 1


def test_discord_payload_is_truncated_to_its_limit():
    channel = alerts.DiscordChannel(alerts.Settings({}), alerts.RetryPolicy())
    payload = channel.payload(alerts.Message('subject', 'x' * 5000, 'critical'))
    assert len(payload['content']) <= 2000 and payload['allowed_mentions'] == {'parse': []}


def test_healthchecks_urls(receiver):
    base = 'http://127.0.0.1:%d/ping/uuid' % receiver.server_address[1]
    channel = alerts.healthchecks_channel(alerts.Settings({'healthchecks_url': base}))
    records = [channel.start(), channel.finish(0), channel.finish(2)]
    assert [path.split('?')[0] for path, _body in receiver.seen] == ['/ping/uuid/start', '/ping/uuid', '/ping/uuid/2']
    assert [record['event'] for record in records] == ['start', 'success', 'fail']
    assert len(set(path.split('?')[1] for path, _body in receiver.seen)) == 1  # one rid per run


def test_email_message_names_host_and_problem():
    settings = alerts.Settings({'email': {'smtp_host': 'smtp.example', 'sender': 'b@example.org',
                                          'recipients': ['ops@example.org'], 'password': 'pw'}})
    channel = alerts.build_channels(settings)[0]
    mail = channel.build(alerts.compose('web1', [finding()], [], [], 'critical', NOW))
    assert 'web1' in mail['Subject'] and 'stale daily database dump' in mail['Subject']
    assert 'freshness:database' in mail.get_content() and mail['To'] == 'ops@example.org'
    assert 'pw' in settings.secrets()
