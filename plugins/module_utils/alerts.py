# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Alerts: email (SMTP with STARTTLS and auth), Slack and Discord webhooks, Healthchecks.io pings.

Standard library only (smtplib, urllib), so the scheduled command runs on a
plain Debian server.

* **No alert storm.**  :class:`Notifier` keeps, per finding and per channel,
  when it last told someone (the ``check.alerts.active`` section of the
  status file).  A problem alerts once per channel, again after
  ``renotify_hours``, at once when it gets worse (warning -> critical), and
  sends one "resolved" message when it clears.  A channel whose delivery
  failed is simply due again on the next run.
* **Retries.**  Each delivery is retried with exponential backoff; a 429
  answer's ``Retry-After`` is honoured (up to ``alert_max_retry_delay``).
  Permanent failures (a refused SMTP login, a 404 webhook) are not retried.
* **One channel failing never stops the others**; every failure is logged and
  recorded in the status file.
* **Secrets** (SMTP password, webhook URLs, the Healthchecks URL) never appear
  in a message, a log line, the status file or a result: every error text is
  redacted before it leaves a channel.
"""

from __future__ import annotations

import datetime
import email.message
import email.utils
import json
import smtplib
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

from ansible_collections.cepcomunicacion.backup.plugins.module_utils.errors import BackupError

RANK = {'ok': 0, 'warning': 1, 'critical': 2}
USER_AGENT = 'cepcomunicacion-backup'
SUBJECT_TAG = '[cepcomunicacion-backup]'
DISCORD_LIMIT = 2000
SLACK_LIMIT = 39000
FAILURES_KEPT = 20
SECURITIES = ('starttls', 'tls', 'none')


class DeliveryError(Exception):
    def __init__(self, message, retryable=True, retry_after=None):
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.attempts = 1

    def __str__(self):
        return self.message


def redact(text, secrets):
    text = str(text)
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, '********')
    return text


class Settings:
    """Alert options, by the module's option names."""

    def __init__(self, options):
        get = options.get
        self.email = dict(get('email') or {}) or None
        self.slack_webhook_url = get('slack_webhook_url')
        self.discord_webhook_url = get('discord_webhook_url')
        self.healthchecks_url = get('healthchecks_url')
        renotify = get('renotify_hours')
        self.renotify_hours = 24.0 if renotify is None else float(renotify)
        self.alert_severity = get('alert_severity') or 'warning'
        if self.alert_severity not in ('warning', 'critical'):
            raise BackupError("alert_severity must be 'warning' or 'critical', not %r" % self.alert_severity)
        retries = get('alert_retries')
        self.retries = 3 if retries is None else max(0, int(retries))
        delay = get('alert_retry_delay')
        self.retry_delay = 2.0 if delay is None else max(0.0, float(delay))
        max_delay = get('alert_max_retry_delay')
        self.max_retry_delay = 60.0 if max_delay is None else max(0.0, float(max_delay))
        timeout = get('alert_timeout')
        self.timeout = 10.0 if timeout is None else float(timeout)
        if self.email:
            for required in ('smtp_host', 'sender', 'recipients'):
                if not self.email.get(required):
                    raise BackupError('email alerts need email.%s' % required)
            security = self.email.get('security') or 'starttls'
            if security not in SECURITIES:
                raise BackupError('email.security must be one of %s, not %r' % (', '.join(SECURITIES), security))
            if security == 'none' and self.email.get('password'):
                raise BackupError('refusing to send the SMTP password over an unencrypted connection: set '
                                  'email.security to starttls or tls')

    def secrets(self):
        values = [self.slack_webhook_url, self.discord_webhook_url, self.healthchecks_url,
                  (self.email or {}).get('password')]
        for url in (self.slack_webhook_url, self.discord_webhook_url, self.healthchecks_url):
            if url:
                values.append(urllib.parse.urlsplit(url).path)
        return [value for value in values if value and len(value) > 1]


