#!/usr/bin/env bash
# Security checks (make security): the Python security linter, then the security tests.
#   1. ruff's flake8-bandit "S" rules (ruff.toml) over every Python file of the checkout: plugins/, roles/, scripts/,
#      reference_platform/, bench/, demo/, tests/, molecule/*/tests/, and the roles' Python templates rendered
#      with placeholders (Jinja is not Python until rendered).
#   2. Every inline suppression names its rule and gives a reason: "# noqa: S603 -- argv list, no shell"
#      (the house form; any text after the codes counts). A bare "# noqa: S603", a blanket "# noqa" or a
#      "# nosec" fails.
#   3. pytest tests/security: secrets never on argv / in logs / Ansible output, owners and modes, hostile input.
# Environment: VENV (default <repo>/.venv); SECURITY_SKIP_TESTS=1 runs only the linter.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
RUFF=$VENV/bin/ruff
cd "$ROOT"

log() { printf 'security: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ -x $RUFF ]] || die "$RUFF is missing: run 'make venv' (requirements/test.txt lists ruff)"

started=$SECONDS
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- 1. the linter --------------------------------------------------------------------------------
# Python templates of the roles (a python shebang on line 1), rendered with placeholders for Jinja expressions.
rendered=()
shopt -s nullglob
for template in roles/*/templates/*.j2; do
    head -n1 "$template" | grep -q '^#!.*python' || continue
    target=$work/$(echo "${template%.j2}" | tr '/' '_').py
    sed -e 's/{{[^}]*to_json[^}]*}}/"\/placeholder"/g' -e 's/{{[^}]*}}/placeholder/g' "$template" > "$target"
    rendered+=("$target")
done
shopt -u nullglob

paths=(plugins roles scripts reference_platform bench demo tests molecule)
existing=()
for path in "${paths[@]}"; do
    [[ -e $path ]] && existing+=("$path")
done

files=$("$RUFF" check --no-cache --config ruff.toml --show-files "${existing[@]}" "${rendered[@]}" | grep -c '\.py$' || true)
log "ruff $("$RUFF" --version | cut -d' ' -f2): S rules over $files Python files (${#rendered[@]} rendered role templates)"
lint_rc=0
"$RUFF" check --no-cache --config ruff.toml --output-format concise "${existing[@]}" "${rendered[@]}" || lint_rc=$?
if ((lint_rc != 0)); then
    die "ruff found security findings above: fix the code, or suppress one with '# noqa: Sxxx -- <reason>'"
fi

# --- 2. every suppression carries its reason ------------------------------------------------------
bare=$(grep -rnE --include='*.py' '#[[:space:]]*(noqa|nosec)' "${existing[@]}" \
       | grep -E 'noqa:[[:space:]]*S[0-9]|nosec|#[[:space:]]*noqa[[:space:]]*$' \
       | grep -vE 'noqa:[[:space:]]*S[0-9]+(,[[:space:]]*S[0-9]+)*[[:space:]]+(--[[:space:]]+)?[^[:space:]#]' || true)
if [[ -n $bare ]]; then
    printf '%s\n' "$bare" >&2
    die "suppressions above lack a reason: write '# noqa: Sxxx -- <why this is safe>'"
fi
suppressions=$(grep -rhoE --include='*.py' 'noqa:[[:space:]]*S[0-9]+' "${existing[@]}" | wc -l)
shipped=$(grep -rhoE --include='*.py' 'noqa:[[:space:]]*S[0-9]+' plugins roles | wc -l)
log "lint ok: 0 findings; $suppressions inline suppressions, each with a reason ($shipped in plugins/ and roles/); $((SECONDS - started)) s"

# --- 3. the security tests ------------------------------------------------------------------------
if [[ ${SECURITY_SKIP_TESTS:-0} == 1 ]]; then
    log "SECURITY_SKIP_TESTS=1: tests/security skipped"
    exit 0
fi
tests_started=$SECONDS
# integration_conftest is imported before pytest registers it, so its asserts are plain asserts (they still fail)
# two workers, one per test file group: the installed-server file and the hostile-input files overlap
"$VENV/bin/pytest" tests/security -q -p no:cacheprovider -W 'ignore::pytest.PytestAssertRewriteWarning' -n 2 --dist loadfile
log "tests/security passed in $((SECONDS - tests_started)) s; total $((SECONDS - started)) s"
