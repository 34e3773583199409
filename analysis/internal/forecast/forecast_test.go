package forecast

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
	"unsafe"

	"github.com/quanyu/quanyu/mix/api"
)

// t0 is a whole hour, so that a season of an hour starts at slot 0; nothing depends on it.
var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

const step = 10 * time.Second

// noise draws unit-variance noise of one shape.
type noise struct {
	name string
	draw func(r *rand.Rand) float64
}

var (
	gaussian = noise{"gaussian", func(r *rand.Rand) float64 { return r.NormFloat64() }}
	// laplace has the same variance and a far heavier tail: a value beyond 3σ is 5 times as
	// likely as for gaussian noise, beyond 4σ 55 times.
	laplace = noise{"laplace", func(r *rand.Rand) float64 {
		v := r.ExpFloat64() / math.Sqrt2
		if r.IntN(2) == 0 {
			return -v
		}
		return v
	}}
	// studentT has 5 degrees of freedom, scaled to unit variance: its tail is like Laplace's near
	// 4σ and heavier beyond, so more of its variance is in values the deviation sees clipped.
	studentT = noise{"student-t5", func(r *rand.Rand) float64 {
		var chi2 float64
		for range 5 {
			z := r.NormFloat64()
			chi2 += z * z
		}
		return r.NormFloat64() / math.Sqrt(chi2/5) * math.Sqrt(3.0/5)
	}}
)

// anomaly is a spike (sign +1) or a drop (-1) of size noise deviations over points [at, at+n).
type anomaly struct {
	at, n int
	sign  int8
	size  float64
}

// scenario is a synthetic series: clean is base + season + trend + noise; value adds the
// anomalies; anomalyOf[i] is the index of the anomaly point i is in, or -1.
type scenario struct {
	clean, value []float64
	anomalies    []anomaly
	anomalyOf    []int
	sigma        float64
}

// newScenario builds days days of 10 s points with a season of an hour (360 points): base 100,
// a seasonal swing of ±30 with a second harmonic of ±10 (none if flat), a trend of +20 over the
// series, noise of σ = 7 (7% of the base) and one anomaly of 5–10σ lasting 3–10 points in each
// block of about 850 points after the first two seasons.
func newScenario(seed uint64, days int, nz noise, flat bool) *scenario {
	r := rand.New(rand.NewPCG(seed, 1))
	const season, sigma = 360, 7.0
	n := days * 24 * season
	s := &scenario{clean: make([]float64, n), value: make([]float64, n), anomalyOf: make([]int, n), sigma: sigma}
	for i := range n {
		ph := 2 * math.Pi * float64(i%season) / season
		s.clean[i] = 100 + 20*float64(i)/float64(n) + sigma*nz.draw(r)
		if !flat {
			s.clean[i] += 30*math.Sin(ph) + 10*math.Sin(2*ph+1)
		}
		s.value[i] = s.clean[i]
		s.anomalyOf[i] = -1
	}
	const blocks = 40
	first := 2 * season
	block := (n - first) / blocks
	for k := range blocks {
		a := anomaly{at: first + k*block + 50 + r.IntN(block-70), n: 3 + r.IntN(8), sign: 1, size: 5 + 5*r.Float64()}
		if r.IntN(2) == 0 {
			a.sign = -1
		}
		for i := a.at; i < a.at+a.n; i++ {
			s.value[i] += float64(a.sign) * a.size * sigma
			s.anomalyOf[i] = len(s.anomalies)
		}
		s.anomalies = append(s.anomalies, a)
	}
	return s
}

// outcome is what a model made of a scenario.
type outcome struct {
	detected      []bool  // per anomaly: an alert on its side within it
	falseAlerts   int     // alerts starting on a normal point
	normalReady   int     // normal points at which the model was Ready
	mae           float64 // mean absolute error of the forecast on normal points after two seasons
	prevSeason    float64 // the same for the value a season earlier
	movingAvg     float64 // the same for the mean of the last 30 values
	errorsCounted int
}

// run feeds a scenario to a model. The baselines are given the clean series, without the
// anomalies, which favours them.
func run(s *scenario, p *Params) outcome {
	const season, window = 360, 30
	m := NewModel(p, t0)
	o := outcome{detected: make([]bool, len(s.anomalies))}
	was := false // the condition held at the previous point
	var sumWindow float64
	for i, v := range s.value {
		pt := m.Observe(t0.Add(time.Duration(i)*step), v)
		confirmed := m.Confirmed()
		started := confirmed && !was
		was = confirmed
		a := s.anomalyOf[i]
		switch {
		case a >= 0:
			if confirmed && pt.Out == s.anomalies[a].sign {
				o.detected[a] = true
			}
		default:
			if pt.Ready {
				o.normalReady++
			}
			if started {
				o.falseAlerts++
			}
			if i >= 2*season {
				o.mae += math.Abs(pt.Forecast - v)
				o.prevSeason += math.Abs(s.clean[i-season] - v)
				o.movingAvg += math.Abs(sumWindow/window - v)
				o.errorsCounted++
			}
		}
		sumWindow += s.clean[i]
		if i >= window {
			sumWindow -= s.clean[i-window]
		}
	}
	c := float64(o.errorsCounted)
	o.mae, o.prevSeason, o.movingAvg = o.mae/c, o.prevSeason/c, o.movingAvg/c
	return o
}

