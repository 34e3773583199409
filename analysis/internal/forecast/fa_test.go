package forecast

import (
	"testing"
	"time"
)

func TestScratchFAWhere(t *testing.T) {
	for _, nz := range []noise{gaussian, laplace, studentT} {
		for seed := uint64(1); seed <= 5; seed++ {
			s := newScenario(seed, 4, nz, false)
			m := NewModel(hourly(3), t0)
			prev := 0
			var where []int
			for i, v := range s.value {
				pt := m.Observe(t0.Add(time.Duration(i)*step), v)
				run := m.OutRun()
				if run >= Confirm && prev < Confirm && s.anomalyOf[i] < 0 && pt.Ready {
					where = append(where, i)
				}
				prev = run
			}
			t.Logf("%s seed %d: %v", nz.name, seed, where)
		}
	}
}
