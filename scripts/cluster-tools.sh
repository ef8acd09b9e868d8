#!/usr/bin/env bash
# Builds the single-machine Kubernetes the cluster tests run on, from the Go module proxy
# (no prebuilt Kubernetes binary or registry image is reachable from this project's
# machines), and caches it per version outside the repo:
#   ~/.cache/trailerlink/tools/kubernetes-<version>/bin/{kube-apiserver,
#       kube-controller-manager,kube-scheduler}
#   ~/.cache/trailerlink/tools/etcd-<version>/bin/etcd
#   ~/.cache/trailerlink/tools/kwok-<version>/bin/kwok (+ its stage configs)
# k8s.io/kubernetes keeps its ~31 staging modules as `./staging` replaces, which a
# module download does not carry: a small wrapper module requires k8s.io/kubernetes and
# points each staging module at the same module's published v0.x release. etcd's server
# module has sibling replaces of its own, so it gets the same treatment. Slow once per
# machine (kube-apiserver about 4 minutes on 2 cores), seconds afterwards.
set -euo pipefail

KUBERNETES_VERSION="${KUBERNETES_VERSION:-v1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.14.7}"
PROMETHEUS_OPERATOR_VERSION="${PROMETHEUS_OPERATOR_VERSION:-v0.85.0}"
CACHE="${TRAILERLINK_TOOLS_CACHE:-$HOME/.cache/trailerlink/tools}"

if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
  export PATH="$PATH:/usr/local/go/bin"
fi
command -v go >/dev/null 2>&1 || { echo "cluster-tools: no Go toolchain" >&2; exit 1; }
export GOFLAGS=-mod=mod GOTOOLCHAIN=local

# --- Kubernetes control plane --------------------------------------------------------
k8s_dir="$CACHE/kubernetes-$KUBERNETES_VERSION"
k8s_bins=(kube-apiserver kube-controller-manager kube-scheduler)
k8s_built() { for b in "${k8s_bins[@]}"; do [[ -x "$k8s_dir/bin/$b" ]] || return 1; done; }
if ! k8s_built; then
  echo "cluster-tools: building Kubernetes $KUBERNETES_VERSION control plane (once per machine; minutes)" >&2
  mkdir -p "$k8s_dir/src" "$k8s_dir/bin"
  staging="v0.${KUBERNETES_VERSION#v1.}"
  (
    cd "$k8s_dir/src"
    gomod="$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
    goversion="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$gomod" | head -1)"
    {
      echo "module trailerlink.local/kubernetes-build"
      echo
      echo "go $goversion"
      echo
      echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
      echo
      sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#replace \1 => \1 '"$staging"'#p' "$gomod"
    } > go.mod
    printf 'package tools\n\nimport (\n' > tools.go
    for b in "${k8s_bins[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$b" >> tools.go; done
    printf ')\n' >> tools.go
    sed -i '1i //go:build tools\n' tools.go
    go mod tidy >/dev/null 2>&1 || go mod tidy
    minor="${KUBERNETES_VERSION#v1.}"; minor="${minor%%.*}"
    ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION"
    ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
    for b in "${k8s_bins[@]}"; do
      go build -trimpath -ldflags "$ldflags" -o "$k8s_dir/bin/$b.tmp" "k8s.io/kubernetes/cmd/$b"
      mv "$k8s_dir/bin/$b.tmp" "$k8s_dir/bin/$b"
    done
  )
fi