// hourly is the default settings with a season of an hour, for a rate (MinDev 0.1).
func hourly(band float64) *Params {
	s := api.DefaultPredictionSettings()
	s.Season = time.Hour
	return NewParams(s, step, band, 0.1)
}

// TestAnomalies is the acceptance test: on four days of a noisy seasonal series (five seeds, 200
// anomalies in all) every anomaly is alerted on, false alerts stay under one per 10,000 normal
// points, and the forecast beats two naive baselines — for Gaussian noise and for two with
// heavier tails, Laplace and Student-t with 5 degrees of freedom, where a value beyond 3σ is 4
// to 5 times as likely. The heavier tails hold the bound thanks to confirmExcess: before it they
// raised 0.71 and 1.12 false alerts per 10,000 points with these seeds (1.42 and 0.92 with the
// 40 of TestAnomaliesOtherSeeds), with it 0.41 and 0.47 (0.87 and 0.47). A band of 3.5 instead
// brought Student-t's to 0.4 but missed 4 of the 200 anomalies.
func TestAnomalies(t *testing.T) {
	for _, tc := range []struct {
		noise    noise
		band     float64
		maxFalse float64 // false alerts per 10,000 normal points
	}{
		{gaussian, 3, 1},
		{laplace, 3, 1},
		{studentT, 3, 1},
	} {
		t.Run(fmt.Sprintf("%s/band%v", tc.noise.name, tc.band), func(t *testing.T) {
			const seeds = 5
			var detected, anomalies, falseAlerts, normal int
			var mae, prev, ma float64
			for seed := uint64(1); seed <= seeds; seed++ {
				s := newScenario(seed, 4, tc.noise, false)
				o := run(s, hourly(tc.band))
				for k, d := range o.detected {
					anomalies++
					if d {
						detected++
						continue
					}
					a := s.anomalies[k]
					t.Errorf("seed %d: the anomaly at point %d (%d points, %+.1fσ) was not alerted on", seed, a.at, a.n, float64(a.sign)*a.size)
				}
				falseAlerts += o.falseAlerts
				normal += o.normalReady
				mae += o.mae / seeds
				prev += o.prevSeason / seeds
				ma += o.movingAvg / seeds
			}
			rate := float64(falseAlerts) / float64(normal) * 1e4
			t.Logf("%d/%d anomalies alerted on; %d false alerts in %d normal points (%.2f per 10,000)", detected, anomalies, falseAlerts, normal, rate)
			t.Logf("MAE on normal points (σ = 7, base 100): model %.2f, previous season %.2f, moving average of 30 %.2f", mae, prev, ma)
			if rate > tc.maxFalse {
				t.Errorf("%.2f false alerts per 10,000 normal points, want at most %v", rate, tc.maxFalse)
			}
			if mae >= prev || mae >= ma {
				t.Errorf("the model's MAE %.2f does not beat the previous season's %.2f and the moving average's %.2f", mae, prev, ma)
			}
		})
	}
}

// TestAnomaliesOtherSeeds runs the acceptance scenario with 40 seeds the model was not tuned
// on (1,600 anomalies a noise shape), so that the bounds above are not an accident of five
// seeds: false alerts under one per 10,000 normal points for every shape, and at most 0.5% of
// the anomalies missed — those there are are 5σ anomalies of a few points that the noise pulls
// back into the band (7, 5 and 2 of 1,600 when this was written).
func TestAnomaliesOtherSeeds(t *testing.T) {
	if testing.Short() {
		t.Skip("40 scenarios a noise shape")
	}
	for _, nz := range []noise{gaussian, laplace, studentT} {
		t.Run(nz.name, func(t *testing.T) {
			var missed, anomalies, falseAlerts, normal int
			for seed := uint64(100); seed < 140; seed++ {
				o := run(newScenario(seed, 4, nz, false), hourly(3))
				for _, d := range o.detected {
					anomalies++
					if !d {
						missed++
					}
				}
				falseAlerts += o.falseAlerts
				normal += o.normalReady
			}
			rate := float64(falseAlerts) / float64(normal) * 1e4
			t.Logf("%d/%d anomalies missed; %d false alerts in %d normal points (%.2f per 10,000)", missed, anomalies, falseAlerts, normal, rate)
			if rate > 1 {
				t.Errorf("%.2f false alerts per 10,000 normal points, want at most 1", rate)
			}
			if missed*200 > anomalies {
				t.Errorf("%d of %d anomalies missed, want at most 0.5%%", missed, anomalies)
			}
		})
	}
}

