#!/usr/bin/env bash
# Checks every manifest in deploy/kubernetes against the Kubernetes API
# schemas, offline (PyPI's kubernetes-validate ships them), strictly: an
# unknown or misspelt field fails, as does a wrong type, a missing required
# field, invalid YAML, and a kind or apiVersion the schemas do not know
# (which kubernetes-validate itself only warns about). Exits non-zero on any
# failure, after printing what failed.
#
#   bash scripts/validate_k8s.sh            # KUBERNETES_VERSION=1.31.0 by default
set -euo pipefail
cd "$(dirname "$0")/.."

# The Kubernetes version the manifests are written for (kubernetes-validate
# 1.37 ships the schemas of 1.25.0 to 1.37.0).
version="${KUBERNETES_VERSION:-1.31.0}"

if ! command -v kubernetes-validate >/dev/null; then
    echo "kubernetes-validate is missing: python3 -m pip install kubernetes-validate" >&2
    echo "(.ci/run installs it)" >&2
    exit 2
fi
shopt -s nullglob
files=(deploy/kubernetes/*.yaml deploy/kubernetes/*.yml)
if ((${#files[@]} == 0)); then
    echo "no manifests in deploy/kubernetes" >&2
    exit 2
fi

# One run per file: a file that is not YAML stops kubernetes-validate, and
# the others are still checked.
failed=()
problems=""
for f in "${files[@]}"; do
    status=0
    out="$(kubernetes-validate --strict --kubernetes-version "$version" "$f" 2>&1)" || status=$?
    printf '%s\n' "$out"
    # Anything but a pass is a failure: errors, YAML parse errors, and the
    # warnings about kinds with no schema (a typo in `kind:`, a removed API).
    bad="$(printf '%s\n' "$out" | grep -v ' passed for resource ' | grep -v '^$' || true)"
    # A file with no resource in it (all comments, or emptied by mistake).
    if ! grep -qF "$f passed for resource " <<<"$out"; then
        bad+="${bad:+$'\n'}$f: no resource in it passed"
    fi
    if ((status != 0)) || [ -n "$bad" ]; then
        failed+=("$f")
        problems+="$bad"$'\n'
    fi
done

if ((${#failed[@]})); then
    echo >&2
    echo "FAILED: ${#failed[@]} of ${#files[@]} files do not validate against Kubernetes $version (strict): ${failed[*]}" >&2
    printf '%s' "$problems" >&2
    exit 1
fi
echo "ok: ${#files[@]} files checked against Kubernetes $version (strict)"
