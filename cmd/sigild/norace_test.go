//go:build !race

package main

// raceDetector reports whether the test binary runs with the race
// detector; see race_test.go.
const raceDetector = false