// TestAnomaliesEWMA runs the acceptance test's series without the season through method ewma,
// which forecasts with the level alone. Its forecast lags a little more behind the noise than
// Holt-Winters', so Laplace noise gives more false alerts (0.65 per 10,000 points; 1.2 before
// confirmExcess), still under the bound.
func TestAnomaliesEWMA(t *testing.T) {
	for _, tc := range []struct {
		noise    noise
		maxFalse float64 // false alerts per 10,000 normal points
	}{
		{gaussian, 1},
		{laplace, 1},
	} {
		t.Run(tc.noise.name, func(t *testing.T) {
			p := NewParams(settings(time.Hour, time.Hour, api.MethodEWMA), step, 0, 0.1)
			var falseAlerts, normal int
			for seed := uint64(1); seed <= 5; seed++ {
				s := newScenario(seed, 4, tc.noise, true)
				o := run(s, p)
				for k, d := range o.detected {
					if !d {
						a := s.anomalies[k]
						t.Errorf("seed %d: the anomaly at point %d (%d points, %+.1fσ) was not alerted on", seed, a.at, a.n, float64(a.sign)*a.size)
					}
				}
				falseAlerts += o.falseAlerts
				normal += o.normalReady
			}
			rate := float64(falseAlerts) / float64(normal) * 1e4
			t.Logf("%d false alerts in %d normal points (%.2f per 10,000)", falseAlerts, normal, rate)
			if rate > tc.maxFalse {
				t.Errorf("%.2f false alerts per 10,000 normal points, want at most %v", rate, tc.maxFalse)
			}
		})
	}
}

// feed observes values from t0, one a step, and returns the points.
func feed(m *Model, from int, values ...float64) []Point {
	pts := make([]Point, len(values))
	for i, v := range values {
		pts[i] = m.Observe(at(from+i), v)
	}
	return pts
}

// at is the time of point i.
func at(i int) time.Time { return t0.Add(time.Duration(i) * step) }

// settings are the defaults with another season and MinHistory.
func settings(season, minHistory time.Duration, method api.PredictionMethod) api.PredictionSettings {
	s := api.DefaultPredictionSettings()
	s.Season, s.MinHistory, s.Method = season, minHistory, method
	return s
}

// sine is 100 + amp·sin over a period of n points, plus noise of σ if r is not nil.
func sine(n, period int, amp, sigma float64, r *rand.Rand) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = 100 + amp*math.Sin(2*math.Pi*float64(i)/float64(period))
		if r != nil {
			v[i] += sigma * r.NormFloat64()
		}
	}
	return v
}

func TestEWMAUntilASeason(t *testing.T) {
	// A season of 48 minutes is 288 steps, one a slot; a clean sine leaves the EWMA's residuals
	// well inside the band (the 2% floor), so every value is learned as it is.
	const period = 288
	values := sine(3*period, period, 10, 0, nil)
	for _, tc := range []struct {
		method api.PredictionMethod
		// maxErr and minErr bound the mean absolute error over the second half of the second
		// season: Holt-Winters has learned the season, EWMA still lags the sine by ~0.5.
		minErr, maxErr float64
	}{
		{api.MethodHoltWinters, 0, 0.05},
		{api.MethodEWMA, 0.3, math.Inf(1)},
	} {
		t.Run(string(tc.method), func(t *testing.T) {
			p := NewParams(settings(48*time.Minute, 0, tc.method), step, 0, 0.01)
			m := NewModel(p, t0)
			pts := feed(m, 0, values...)
			// GIVEN fewer than a season of values, THEN the forecast is the EWMA of the values.
			ewma := values[0]
			last := period
			if tc.method == api.MethodEWMA {
				last = len(values)
			}
			for i := 1; i < last; i++ {
				if math.Abs(pts[i].Forecast-ewma) > 1e-9 {
					t.Fatalf("point %d: forecast %v, want the EWMA %v", i, pts[i].Forecast, ewma)
				}
				ewma += p.Alpha * (values[i] - ewma)
			}
			if got := m.phase == phaseHW; got != (tc.method == api.MethodHoltWinters) {
				t.Errorf("after three seasons, Holt-Winters phase = %v", got)
			}
			var mae float64
			for i := period + period/2; i < 2*period; i++ {
				mae += math.Abs(pts[i].Forecast-values[i]) / (period / 2)
			}
			t.Logf("mean absolute error in the second half of the second season: %.4f", mae)
			if mae < tc.minErr || mae > tc.maxErr {
				t.Errorf("mean absolute error %.4f, want in [%v, %v]", mae, tc.minErr, tc.maxErr)
			}
		})
	}
}

