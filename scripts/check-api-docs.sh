#!/usr/bin/env bash
# Checks docs/api/ (the API documents generated from the code, see docs/api/README.md):
#   1. it is what the code generates now (`api-docs --check`: fails when someone changed a type,
#      an event or a binding and did not run `make api-docs`);
#   2. asyncapi.json is a valid AsyncAPI 3.0 document (@asyncapi/cli validate, warnings fail);
#   3. every schemas/*.json is a valid JSON Schema and every examples/*.json is valid against
#      its schema (check-jsonschema);
#   4. every openapi/*.json passes `@redocly/cli lint` (recommended rules, docs/api/redocly.yaml).
#
# The validators are pinned and installed on first use outside the repository, in
# $CHOREO_TOOLS_DIR (default ~/.cache/choreo-api-tools), one directory per version: about 85 s
# the first time (mostly @asyncapi/cli), then nothing. Needs node/npm (20 or later) and python3.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ASYNCAPI_CLI_VERSION=6.2.0
REDOCLY_CLI_VERSION=2.77.0
CHECK_JSONSCHEMA_VERSION=0.39.0
TOOLS="${CHOREO_TOOLS_DIR:-$HOME/.cache/choreo-api-tools}"
API=docs/api

START=$SECONDS
step() { printf '\n--> [%3ss] %s\n' "$((SECONDS - START))" "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

command -v npm >/dev/null 2>&1 || die "npm is missing (apt-get install nodejs npm)"
command -v python3 >/dev/null 2>&1 || die "python3 is missing"

# npm_tool DIR PACKAGE@VERSION: installs PACKAGE@VERSION into $TOOLS/DIR unless it is there.
npm_tool() {
  local dir="$TOOLS/$1" package="$2"
  if [[ ! -f "$dir/.installed" ]]; then
    echo "installing $package into $dir"
    rm -rf "$dir"
    npm install --prefix "$dir" --no-audit --no-fund --loglevel=error "$package" >/dev/null
    touch "$dir/.installed"
  fi
}

step "docs/api is what the code generates (api-docs --check)"
cargo run -q -p choreo-api-docs --bin api-docs -- --check

step "validators: @asyncapi/cli $ASYNCAPI_CLI_VERSION, @redocly/cli $REDOCLY_CLI_VERSION, check-jsonschema $CHECK_JSONSCHEMA_VERSION"
npm_tool "asyncapi-cli-$ASYNCAPI_CLI_VERSION" "@asyncapi/cli@$ASYNCAPI_CLI_VERSION"
npm_tool "redocly-cli-$REDOCLY_CLI_VERSION" "@redocly/cli@$REDOCLY_CLI_VERSION"
venv="$TOOLS/check-jsonschema-$CHECK_JSONSCHEMA_VERSION"
if [[ ! -f "$venv/.installed" ]]; then
  echo "installing check-jsonschema into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "check-jsonschema==$CHECK_JSONSCHEMA_VERSION"
  touch "$venv/.installed"
fi
asyncapi="$TOOLS/asyncapi-cli-$ASYNCAPI_CLI_VERSION/node_modules/.bin/asyncapi"
redocly="$TOOLS/redocly-cli-$REDOCLY_CLI_VERSION/node_modules/.bin/redocly"
check_jsonschema="$venv/bin/check-jsonschema"
# No usage reports from the AsyncAPI CLI (CI has no route to them anyway), no config warnings.
export SUPPRESS_NO_CONFIG_WARNING=1
[[ -f "$HOME/.asyncapi-analytics" ]] || "$asyncapi" config analytics --disable >/dev/null 2>&1 || true

step "AsyncAPI 3.0: $API/asyncapi.json"
# The filter hides the CLI's configuration noise only; the verdict is the validator's exit status.
set +o pipefail
"$asyncapi" validate --fail-severity warn "$API/asyncapi.json" 2>&1 \
  | grep -v -e '^WARNING: ' -e 'anonymous metrics' -e '^$'
status=${PIPESTATUS[0]}
set -o pipefail
((status == 0)) || die "$API/asyncapi.json is not a valid AsyncAPI document"

step "JSON Schema: $API/schemas/*.json against the meta-schema, each example against its schema"
"$check_jsonschema" --check-metaschema "$API"/schemas/*.json
for schema in "$API"/schemas/*.json; do
  example="$API/examples/$(basename "$schema")"
  [[ -f "$example" ]] || die "no example for $schema"
  "$check_jsonschema" --schemafile "$schema" "$example"
done

step "OpenAPI 3.1: redocly lint $API/openapi/*.json"
(cd "$API" && "$redocly" lint --format=summary openapi/*.json)

step "API documents OK"
