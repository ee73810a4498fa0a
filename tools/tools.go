//go:build tools

// Package tools pins the code generators used by buf generate.
package tools
