// Package health holds the part of a capture plugin's Health answer that does not depend on the
// backend: the counters its running capture last published, and the state before and between
// runs. Each backend then judges its own drop counters.
package health

import "github.com/quanyu/quanyu/sdk"

// Capture starts a capture's Health answer from the counters published last (nil: none yet):
// failing before Configure, OK with a note while configured but not running. judge is true when
// the capture runs, and the caller should look at its counters for trouble.
func Capture(published *map[string]uint64, configured, running bool) (h sdk.Health, judge bool) {
	h = sdk.Health{Status: sdk.HealthOK, Counters: map[string]uint64{}}
	if published != nil {
		for k, v := range *published {
			h.Counters[k] = v
		}
	}
	switch {
	case !configured:
		h.Status, h.Message = sdk.HealthFailing, "not configured"
	case !running:
		h.Message = "configured, not capturing"
	default:
		judge = true
	}
	return h, judge
}