func TestReady(t *testing.T) {
	for _, tc := range []struct {
		name       string
		minHistory time.Duration
		skipFirst  int // points skipped before the first value
		gap        int // points skipped just after the first value
		wantFirst  int // first point that is Ready
	}{
		// The band needs minResiduals residuals: the first value leaves none, each later one one.
		{"no history needed", 0, 0, 0, minResiduals + 1},
		{"five minutes", 5 * time.Minute, 0, 0, 30},
		// History is time since the first value, not a count of values, and a Skip before the
		// first value does not count.
		{"five minutes with a gap", 5 * time.Minute, 0, 20, 30},
		{"five minutes, late start", 5 * time.Minute, 20, 0, 50},
		{"a long gap leaves too few residuals", 5 * time.Minute, 0, 25, 25 + minResiduals + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := NewModel(NewParams(settings(time.Hour, tc.minHistory, ""), step, 0, 0.1), t0)
			r := rand.New(rand.NewPCG(1, 2))
			first := -1
			for i := range 200 {
				if i < tc.skipFirst || (i > tc.skipFirst && i <= tc.skipFirst+tc.gap) {
					m.Skip(at(i))
					continue
				}
				predicted := m.Predict(at(i)).Ready
				pt := m.Observe(at(i), 100+r.NormFloat64())
				if pt.Ready != predicted {
					t.Fatalf("point %d: Observe says Ready %v, Predict %v", i, pt.Ready, predicted)
				}
				if pt.Ready && first < 0 {
					first = i
				}
				if !pt.Ready && first >= 0 {
					t.Fatalf("point %d is not Ready after point %d was", i, first)
				}
			}
			if first != tc.wantFirst {
				t.Errorf("first Ready point %d, want %d", first, tc.wantFirst)
			}
		})
	}
}

// warm returns a Holt-Winters model with a season of an hour that has seen three hours of a noisy
// sine (σ 1, amplitude 10), and the index of the next point.
func warm(t testing.TB, seed uint64) (*Model, int) {
	t.Helper()
	m := NewModel(hourly(0), t0)
	n := 3 * 360
	feed(m, 0, sine(n, 360, 10, 1, rand.New(rand.NewPCG(seed, 3)))...)
	if m.phase != phaseHW {
		t.Fatal("no Holt-Winters after three seasons")
	}
	return m, n
}

// clone copies a model with its own slots.
func clone(m *Model) *Model {
	c := *m
	c.slots = append([]float32(nil), m.slots...)
	return &c
}

func TestSkipAndGaps(t *testing.T) {
	m, n := warm(t, 1)
	v := 100 + 10*math.Sin(2*math.Pi*float64(n+5)/360)

	t.Run("a run of Skips is one gap", func(t *testing.T) {
		a, b := clone(m), clone(m)
		predicted := a.Predict(at(n + 5))
		for i := range 5 {
			a.Skip(at(n + i))
		}
		pa, pb := a.Observe(at(n+5), v), b.Observe(at(n+5), v)
		if math.Abs(pa.Forecast-pb.Forecast) > 1e-9 || math.Abs(pa.Upper-pb.Upper) > 1e-9 {
			t.Errorf("after five Skips %+v, after a gap %+v", pa, pb)
		}
		if math.Abs(pa.Forecast-predicted.Forecast) > 1e-9 {
			t.Errorf("Observe's forecast %v after the gap, Predict's before it %v", pa.Forecast, predicted.Forecast)
		}
	})

	t.Run("the trend is projected over a gap", func(t *testing.T) {
		// GIVEN a series that climbs by 0.5 a step, WHEN 10 steps are missing, THEN the forecast
		// after them has climbed with the series.
		p := NewParams(settings(time.Minute, 0, ""), step, 0, 0.1)
		m := NewModel(p, t0)
		const slope = 0.5
		for i := range 300 {
			m.Observe(at(i), 100+slope*float64(i))
		}
		before := m.Predict(at(300)).Forecast
		pt := m.Observe(at(310), 100+slope*310)
		t.Logf("trend %.3f a step; forecast %.2f before the gap, %.2f after it for %.2f", m.trend, before, pt.Forecast, 100+slope*310)
		if climbed := pt.Forecast - before; climbed < 0.5*slope*10 {
			t.Errorf("the forecast climbed by %.2f over 10 steps, want at least half the series' %.1f", climbed, slope*10)
		}
		if pt.Out != 0 {
			t.Errorf("the value after the gap is out of the band: %+v", pt)
		}
	})

	t.Run("a time going backwards is ignored", func(t *testing.T) {
		a, b := clone(m), clone(m)
		a.Observe(at(n), v)
		b.Observe(at(n), v)
		pt := a.Observe(at(n-3), 1e6)
		if !math.IsNaN(pt.Forecast) || pt.Out != 0 {
			t.Errorf("a point in the past: %+v, want no forecast", pt)
		}
		a.Observe(at(n), 1e6) // the same time again
		a.Skip(at(n - 1))
		for i := n + 1; i < n+50; i++ {
			if pa, pb := a.Observe(at(i), v), b.Observe(at(i), v); pa != pb {
				t.Fatalf("point %d: %+v after times in the past, %+v without", i, pa, pb)
			}
		}
	})
}

