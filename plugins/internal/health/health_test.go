package health

import (
	"testing"

	"github.com/quanyu/quanyu/sdk"
)

func TestCapture(t *testing.T) {
	if h, judge := Capture(nil, false, false); h.Status != sdk.HealthFailing || judge {
		t.Errorf("before Configure: %+v judge=%v", h, judge)
	}
	pub := map[string]uint64{"drop.ring": 3}
	h, judge := Capture(&pub, true, false)
	if h.Status != sdk.HealthOK || h.Message == "" || judge || h.Counters["drop.ring"] != 3 {
		t.Errorf("configured, not running: %+v judge=%v", h, judge)
	}
	h, judge = Capture(&pub, true, true)
	if !judge || h.Status != sdk.HealthOK {
		t.Errorf("running: %+v judge=%v", h, judge)
	}
	h.Counters["x"] = 1
	if _, ok := pub["x"]; ok {
		t.Error("the answer shares the published map: a caller's change would reach the capture")
	}
}
