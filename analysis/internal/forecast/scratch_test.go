package forecast

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/quanyu/quanyu/mix/api"
)

func poisson20(r *rand.Rand) float64 {
	return math.Max(0, math.Round(200+math.Sqrt(200)*r.NormFloat64())) / 10
}

func TestScratchLive(t *testing.T) {
	p := NewParams(api.PredictionSettings{Season: time.Minute, MinHistory: time.Minute, Band: 3}, step, 0, 0.1)
	m := NewModel(p, t0)
	vals := []float64{7.5, 20, 20, 20, 20, 20, 20, 20, 20, 6.4, 0, 0, 0}
	for i, v := range vals {
		pt := m.Observe(at(i), v)
		t.Logf("%5.1f %7.2f %7.2f %7.2f %v run %d", v, pt.Forecast, pt.Lower, pt.Upper, pt.Ready, m.OutRun())
	}
	for _, steady := range []int{12, 15} {
		for seed := uint64(1); seed <= 3; seed++ {
			r := rand.New(rand.NewPCG(seed, 99))
			m := NewModel(p, t0)
			vals := []float64{7.5}
			for range steady {
				vals = append(vals, poisson20(r))
			}
			vals = append(vals, 0, 0, 0, 0)
			t.Logf("steady %d seed %d", steady, seed)
			for i, v := range vals {
				pt := m.Observe(at(i), v)
				t.Logf("  %2d %5.1f %7.2f %7.2f %7.2f %v run %d", i, v, pt.Forecast, pt.Lower, pt.Upper, pt.Ready, m.OutRun())
			}
		}
	}
}

// flat: false alerts on n points of 20 ± Poisson noise, season 1m.
func TestScratchFlat(t *testing.T) {
	for _, mh := range []time.Duration{time.Minute, time.Hour} {
		p := NewParams(api.PredictionSettings{Season: time.Minute, MinHistory: mh, Band: 3}, step, 0, 0.1)
		var fa, ready int
		var early int
		for seed := uint64(1); seed <= 20; seed++ {
			r := rand.New(rand.NewPCG(seed, 98))
			m := NewModel(p, t0)
			prev := 0
			for i := range 10000 {
				v := poisson20(r)
				if i == 0 {
					v = 7.5
				}
				pt := m.Observe(at(i), v)
				if pt.Ready {
					ready++
				}
				run := m.OutRun()
				if run >= Confirm && prev < Confirm {
					fa++
					if i < 200 {
						early++
					}
				}
				prev = run
			}
		}
		t.Logf("minHistory %v: %d false alerts (%d in the first 200 points) in %d ready points: %.2f per 10,000", mh, fa, early, ready, float64(fa)/float64(ready)*1e4)
	}
}

// starts: many short starts of each noise shape, flat at 100, σ 7, season 1m and 1h, MinHistory 1m.
func TestScratchStarts(t *testing.T) {
	for _, nz := range []noise{gaussian, laplace, studentT} {
		for _, season := range []time.Duration{time.Minute, time.Hour} {
			p := NewParams(api.PredictionSettings{Season: season, MinHistory: time.Minute, Band: 3}, step, 0, 0.1)
			var fa, ready int
			var by [6]int
			for seed := uint64(1); seed <= 2000; seed++ {
				r := rand.New(rand.NewPCG(seed, 97))
				m := NewModel(p, t0)
				prev := 0
				for i := range 200 {
					v := 100 + 7*nz.draw(r)
					pt := m.Observe(at(i), v)
					if pt.Ready {
						ready++
					}
					run := m.OutRun()
					if run >= Confirm && prev < Confirm {
						fa++
						switch {
						case i < 15:
							by[0]++
						case i < 33:
							by[1]++
						case i < 50:
							by[2]++
						case i < 100:
							by[3]++
						default:
							by[4]++
						}
					}
					prev = run
				}
			}
			t.Logf("by point: <15 %d, <33 %d, <50 %d, <100 %d, <200 %d", by[0], by[1], by[2], by[3], by[4])
			t.Logf("%s season %v: %d false alerts in %d ready points of 2000 starts: %.2f per 10,000", nz.name, season, fa, ready, float64(fa)/float64(ready)*1e4)
		}
	}
}

func TestScratchTrace(t *testing.T) {
	p := NewParams(api.PredictionSettings{Season: time.Hour, MinHistory: time.Minute, Band: 3}, step, 0, 0.1)
	r := rand.New(rand.NewPCG(1, 97))
	m := NewModel(p, t0)
	for i := range 80 {
		v := 100 + 7*r.NormFloat64()
		pt := m.Observe(at(i), v)
		t.Logf("%2d %6.1f %7.2f %7.2f %7.2f %v run %d sus %d k %d dev %.2f", i, v, pt.Forecast, pt.Lower, pt.Upper, pt.Ready, m.OutRun(), m.sus, m.k, m.dev())
	}
}

func TestScratchAcceptNoJS(t *testing.T) {
	noJS = true
	defer func() { noJS = false }()
	TestAnomalies(t)
}