func TestNotANumber(t *testing.T) {
	m, n := warm(t, 2)
	for _, bad := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		t.Run(fmt.Sprint(bad), func(t *testing.T) {
			a, b := clone(m), clone(m)
			want := a.Predict(at(n))
			pt := a.Observe(at(n), bad)
			b.Skip(at(n))
			if pt.Forecast != want.Forecast || pt.Out != 0 || pt.Ready != want.Ready {
				t.Errorf("Observe(%v) = %+v, want the prediction %+v and Out 0", bad, pt, want)
			}
			for i := n + 1; i < n+50; i++ {
				v := 100 + 10*math.Sin(2*math.Pi*float64(i)/360)
				if pa, pb := a.Observe(at(i), v), b.Observe(at(i), v); pa != pb {
					t.Fatalf("point %d: %+v after %v, %+v after a Skip", i, pa, bad, pb)
				}
			}
		})
	}
}

func TestLevelShiftAndSpike(t *testing.T) {
	for _, tc := range []struct {
		name   string
		length int // points of the change
		// learned: the change is learned (and the alert ends) within adoptAfter+10 points;
		// otherwise the forecast stays on the old level through it.
		learned bool
	}{
		{"a spike shorter than adoptAfter is not learned", adoptAfter - 5, false},
		{"a lasting shift is learned after adoptAfter points", 400, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, n := warm(t, 3)
			r := rand.New(rand.NewPCG(4, 5))
			const shift = 20 // 20σ
			clean := func(i int) float64 { return 100 + 10*math.Sin(2*math.Pi*float64(i)/360) }
			for k := range tc.length + 300 {
				i := n + k
				v := clean(i) + r.NormFloat64()
				if k < tc.length {
					v += shift
				}
				pt := m.Observe(at(i), v)
				switch {
				case k < adoptAfter && k < tc.length:
					// Alerting, holding: OutRun counts the points, the forecast stays put.
					if pt.Out != 1 || m.OutRun() != k+1 {
						t.Fatalf("point %d of the change: Out %d, OutRun %d; want +1, %d", k, pt.Out, m.OutRun(), k+1)
					}
					if math.Abs(pt.Forecast-clean(i)) > 3 {
						t.Fatalf("point %d of the change: forecast %.2f, want the old level %.2f", k, pt.Forecast, clean(i))
					}
				case tc.learned && k >= adoptAfter+10 && k < tc.length:
					if m.Confirmed() {
						t.Fatalf("point %d of the shift: still alerting (OutRun %d, forecast %.2f for %.2f)", k, m.OutRun(), pt.Forecast, v)
					}
				case !tc.learned && k >= tc.length:
					// After the spike: back on the old level, no alert.
					if m.Confirmed() {
						t.Fatalf("point %d after the spike: alerting (forecast %.2f for %.2f)", k-tc.length, pt.Forecast, v)
					}
				}
			}
		})
	}
}

