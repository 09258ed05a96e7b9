//go:build tools

// Package components names the upstream main packages the lab builds, so that
// `go mod tidy` keeps them in the build list. Nothing here is compiled.
package components

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
