// Package k8s holds the Kubernetes manifests of sigild, a kustomization in
// this directory, and the tests that render it as `kubectl kustomize
// deploy/k8s` does and check every rendered object. It has no code outside
// its tests.
package k8s