func TestDeviationFloors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		method api.PredictionMethod
		value  float64
		minDev float64
		want   float64 // half-width of the band: Band × the larger floor
	}{
		{"absolute floor, ewma", api.MethodEWMA, 0, 0.1, 3 * 0.1},
		{"absolute floor, holt-winters", api.MethodHoltWinters, 0, 0.1, 3 * 0.1},
		{"relative floor, ewma", api.MethodEWMA, 1000, 0.1, 3 * 20},
		{"relative floor, holt-winters", api.MethodHoltWinters, 1000, 0.1, 3 * 20},
		{"relative floor of a negative value", api.MethodEWMA, -50, 0.1, 3 * 1},
		{"absolute floor above the relative one", api.MethodEWMA, 1000, 30, 3 * 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A constant series has no deviation of its own: the band is the floor's.
			m := NewModel(NewParams(settings(time.Minute, 0, tc.method), step, 0, tc.minDev), t0)
			for i := range 20 {
				m.Observe(at(i), tc.value)
			}
			if (m.phase == phaseHW) != (tc.method == api.MethodHoltWinters) {
				t.Fatalf("phase %d", m.phase)
			}
			pt := m.Predict(at(20))
			if got := pt.Upper - pt.Forecast; math.Abs(got-tc.want) > 1e-9 || math.Abs(pt.Forecast-pt.Lower-tc.want) > 1e-9 {
				t.Fatalf("band %v..%v around %v, want ±%v", pt.Lower, pt.Upper, pt.Forecast, tc.want)
			}
			if pt := clone(m).Observe(at(20), tc.value+0.9*tc.want); pt.Out != 0 {
				t.Errorf("a value 0.9 band above the constant is out")
			}
			if pt := clone(m).Observe(at(20), tc.value+1.1*tc.want); pt.Out != 1 {
				t.Errorf("a value 1.1 band above the constant is not out")
			}
		})
	}
}

// lab is the settings of a live test that the start-up tests reproduce: a season of a minute
// (6 slots of 10 s), MinHistory a minute, a band of 3, the rest by default, for a rate (MinDev
// 0.1).
func lab() *Params {
	return NewParams(api.PredictionSettings{Season: time.Minute, MinHistory: time.Minute, Band: 3}, step, 0, 0.1)
}

// rate draws a request rate of about perSecond from a 10 s bucket: a Poisson count, by its
// normal approximation (a count of 200 varies by 14), rounded.
func rate(r *rand.Rand, perSecond float64) float64 {
	n := perSecond * 10
	return max(0, math.Round(n+math.Sqrt(n)*r.NormFloat64())) / 10
}

// TestStartThenDrop reproduces a live test in which a drop was missed: a client starts (its first
// bucket is partial, 7.5 of a steady 20 requests a second), sends for about two minutes and
// stops. The ramp used to be taken for noise and for a seasonal pattern, and the band was ±23
// around 20 when the client stopped: 0 was inside it.
func TestStartThenDrop(t *testing.T) {
	t.Run("the live points", func(t *testing.T) {
		// GIVEN the points of the live test: the ramp, 20 flat, a partial last bucket, then 0s
		m := NewModel(lab(), t0)
		values := []float64{7.5, 20, 20, 20, 20, 20, 20, 20, 20, 6.4, 0, 0, 0}
		const stop = 9
		for i, v := range values {
			pt := m.Observe(at(i), v)
			t.Logf("%4.1f: forecast %5.2f, band %6.2f to %5.2f, ready %v, out run %d", v, pt.Forecast, pt.Lower, pt.Upper, pt.Ready, m.OutRun())
			switch {
			// THEN the model is Ready at the partial bucket with a band above it, the first 0
			// confirms the drop, and the 0s are not learned
			case i == stop && (!pt.Ready || pt.Out != -1 || pt.Lower <= 6.4):
				t.Errorf("the partial last bucket: %+v, want Ready and below the band", pt)
			case i > stop && (m.OutRun() != i-stop+1 || pt.Forecast < 19):
				t.Errorf("the 0 at point %d: forecast %.2f, out run %d, want the forecast near 20 and a run of %d", i, pt.Forecast, m.OutRun(), i-stop+1)
			}
		}
	})

	// GIVEN the ramp bucket, 12 to 15 buckets of about 20/s and 0s, with or without a partial
	// last bucket (10% to 90% of a bucket), 1,000 times each
	for _, partial := range []bool{false, true} {
		t.Run(fmt.Sprintf("noisy, partial last bucket %v", partial), func(t *testing.T) {
			var starts, missed, early int
			for seed := uint64(1); seed <= 250; seed++ {
				for steady := 12; steady <= 15; steady++ {
					r := rand.New(rand.NewPCG(seed, uint64(steady)))
					values := []float64{7.5}
					for range steady {
						values = append(values, rate(r, 20))
					}
					stop := len(values)
					if partial {
						values = append(values, 20*(0.1+0.8*r.Float64()))
					}
					values = append(values, 0, 0, 0, 0, 0)
					m := NewModel(lab(), t0)
					confirmed := -1
					for i, v := range values {
						pt := m.Observe(at(i), v)
						if i == stop && (!pt.Ready || pt.Lower <= 0) {
							t.Fatalf("seed %d, %d steady buckets: at the stop %+v, want Ready with a band above 0", seed, steady, pt)
						}
						if !partial && i >= stop && pt.Forecast < 15 {
							t.Errorf("seed %d, %d steady buckets: the forecast followed the drop to %.2f at point %d", seed, steady, pt.Forecast, i)
						}
						if m.Confirmed() && confirmed < 0 {
							confirmed = i
						}
					}
					starts++
					switch {
					case confirmed >= 0 && confirmed < stop:
						early++ // a false alert before the stop; TestSteadyStarts counts those
					case confirmed < 0 || confirmed > stop+2:
						missed++
						t.Logf("seed %d, %d steady buckets: the stop was not confirmed by its third point", seed, steady)
					}
				}
			}
			// THEN every stop is confirmed by its third point, and the forecast stays near 20
			// through it; with a partial last bucket, a start noisy enough to make the band wide
			// (seed 40 has three values beyond 2.5σ in its first 13, one of 3.9σ) can take the
			// partial bucket in and follow the drop down, which 2 starts of these 1,000 do
			t.Logf("%d starts: %d stops not confirmed by their third point, %d false alerts before the stop", starts, missed, early)
			if limit := map[bool]int{false: 0, true: starts / 100}[partial]; missed > limit {
				t.Errorf("%d stops of %d not confirmed by their third point, want at most %d", missed, starts, limit)
			}
		})
	}
}

