#!/usr/bin/env bash
# Provide the binaries the spheron-k8s tests run against: etcd, kube-apiserver, kube-controller-manager
# (Job, namespace, quota and service-account controllers), kube-scheduler (GPU limits, affinity and
# tolerations decide placement) and kwok (plays the kubelets of the GPU nodes).
#
# Each is built from the Go module proxy in a throwaway module and cached under
#   "${XDG_CACHE_HOME:-$HOME/.cache}/spheron/k8s/<version>/"
# and reused when already present. When KUBEBUILDER_ASSETS names a directory (as envtest users
# have, usually with kube-apiserver and etcd), the binaries found there are linked into the cache
# directory instead of being built; only the ones it lacks are built.
#
# Progress goes to stderr; the last line on stdout is the directory holding the five binaries, so
#   export SPHERON_K8S_ASSETS="$(scripts/k8s-setup.sh)"
# is all a test command needs. Idempotent.
set -euo pipefail

K8S_VERSION="${SPHERON_K8S_VERSION:-v1.36.3}"
ETCD_VERSION="${SPHERON_ETCD_VERSION:-v3.6.8}"
KWOK_VERSION="${SPHERON_KWOK_VERSION:-v0.8.0}"
BUNDLE="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}"
CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/spheron/k8s"
DEST="${CACHE_ROOT}/${BUNDLE}"

log() { echo "[k8s-setup] $*" >&2; }

mkdir -p "$DEST"

if [[ -n "${KUBEBUILDER_ASSETS:-}" && -d "${KUBEBUILDER_ASSETS}" ]]; then
  log "using binaries from KUBEBUILDER_ASSETS=${KUBEBUILDER_ASSETS} where present"
  for b in kube-apiserver etcd kube-controller-manager kube-scheduler kwok; do
    if [[ -x "${KUBEBUILDER_ASSETS}/$b" && ! -e "$DEST/$b" ]]; then
      ln -sf "${KUBEBUILDER_ASSETS}/$b" "$DEST/$b"
    fi
  done
fi

all_present=1
for b in kube-apiserver etcd kube-controller-manager kube-scheduler kwok; do
  [[ -x "$DEST/$b" ]] || all_present=0
done
if [[ "$all_present" == 1 ]]; then
  log "all binaries present in $DEST"
  echo "$DEST"
  exit 0
fi

command -v go >/dev/null 2>&1 || { log "error: the Go toolchain (go) is not on PATH; it is needed to build the missing binaries"; exit 1; }

export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export CGO_ENABLED="${CGO_ENABLED:-0}"
LDFLAGS_EXTRA=""

# build_tool NAME PACKAGE MODULE@VERSION [extra go.mod edit args...]
build_tool() {
  local name="$1" pkg="$2" modver="$3"
  shift 3
  if [[ -x "$DEST/$name" ]]; then
    log "$name: cached at $DEST/$name"
    return 0
  fi
  local work
  work="$(mktemp -d "${TMPDIR:-/tmp}/spheron-k8s-build-${name}.XXXXXX")"
  log "$name: building $pkg from $modver in $work (this takes several minutes)"
  (
    cd "$work"
    go mod init spheron.invalid/build-"$name" >/dev/null 2>&1
    go mod edit -require="$modver" "$@"
    # Resolve the full module graph, then build the binary out of the module cache.
    go get "$pkg@${modver#*@}" >&2
    go build -trimpath -ldflags "-s -w $LDFLAGS_EXTRA" -o "$DEST/$name.tmp" "$pkg" >&2
  )
  mv "$DEST/$name.tmp" "$DEST/$name"
  rm -rf "$work"
  log "$name: built $DEST/$name"
}

# k8s.io/kubernetes replaces its staging modules with local paths, which do not exist in the module
# zip; point each at its published v0.Y.Z release instead (the list is the replace block of
# k8s.io/kubernetes' go.mod, minus sample-cli-plugin, which is not published for 1.36).
staging_minor="v0.${K8S_VERSION#v1.}"
replaces=()
for m in api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider \
  cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api \
  cri-client cri-streaming csi-translation-lib dynamic-resource-allocation endpointslice externaljwt \
  kms kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics \
  mount-utils pod-security-admission sample-apiserver sample-controller streaming; do
  replaces+=("-replace=k8s.io/${m}=k8s.io/${m}@${staging_minor}")
done
LDFLAGS_EXTRA="-X k8s.io/component-base/version.gitVersion=${K8S_VERSION} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2)"
for b in kube-apiserver kube-controller-manager kube-scheduler; do
  build_tool "$b" "k8s.io/kubernetes/cmd/$b" "k8s.io/kubernetes@${K8S_VERSION}" "${replaces[@]}"
done
LDFLAGS_EXTRA=""
# etcd's package main is the root of go.etcd.io/etcd/server/v3; as a dependency its replace lines
# are ignored and the published etcd modules are used.
build_tool etcd go.etcd.io/etcd/server/v3 "go.etcd.io/etcd/server/v3@${ETCD_VERSION}"
build_tool kwok sigs.k8s.io/kwok/cmd/kwok "sigs.k8s.io/kwok@${KWOK_VERSION}"

log "binaries ready in $DEST"
echo "$DEST"
