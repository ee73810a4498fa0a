package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	"github.com/sigil-kms/sigil/hsm"
)

// opFunc performs one operation; worker is the goroutine's index and seq
// its count of operations so far. A non-nil error counts as a failed
// operation under the code errorCode gives it.
type opFunc func(ctx context.Context, worker, seq int) error

// checkError is an error found by checking a response (wrong length, bad
// round trip, signature that does not verify) rather than returned by the
// call itself.
type checkError struct{ msg string }

func (e checkError) Error() string { return "check: " + e.msg }

// checkFailed returns a checkError with a formatted message.
func checkFailed(format string, args ...any) error {
	return checkError{fmt.Sprintf(format, args...)}
}

// errorCode names the kind of err for the error counts: a Connect code in
// server mode, an hsm error class in raw mode, "check" for a response that
// failed its check and "deadline" for a call cut off by the run's time
// bound.
func errorCode(err error) string {
	var ce checkError
	switch {
	case errors.As(err, &ce):
		return "check"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return "deadline"
	case errors.Is(err, hsm.ErrNotFound):
		return "hsm_not_found"
	case errors.Is(err, hsm.ErrDecrypt):
		return "hsm_decrypt"
	case errors.Is(err, hsm.ErrUnavailable):
		return "hsm_unavailable"
	case errors.Is(err, hsm.ErrInvalid):
		return "hsm_invalid"
	}
	if c := connect.CodeOf(err); c != connect.CodeUnknown {
		return c.String()
	}
	return "unknown"
}

// result is what one run measured; it is printed as one line of JSON.
type result struct {
	RPC         string         `json:"rpc"`
	Mode        string         `json:"mode"`
	Concurrency int            `json:"concurrency"`
	Ops         int            `json:"ops"`
	Seconds     float64        `json:"seconds"`
	OpsPerSec   float64        `json:"ops_per_sec"`
	P50         float64        `json:"p50_ms"`
	P90         float64        `json:"p90_ms"`
	P99         float64        `json:"p99_ms"`
	Max         float64        `json:"max_ms"`
	Errors      int            `json:"errors"`
	ErrorCodes  map[string]int `json:"error_codes,omitempty"`
	FirstError  string         `json:"first_error,omitempty"`
	Interrupted bool           `json:"interrupted,omitempty"`
}

// quantile returns the q-quantile (0 < q ≤ 1) of sorted by the nearest-rank
// method: the smallest value with at least q of the values at or below it.
// It returns 0 for an empty slice.
func quantile(sorted []time.Duration, q float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(n))) - 1
	i = max(0, min(i, n-1))
	return sorted[i]
}

// ms converts d to milliseconds, rounded to microseconds.
func ms(d time.Duration) float64 {
	return math.Round(float64(d)/1e3) / 1e3
}

// summarize builds the result of a run from the latencies of its
// successful operations, its error counts and its elapsed time.
func summarize(rpc, mode string, conc int, lat []time.Duration, codes map[string]int, firstErr string, elapsed time.Duration) result {
	slices.Sort(lat)
	r := result{RPC: rpc, Mode: mode, Concurrency: conc, Ops: len(lat), Seconds: math.Round(elapsed.Seconds()*1e3) / 1e3,
		P50: ms(quantile(lat, 0.50)), P90: ms(quantile(lat, 0.90)), P99: ms(quantile(lat, 0.99)), FirstError: firstErr}
	if len(lat) > 0 {
		r.Max = ms(lat[len(lat)-1])
	}
	if elapsed > 0 {
		r.OpsPerSec = math.Round(float64(len(lat))/elapsed.Seconds()*10) / 10
	}
	for c, n := range codes {
		r.Errors += n
		if r.ErrorCodes == nil {
			r.ErrorCodes = map[string]int{}
		}
		r.ErrorCodes[c] = n
	}
	return r
}

// write prints r as one line of JSON to w.
func (r result) write(w io.Writer) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// human returns r as one line for people.
func (r result) human() string {
	var codes []string
	for c, n := range r.ErrorCodes {
		codes = append(codes, fmt.Sprintf("%s=%d", c, n))
	}
	sort.Strings(codes)
	errs := fmt.Sprint(r.Errors)
	if len(codes) > 0 {
		errs += " (" + strings.Join(codes, " ") + ")"
	}
	if r.Interrupted {
		errs += "; interrupted"
	}
	return fmt.Sprintf("%s %s c=%d: %d ops in %.2fs = %.1f ops/s; p50 %.3f p90 %.3f p99 %.3f max %.3f ms; errors %s",
		r.RPC, r.Mode, r.Concurrency, r.Ops, r.Seconds, r.OpsPerSec, r.P50, r.P90, r.P99, r.Max, errs)
}

// drive runs op from conc goroutines until duration has passed or count
// operations (when count > 0) have started, and returns the latencies of
// the successful ones, the number of failures by code and the first
// failure's text. Calls still running when ctx ends fail with its error.
func drive(ctx context.Context, conc int, duration time.Duration, count int, op opFunc) ([]time.Duration, map[string]int, string, time.Duration) {
	var (
		started  atomic.Int64
		mu       sync.Mutex
		all      []time.Duration
		codes    = map[string]int{}
		firstErr string
		wg       sync.WaitGroup
	)
	begin := time.Now()
	stop := begin.Add(duration)
	for w := range conc {
		wg.Go(func() {
			lat := make([]time.Duration, 0, 1024)
			local := map[string]int{}
			var first string
			for seq := 0; ; seq++ {
				now := time.Now()
				if !now.Before(stop) || ctx.Err() != nil {
					break
				}
				if count > 0 && started.Add(1) > int64(count) {
					break
				}
				err := op(ctx, w, seq)
				d := time.Since(now)
				if err != nil {
					local[errorCode(err)]++
					if first == "" {
						first = err.Error()
					}
					continue
				}
				lat = append(lat, d)
			}
			mu.Lock()
			defer mu.Unlock()
			all = append(all, lat...)
			for c, n := range local {
				codes[c] += n
			}
			if firstErr == "" {
				firstErr = first
			}
		})
	}
	wg.Wait()
	return all, codes, firstErr, time.Since(begin)
}