// TestSteadyStarts counts the false alerts of a steady 20 requests a second under the settings of
// the live test, each series starting with a partial bucket.
func TestSteadyStarts(t *testing.T) {
	for _, tc := range []struct {
		name           string
		series, points int
		// maxFalse is per 10,000 Ready points. Over 10,000 points it is the acceptance test's
		// bound; not none, because under noise close to Gaussian a settled model raises about
		// 0.2 false alerts per 10,000 points: of 100 such series, 17 had one or two. The first
		// 200 points are allowed twice that: the deviation rests on a few values and the
		// seasonal indices on one season, and about one start in a hundred alerts in its first
		// five minutes (0.8 per 10,000 points here, 1.2 before confirmExcess; 0.6 to 1.3 with other
		// seeds before it; a band from the median absolute deviation of the first residuals raised
		// 2.7 without the ramp).
		maxFalse float64
	}{
		{"1,000 starts of 200 points", 1000, 200, 2},
		{"5 series of 10,000 points", 5, 10000, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var falseAlerts, ready int
			for seed := uint64(1); seed <= uint64(tc.series); seed++ {
				r := rand.New(rand.NewPCG(seed, 20))
				m := NewModel(lab(), t0)
				was := false
				for i := range tc.points {
					v := rate(r, 20)
					if i == 0 {
						v = 7.5
					}
					if m.Observe(at(i), v).Ready {
						ready++
					}
					if now := m.Confirmed(); now && !was {
						falseAlerts++
					}
					was = m.Confirmed()
				}
			}
			perTenThousand := float64(falseAlerts) / float64(ready) * 1e4
			t.Logf("%d false alerts in %d Ready points (%.2f per 10,000)", falseAlerts, ready, perTenThousand)
			if perTenThousand > tc.maxFalse {
				t.Errorf("%.2f false alerts per 10,000 points, want at most %v", perTenThousand, tc.maxFalse)
			}
		})
	}
}

// TestFirstSeason checks that a change of level in the first season does not become a seasonal
// pattern.
func TestFirstSeason(t *testing.T) {
	t.Run("a ramp at the start", func(t *testing.T) {
		// GIVEN 200 starts of a steady 20/s (σ 1.4) behind a partial first bucket of 7.5, with a
		// season of a minute, WHEN the model has switched to Holt-Winters, THEN the slot of the
		// partial bucket has an index near 0 on average (the ramp once made it -8.4), and no
		// index is beyond 3σ
		const starts = 200
		var worst, rampSlot float64
		for seed := uint64(1); seed <= starts; seed++ {
			r := rand.New(rand.NewPCG(seed, 21))
			m := NewModel(lab(), t0)
			m.Observe(at(0), 7.5)
			for i := 1; m.phase != phaseHW; i++ {
				m.Observe(at(i), rate(r, 20))
			}
			for _, s := range m.slots {
				worst = max(worst, math.Abs(float64(s)))
			}
			rampSlot += float64(m.slots[m.p.slot(at(0).UnixNano())]) / starts
		}
		t.Logf("mean index of the partial bucket's slot %.2f; largest index %.2f", rampSlot, worst)
		if math.Abs(rampSlot) > 0.5 || worst > 3*1.4 {
			t.Errorf("mean index of the partial bucket's slot %.2f, largest index %.2f, want within 0.5 and 4.2 of 0", rampSlot, worst)
		}
	})

	t.Run("a lasting change of level", func(t *testing.T) {
		// GIVEN a season of an hour and a series at 100 (σ 1) that moves to 150 at point 100 of
		// its first season and stays there
		m := NewModel(hourly(0), t0)
		r := rand.New(rand.NewPCG(22, 23))
		const change = 100
		adopted := change + adoptAfter - 1
		for i := range 4 * 360 {
			v := 100 + r.NormFloat64()
			if i >= change {
				v += 50
			}
			m.Observe(at(i), v)
			// THEN the first season starts again where the change is adopted, the model switches
			// to Holt-Winters a season later with no seasonal index of the change, and alerts
			// on nothing after the change is adopted
			if i == adopted && m.season != at(adopted).UnixNano() {
				t.Fatalf("the first season began at %v, want it started again at point %d", time.Unix(0, m.season).UTC(), adopted)
			}
			if (m.phase == phaseHW) != (i >= adopted+360) {
				t.Fatalf("point %d: Holt-Winters phase %v", i, m.phase == phaseHW)
			}
			if i > adopted+10 && m.Confirmed() {
				t.Fatalf("point %d: alerting on the new level", i)
			}
		}
		for j, s := range m.slots {
			if math.Abs(float64(s)) > 3 {
				t.Fatalf("slot %d has a seasonal index of %.2f", j, s)
			}
		}
	})
}