# --- a real node (NODE=real): the kubelet, kube-proxy and CoreDNS --------------------
# Built from the same wrapper module (its go.sum already has every dependency), only when
# asked: the kwok cluster runs no process in its pods and needs none of them.
if [[ "${TRAILERLINK_CLUSTER_NODE:-}" == real ]]; then
  node_bins=(kubelet kube-proxy)
  for b in "${node_bins[@]}"; do
    [[ -x "$k8s_dir/bin/$b" ]] && continue
    echo "cluster-tools: building $b $KUBERNETES_VERSION (once per machine)" >&2
    (
      cd "$k8s_dir/src"
      minor="${KUBERNETES_VERSION#v1.}"; minor="${minor%%.*}"
      ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION"
      ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
      go build -trimpath -ldflags "$ldflags" -o "$k8s_dir/bin/$b.tmp" "k8s.io/kubernetes/cmd/$b"
      mv "$k8s_dir/bin/$b.tmp" "$k8s_dir/bin/$b"
    )
  done
  coredns_dir="$CACHE/coredns-$COREDNS_VERSION"
  if [[ ! -x "$coredns_dir/bin/coredns" ]]; then
    echo "cluster-tools: building CoreDNS $COREDNS_VERSION (once per machine)" >&2
    mkdir -p "$coredns_dir/bin"
    GOBIN="$coredns_dir/bin" go install -trimpath -ldflags "-s -w" \
      "github.com/coredns/coredns@$COREDNS_VERSION"
  fi
  echo "COREDNS_BIN=$coredns_dir/bin"
fi

# --- etcd ----------------------------------------------------------------------------
etcd_dir="$CACHE/etcd-$ETCD_VERSION"
if [[ ! -x "$etcd_dir/bin/etcd" ]]; then
  echo "cluster-tools: building etcd $ETCD_VERSION (once per machine)" >&2
  mkdir -p "$etcd_dir/src" "$etcd_dir/bin"
  (
    cd "$etcd_dir/src"
    gomod="$(go mod download -json "go.etcd.io/etcd/server/v3@$ETCD_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
    goversion="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$gomod" | head -1)"
    {
      echo "module trailerlink.local/etcd-build"
      echo
      echo "go $goversion"
      echo
      echo "require go.etcd.io/etcd/server/v3 $ETCD_VERSION"
      echo
      sed -n 's#^[[:space:]]*\(go.etcd.io/etcd/[a-z0-9/-]*\) => \.\./.*#replace \1 => \1 '"$ETCD_VERSION"'#p' "$gomod"
    } > go.mod
    printf 'package main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\nfunc main() { etcdmain.Main(os.Args) }\n' > main.go
    go mod tidy >/dev/null 2>&1 || go mod tidy
    go build -trimpath -ldflags "-s -w" -o "$etcd_dir/bin/etcd.tmp" .
    mv "$etcd_dir/bin/etcd.tmp" "$etcd_dir/bin/etcd"
  )
fi

# --- kwok (nodes and pods simulated by the API server's own objects) -----------------
kwok_dir="$CACHE/kwok-$KWOK_VERSION"
if [[ ! -x "$kwok_dir/bin/kwok" ]]; then
  echo "cluster-tools: building kwok $KWOK_VERSION (once per machine)" >&2
  mkdir -p "$kwok_dir/bin"
  GOBIN="$kwok_dir/bin" go install "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  # Its stage configs (what a simulated pod/node goes through) ship in the module.
  src="$(go list -m -json "sigs.k8s.io/kwok@$KWOK_VERSION" 2>/dev/null | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
  [[ -n "$src" ]] || src="$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
  rm -rf "$kwok_dir/stage"; mkdir -p "$kwok_dir/stage"
  cp -r "$src/kustomize/stage/." "$kwok_dir/stage/"
  chmod -R u+w "$kwok_dir/stage"
fi

# --- CRDs the central chart's objects need ---------------------------------------------
# prometheus-operator's real CRD schemas ship in its Go module (example/prometheus-operator-crd).
crd_dir="$CACHE/crds-prometheus-operator-$PROMETHEUS_OPERATOR_VERSION"
if [[ ! -s "$crd_dir/monitoring.coreos.com_servicemonitors.yaml" ]]; then
  mkdir -p "$crd_dir"
  src="$(go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
  for kind in servicemonitors prometheusrules podmonitors; do
    cp "$src/example/prometheus-operator-crd/monitoring.coreos.com_$kind.yaml" "$crd_dir/"
  done
  chmod -R u+w "$crd_dir"
fi

echo "CRDS_PROMETHEUS_OPERATOR=$crd_dir"
echo "KUBERNETES_BIN=$k8s_dir/bin"
echo "ETCD_BIN=$etcd_dir/bin"
echo "KWOK_BIN=$kwok_dir/bin"
echo "KWOK_STAGE=$kwok_dir/stage"