class RetryPolicy:
    """``attempts`` = 1 + retries; backoff ``delay * 2**n``; 429 waits ``Retry-After`` up to ``max_delay``."""

    def __init__(self, retries=3, delay=2.0, max_delay=60.0, sleep=None):
        self.attempts = 1 + max(0, int(retries))
        self.delay = delay
        self.max_delay = max_delay
        self.sleep = sleep or time.sleep

    def run(self, action, label):
        """Call ``action()`` until it succeeds; returns the attempts made, raises DeliveryError when it gives up."""
        for attempt in range(1, self.attempts + 1):
            try:
                action()
                return attempt
            except DeliveryError as exc:
                if not exc.retryable or attempt == self.attempts:
                    exc.attempts = attempt
                    raise
                wait = self.delay * (2 ** (attempt - 1))
                if exc.retry_after is not None:
                    if exc.retry_after > self.max_delay:
                        exc.attempts = attempt
                        exc.message = '%s; Retry-After %d s is longer than alert_max_retry_delay (%d s)' % (
                            exc.message, exc.retry_after, self.max_delay)
                        raise
                    wait = max(wait, exc.retry_after)
                self.sleep(min(wait, self.max_delay))
        raise DeliveryError('%s: no attempt made' % label, retryable=False)  # pragma: no cover


def parse_retry_after(value, now=None):
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment is None:
        return None
    return max(0.0, moment.timestamp() - (now if now is not None else time.time()))


