//go:build race

package main

// raceDetector reports whether the test binary runs with the race
// detector, whose shadow memory grows with every goroutine it has seen, so
// that RSS says nothing about sigild's own memory.
const raceDetector = true