// TestSlots checks that the slot of a time is its phase since the Unix epoch, the same for every
// model, and that a daily season has 288 slots of 5 minutes.
func TestSlots(t *testing.T) {
	p := NewParams(api.DefaultPredictionSettings(), step, 0, 0.1)
	if p.Slots != MaxSlots {
		t.Fatalf("a daily season has %d slots, want %d", p.Slots, MaxSlots)
	}
	midnight := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		t    time.Time
		want int
	}{
		{midnight, 0},
		{midnight.Add(5*time.Minute - 1), 0},
		{midnight.Add(5 * time.Minute), 1},
		{midnight.Add(24*time.Hour - 1), 287},
		{midnight.Add(-24*time.Hour + 12*time.Hour), 144},
		{time.Date(1969, 12, 31, 23, 55, 0, 0, time.UTC), 287},
	} {
		if got := p.slot(tc.t.UnixNano()); got != tc.want {
			t.Errorf("slot of %v = %d, want %d", tc.t, got, tc.want)
		}
	}
	if p := NewParams(settings(time.Minute, 0, ""), step, 0, 0); p.Slots != 6 {
		t.Errorf("a season of a minute at 10 s has %d slots, want 6", p.Slots)
	}
}

// TestAbsDev compares sortFloats with slices.Sort, and the merge in absDev with sorting the
// deviations.
func TestAbsDev(t *testing.T) {
	r := rand.New(rand.NewPCG(6, 7))
	for n := 1; n <= ringSize; n++ {
		for range 50 {
			a := make([]float32, n)
			for i := range a {
				a[i] = float32(math.Round(r.NormFloat64() * 4)) // ties too
			}
			vals := slices.Clone(a)
			slices.Sort(vals)
			if sortFloats(a); !slices.Equal(a, vals) {
				t.Fatalf("sortFloats gave %v, want %v", a, vals)
			}
			med := median(vals)
			dev := make([]float64, n)
			for i, v := range vals {
				dev[i] = math.Abs(float64(v) - med)
			}
			slices.Sort(dev)
			for rank, want := range dev {
				if got := absDev(vals, med, rank); math.Abs(got-want) > 1e-6 {
					t.Fatalf("deviation of rank %d of %v = %v, want %v", rank, vals, got, want)
				}
			}
		}
	}
}

func TestObserveAllocatesNothing(t *testing.T) {
	hw, n := warm(t, 8)
	ewma := NewModel(NewParams(settings(time.Hour, 0, api.MethodEWMA), step, 0, 0.1), t0)
	feed(ewma, 0, sine(100, 360, 10, 1, rand.New(rand.NewPCG(8, 9)))...)
	for name, m := range map[string]*Model{"holt-winters": hw, "ewma": ewma} {
		i := n
		if got := testing.AllocsPerRun(1000, func() {
			m.Observe(at(i), 100)
			i++
		}); got != 0 {
			t.Errorf("%s: %v allocations an Observe", name, got)
		}
	}
}

func TestSize(t *testing.T) {
	m := NewModel(NewParams(api.DefaultPredictionSettings(), step, 0, 0.1), t0)
	size := int(unsafe.Sizeof(*m)) + 4*cap(m.slots)
	t.Logf("a model with a daily season: %d bytes (%d of struct, %d slots of 4 bytes)", size, unsafe.Sizeof(*m), len(m.slots))
	if size > 1400 {
		t.Errorf("a model takes %d bytes, want at most 1400", size)
	}
}