def http_post(url, body, content_type, timeout, label):
    """One POST; raises DeliveryError (retryable for 429, 5xx and network errors)."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ('http', 'https'):
        # never file:, ftp: or a custom opener's scheme; the URL itself is a secret and is not shown
        raise DeliveryError('%s must be an http:// or https:// URL, not %s' % (
            label, scheme + '://' if scheme else 'a URL without a scheme'), retryable=False)
    request = urllib.request.Request(url, data=body, method='POST',  # noqa: S310 -- http(s) only, checked above
                                     headers={'Content-Type': content_type, 'User-Agent': USER_AGENT})
    try:
        # A plain stdlib opener, not ansible.module_utils.urls.open_url: this core also runs as the server's
        # scheduled command, where ansible-core is not installed.
        with urllib.request.build_opener().open(request, timeout=timeout) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        code = exc.code
        if code == 429:
            raise DeliveryError('%s answered HTTP 429 (rate limited)' % label,
                                retry_after=parse_retry_after(exc.headers.get('Retry-After')))
        if code >= 500 or code == 408:
            raise DeliveryError('%s answered HTTP %d %s' % (label, code, exc.reason))
        raise DeliveryError('%s answered HTTP %d %s: check its URL (the webhook may have been revoked)' % (
            label, code, exc.reason), retryable=False)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, 'reason', exc)
        raise DeliveryError('cannot reach %s: %s' % (label, reason))


# --- channels -------------------------------------------------------------------------------------

class Channel:
    name = 'channel'
    label = 'channel'

    def __init__(self, settings, policy):
        self.settings = settings
        self.policy = policy

    def send(self, message):
        raise NotImplementedError


class SlackChannel(Channel):
    name = 'slack'
    label = 'the Slack webhook'

    def payload(self, message):
        return {'text': ('*%s*\n%s' % (message.subject, message.text))[:SLACK_LIMIT]}

    def send(self, message):
        body = json.dumps(self.payload(message)).encode('utf-8')
        return self.policy.run(lambda: http_post(self.settings.slack_webhook_url, body, 'application/json',
                                                 self.settings.timeout, self.label), self.label)


class DiscordChannel(Channel):
    name = 'discord'
    label = 'the Discord webhook'

    def payload(self, message):
        content = '**%s**\n%s' % (message.subject, message.text)
        if len(content) > DISCORD_LIMIT:
            content = content[:DISCORD_LIMIT - 20] + '\n... (truncated)'
        return {'content': content, 'username': USER_AGENT, 'allowed_mentions': {'parse': []}}

    def send(self, message):
        body = json.dumps(self.payload(message)).encode('utf-8')
        return self.policy.run(lambda: http_post(self.settings.discord_webhook_url, body, 'application/json',
                                                 self.settings.timeout, self.label), self.label)


class EmailChannel(Channel):
    name = 'email'

    @property
    def label(self):
        return 'the SMTP server %s:%s' % (self.settings.email['smtp_host'], self._port())

    def _port(self):
        config = self.settings.email
        if config.get('smtp_port'):
            return int(config['smtp_port'])
        return {'starttls': 587, 'tls': 465, 'none': 25}[config.get('security') or 'starttls']

    def _context(self):
        config = self.settings.email
        context = ssl.create_default_context(cafile=config.get('ca_file') or None)
        if config.get('validate_certs') is False:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def build(self, message):
        config = self.settings.email
        mail = email.message.EmailMessage()
        mail['Subject'] = message.subject
        mail['From'] = config['sender']
        mail['To'] = ', '.join(config['recipients'])
        mail['Date'] = email.utils.formatdate(usegmt=True)
        mail['Message-ID'] = email.utils.make_msgid(domain=config['sender'].rpartition('@')[2] or None)
        mail['X-Cepcomunicacion-Backup-Health'] = message.health
        mail.set_content(message.text)
        return mail

    def _send_once(self, mail):
        config = self.settings.email
        security = config.get('security') or 'starttls'
        host, port, timeout = config['smtp_host'], self._port(), self.settings.timeout
        try:
            if security == 'tls':
                client = smtplib.SMTP_SSL(host, port, timeout=timeout, context=self._context())
            else:
                client = smtplib.SMTP(host, port, timeout=timeout)
            with client:
                client.ehlo()
                if security == 'starttls':
                    client.starttls(context=self._context())
                    client.ehlo()
                if config.get('username'):
                    client.login(config['username'], config.get('password') or '')
                client.send_message(mail)
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError('%s refused the login of user %r (%d %s): check email.username and '
                                'email.password (not shown)' % (self.label, config.get('username'), exc.smtp_code,
                                                                _smtp_text(exc.smtp_error)), retryable=False)
        except smtplib.SMTPNotSupportedError as exc:
            raise DeliveryError('%s does not support %s: %s' % (
                self.label, 'STARTTLS' if security == 'starttls' else 'what was asked', exc), retryable=False)
        except smtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError('%s refused the recipients %s' % (self.label, ', '.join(sorted(exc.recipients))),
                                retryable=False)
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError('%s answered %d %s' % (self.label, exc.smtp_code, _smtp_text(exc.smtp_error)),
                                retryable=400 <= exc.smtp_code < 500)
        except ssl.SSLCertVerificationError as exc:
            raise DeliveryError('the TLS certificate of %s does not verify (%s): set email.ca_file to the CA that '
                                'signed it' % (self.label, exc.verify_message), retryable=False)
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError('cannot deliver through %s: %s' % (self.label, exc))

    def send(self, message):
        mail = self.build(message)
        return self.policy.run(lambda: self._send_once(mail), self.label)


def _smtp_text(value):
    return value.decode('utf-8', 'replace') if isinstance(value, bytes) else str(value)


class HealthchecksChannel:
    """Healthchecks.io pings: ``<url>/start`` when a run begins, ``<url>`` on success, ``<url>/<exit code>`` on failure.

    Both pings of one run carry the same ``rid`` so Healthchecks pairs them and measures the run; a run
    that never finishes is caught by the check's grace time.
    """

    name = 'healthchecks'
    label = 'the Healthchecks.io ping URL'

    def __init__(self, settings, policy):
        self.settings = settings
        self.policy = policy
        self.rid = str(uuid.uuid4())

    def url(self, suffix=''):
        parts = urllib.parse.urlsplit(self.settings.healthchecks_url)
        query = urllib.parse.parse_qsl(parts.query) + [('rid', self.rid)]
        return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip('/') + suffix,
                                        urllib.parse.urlencode(query), ''))

    def _ping(self, event, suffix, body):
        record = {'channel': self.name, 'event': event, 'time': _now_iso(), 'findings': [], 'resolved': []}
        data = body.encode('utf-8')[:100000]
        try:
            record['attempts'] = self.policy.run(lambda: http_post(self.url(suffix), data, 'text/plain; charset=utf-8',
                                                                   self.settings.timeout, self.label), self.label)
            record.update(delivered=True, error=None)
        except DeliveryError as exc:
            record.update(delivered=False, attempts=getattr(exc, 'attempts', 1),
                          error=redact(exc.message, self.settings.secrets()))
        return record

    def start(self, body=''):
        return self._ping('start', '/start', body)

    def finish(self, code, body=''):
        if code == 0:
            return self._ping('success', '', body)
        return self._ping('fail', '/%d' % int(code), body)


def build_channels(settings, sleep=None):
    """The notification channels that are configured (Healthchecks is a heartbeat, see healthchecks_channel)."""
    policy = RetryPolicy(settings.retries, settings.retry_delay, settings.max_retry_delay, sleep)
    channels = []
    if settings.email:
        channels.append(EmailChannel(settings, policy))
    if settings.slack_webhook_url:
        channels.append(SlackChannel(settings, policy))
    if settings.discord_webhook_url:
        channels.append(DiscordChannel(settings, policy))
    return channels


def healthchecks_channel(settings, sleep=None):
    if not settings.healthchecks_url:
        return None
    return HealthchecksChannel(settings, RetryPolicy(settings.retries, settings.retry_delay,
                                                     settings.max_retry_delay, sleep))


# --- messages ---------------------------------------------------------------------------------------

class Message:
    def __init__(self, subject, text, health):
        self.subject = subject
        self.text = text
        self.health = health


def _now_iso():
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())


def _line(finding):
    return '- [%s] %s (%s): %s' % (finding.severity.upper(), finding.title, finding.key, finding.message)


def compose(host, problems, reminders, resolved, health, now):
    """One message per channel per run: new problems, reminders of ongoing ones, and what cleared."""
    ongoing = problems + reminders
    if ongoing:
        first = max(ongoing, key=lambda finding: RANK[finding.severity])
        level = max((finding.severity for finding in ongoing), key=lambda severity: RANK[severity])
        subject = '%s %s on %s: %s' % (SUBJECT_TAG, level.upper(), host, first.title)
        if len(ongoing) > 1:
            subject += ' (+%d more)' % (len(ongoing) - 1)
        if resolved:
            subject += ', %d resolved' % len(resolved)
    else:
        subject = '%s RESOLVED on %s: %s' % (SUBJECT_TAG, host, resolved[0]['title'])
        if len(resolved) > 1:
            subject += ' (+%d more)' % (len(resolved) - 1)
    lines = ['Backup check on %s at %s: overall %s.' % (host, now.strftime('%Y-%m-%d %H:%M UTC'), health.upper()), '']
    if problems:
        lines.append('Problems:')
        lines.extend(_line(finding) for finding in problems)
        lines.append('')
    if reminders:
        lines.append('Still failing (reminder):')
        lines.extend(_line(finding) for finding in reminders)
        lines.append('')
    if resolved:
        lines.append('Resolved:')
        lines.extend('- %s (%s), first seen %s: resolved.' % (entry['title'], entry['key'], entry.get('first_seen'))
                     for entry in resolved)
        lines.append('')
    lines.append('Status file and every finding: backup_check, or the check section of the status file.')
    return Message(subject, '\n'.join(lines), health)


def summary_text(host, findings, health):
    """Body of the Healthchecks finish ping: the problems, one per line."""
    lines = ['%s: %s' % (host, health)]
    lines.extend(_line(finding) for finding in findings if finding.severity != 'ok')
    return '\n'.join(lines)


# --- de-duplication ----------------------------------------------------------------------------------

class Notifier:
    def __init__(self, settings, channels, log=None):
        self.settings = settings
        self.channels = channels
        self.log = log or (lambda message: None)

    def plan(self, findings, active, now):
        """(plan, new active state): per channel, the problems due, the reminders due, and what resolved."""
        threshold = RANK[self.settings.alert_severity]
        renotify = self.settings.renotify_hours * 3600
        names = [channel.name for channel in self.channels]
        plan = dict((name, {'problems': [], 'reminders': [], 'resolved': []}) for name in names)
        new_active = {}
        for finding in findings:
            if RANK[finding.severity] < threshold:
                continue
            previous = active.get(finding.key)
            entry = {'severity': finding.severity, 'title': finding.title, 'message': finding.message,
                     'first_seen': (previous or {}).get('first_seen') or now.isoformat(),
                     'notified': dict((previous or {}).get('notified') or {})}
            worse = previous is not None and RANK[finding.severity] > RANK.get(previous.get('severity'), 0)
            for name in names:
                last = _parse_iso(entry['notified'].get(name))
                if last is None or worse:
                    plan[name]['problems'].append(finding)
                elif renotify > 0 and (now - last).total_seconds() >= renotify:
                    plan[name]['reminders'].append(finding)
            new_active[finding.key] = entry
        for key, previous in sorted(active.items()):
            if key in new_active:
                continue
            for name in names:
                if name in (previous.get('notified') or {}):
                    plan[name]['resolved'].append(dict(previous, key=key))
        return plan, new_active

    def deliver(self, plan, active, now, host, findings, health):
        """Send what is due on each channel; a failing channel never stops the others."""
        deliveries = []
        secrets = self.settings.secrets()
        for channel in self.channels:
            due = plan.get(channel.name) or {}
            if not (due.get('problems') or due.get('reminders') or due.get('resolved')):
                continue
            message = compose(host, due['problems'], due['reminders'], due['resolved'], health, now)
            keys = [finding.key for finding in due['problems'] + due['reminders']]
            record = {'channel': channel.name, 'time': now.isoformat(), 'subject': message.subject,
                      'event': 'problem' if due['problems'] else ('reminder' if due['reminders'] else 'resolved'),
                      'findings': keys, 'resolved': [entry['key'] for entry in due['resolved']]}
            try:
                record['attempts'] = channel.send(message)
                record.update(delivered=True, error=None)
                for key in keys:
                    active[key]['notified'][channel.name] = now.isoformat()
            except DeliveryError as exc:
                record.update(delivered=False, attempts=getattr(exc, 'attempts', 1), error=redact(exc.message, secrets))
            except Exception as exc:  # pylint: disable=broad-except  # one channel's bug must not stop the others
                record.update(delivered=False, attempts=1,
                              error=redact('%s: %s' % (type(exc).__name__, exc), secrets))
            if not record['delivered']:
                self.log('alert via %s failed after %d attempt(s): %s' % (
                    channel.name, record['attempts'], record['error']))
            deliveries.append(record)
        return deliveries


def _parse_iso(value):
    if not value:
        return None
    try:
        moment = datetime.datetime.fromisoformat(value)
        return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return None


def describe_plan(plan):
    """What is due on each channel, by finding key (the module's ``alerts_due``)."""
    described = []
    for name, due in sorted(plan.items()):
        if due['problems'] or due['reminders'] or due['resolved']:
            described.append({'channel': name, 'problems': [finding.key for finding in due['problems']],
                              'reminders': [finding.key for finding in due['reminders']],
                              'resolved': [entry['key'] for entry in due['resolved']]})
    return described


def state_document(previous, active, deliveries, now):
    """The ``check.alerts`` section: active findings with who was told when, and recent delivery failures."""
    previous = previous or {}
    failures = list(previous.get('failures') or [])
    last = dict(previous.get('last_delivery') or {})
    for record in deliveries:
        last[record['channel']] = {'time': record.get('time') or now.isoformat(), 'event': record['event'],
                                   'delivered': record['delivered'], 'attempts': record.get('attempts'),
                                   'error': record.get('error')}
        if not record['delivered']:
            failures.append({'time': record.get('time') or now.isoformat(), 'channel': record['channel'],
                             'event': record['event'], 'attempts': record.get('attempts'), 'error': record['error']})
    return {'active': active, 'last_delivery': last, 'failures': failures[-FAILURES_KEPT:],
            'failed_last_run': sum(1 for record in deliveries if not record['delivered'])}


__all__ = ['DeliveryError', 'DiscordChannel', 'EmailChannel', 'HealthchecksChannel', 'Notifier', 'RetryPolicy',
           'Settings', 'SlackChannel', 'build_channels', 'compose', 'healthchecks_channel', 'parse_retry_after']
