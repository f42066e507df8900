# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""make demo, as a newcomer runs it: it must work, leave a verified dump, and stop its server."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile

from conftest import REPO


def test_demo_backs_up_and_leaves_a_verified_dump():
    prefix = tempfile.mkdtemp(prefix='cep-demo-')
    os.chmod(prefix, 0o755)  # the throwaway PostgreSQL runs as user postgres and must reach its data dir
    try:
        proc = subprocess.run(['bash', os.path.join(REPO, 'scripts', 'demo.sh')], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=600, check=False,
                              env=dict(os.environ, DEMO_PREFIX=prefix, DEMO_SIZE='tiny'))
        assert proc.returncode == 0, proc.stdout
        match = re.search(r'sha256:\s+([0-9a-f]{64})', proc.stdout)
        assert match and 'verified: 1 of 1 backups ok' in proc.stdout, proc.stdout
        dumps = [n for n in os.listdir(os.path.join(prefix, 'backups', 'database')) if n.endswith('.dump')]
        assert len(dumps) == 1
        check = subprocess.run(['sha256sum', '-c', dumps[0] + '.sha256'], capture_output=True, text=True, check=False,
                               cwd=os.path.join(prefix, 'backups', 'database'))
        assert check.returncode == 0 and match.group(1) in open(
            os.path.join(prefix, 'backups', 'database', dumps[0] + '.sha256')).read()
        assert 'make demo-clean' in proc.stdout
        assert os.path.isfile(os.path.join(prefix, 'pg', 'data', 'PG_VERSION'))
        assert not os.path.exists(os.path.join(prefix, 'pg', 'data', 'postmaster.pid')), \
            'the demo left its PostgreSQL running'
    finally:
        subprocess.run(['make', '-C', REPO, 'demo-clean', 'DEMO_PREFIX=%s' % prefix], capture_output=True, check=False)
        shutil.rmtree(prefix, ignore_errors=True)
