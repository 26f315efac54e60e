#!/usr/bin/env bash
# Checks every manifest in deploy/kubernetes against the Kubernetes API
# schemas, offline (PyPI's kubernetes-validate ships them), strictly: an
# unknown or misspelt field fails, as does a wrong type or a missing
# required field. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Kubernetes version the manifests are written for.
version="${KUBERNETES_VERSION:-1.31.0}"

if ! command -v kubernetes-validate >/dev/null; then
    echo "kubernetes-validate is missing: python3 -m pip install kubernetes-validate" >&2
    exit 2
fi
shopt -s nullglob
files=(deploy/kubernetes/*.yaml)
if ((${#files[@]} == 0)); then
    echo "no manifests in deploy/kubernetes" >&2
    exit 2
fi
kubernetes-validate --strict --kubernetes-version "$version" "${files[@]}"
