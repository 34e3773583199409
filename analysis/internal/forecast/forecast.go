// Package forecast predicts, online, each value of a series of evenly spaced figures (the 10 s
// buckets of analysis) with a band around it, and says when an observation leaves the band.
//
// A model is additive Holt-Winters with a damped trend:
//
//	forecast(t) = level + trend projected over the steps since the last value + season[slot(t)]
//
// where slot(t) is the position of t in the season counted from the Unix epoch, so that every
// model, and the same model after a restart, files a time under the same slot. Until it has seen
// a full season a model is an EWMA (the level alone) and meanwhile records the mean of each slot
// of the values it learns once it has a band; when the season is complete those means, less
// their overall mean and shrunk by how little they stand out from the noise, become the
// seasonal indices (see Model.startSeason). Method "ewma" stays an EWMA for good.
//
// The band is the forecast ± Band deviations, the deviation being the root mean square of the
// model's own forecast errors, floored; over a model's first values it is a robust deviation of
// the differences between successive values instead, and the band is widened while the
// deviation rests on few values (see Model.dev and Model.bandDev). An observation out of the
// band starts a suspect run that the model does not learn from, so that an anomaly neither drags
// the forecast along nor widens the band; a suspect run of adoptAfter observations is taken as a
// lasting change and learned as it is (see Model.Observe). A forecast condition holds while
// a suspect run has Confirm observations out of the band, far enough beyond it, or more (see
// Model.Confirmed).
//
// A Model is not safe for concurrent use; the Params it points to are read-only and shared.
package forecast

import (
	"math"
	"time"

	"github.com/quanyu/quanyu/mix/api"
)

const (
	// MaxSlots caps the seasonal slots of a model, so that a daily season has 5-minute slots and
	// a model stays near 1.3 KB whatever the season.
	MaxSlots = 288

	// Confirm is the number of observations out of the band, on the same side and in one suspect
	// run, before a forecast condition can hold. One observation out of a 3-deviation band is the
	// noise's tail about once in 400 points; two close together are rare enough to page on —
	// for Gaussian noise (see confirmExcess for heavier tails).
	Confirm = 2
)

// confirmExcess is how far beyond the band, in deviations, the Confirm observations that
// confirm a suspect run must lie on average (more than Confirm out of the band confirm it
// whatever their size). Noise with a heavier tail than Gaussian's leaves the band more often
// — Laplace noise 5 times as often at 3 deviations — and nearly every false alert is two
// neighbours just over the edge; an anomaly is rarely that shy. Over the 40 seeds of
// TestAnomaliesOtherSeeds (1,600 anomalies of 5–10σ a noise shape) 0.5 cut the false alerts per
// 10,000 normal points from 0.27 to 0.07 (Gaussian), 1.42 to 0.87 (Laplace) and 0.92 to 0.47
// (Student-t, 5 d.f.), missing 0, 1 and 1 more anomalies; 0.7 cut them further (0.04, 0.57,
// 0.33) but missed a 7-point anomaly of the acceptance test, and a band widened to 3.2 instead
// cut Laplace's only to 0.82 and missed 5 more.
const confirmExcess = 0.5

const (
	// adoptAfter is the length of a suspect run (see Model.Observe) after which the model learns
	// the raw values: 30 steps is 5 minutes at 10 s, long enough that a spike or a drop of a few
	// minutes is alerted on and not learned, short enough that a lasting change of level (a new
	// client, a failover) stops alerting after about five minutes. A change that lasts a little
	// longer than that is learned, and its end alerts for up to five minutes in turn.
	adoptAfter = 30

	// ringSize is how many first differences between successive values are kept to start the
	// deviation with (see Model.dev).
	ringSize = 32

	// minResiduals is how many residuals (and differences) a model needs before it draws a band
	// at all, and so before it records values for its first season; a deviation from fewer says
	// little.
	minResiduals = 8

	// relFloor is the smallest deviation, as a share of the forecast. A series that barely moves
	// (a health check's steady rate, a counter that is constant for hours) would otherwise get a
	// band a hair wide and alert on any change at all. 2% is below the counting noise of any
	// real traffic figure (a Poisson count of N in a bucket varies by 1/√N, 2% for 2,500), so the
	// floor only widens bands that are unnaturally narrow.
	relFloor = 0.02

	// devWeight is the weight of a new squared residual in the deviation once 100 have been
	// learned (about the last 100 observations, 17 minutes at 10 s): wide enough that the band
	// varies by about 5% from noise alone, narrow enough to follow traffic whose noise grows and
	// shrinks over the day.
	devWeight = 0.01

	// fullDev is how many residuals the deviation rests on when the band stops being widened
	// for its uncertainty (see Model.bandDev): the 100 of the plain mean, after which the EWMA is
	// about as steady.
	fullDev = 1 / devWeight

	// damping is the trend's damping per step (Gardner and McKenzie's φ). A trend fitted on
	// 10-second steps is noisy; undamped, a gap of an hour would project it 360 times. With 0.98,
	// a gap of 5 steps still projects 4.7 steps of trend, while no gap projects more than 49.
	damping = 0.98

	// huber is where the residual the level, trend and season learn from is clipped, in
	// deviations (Huber's ψ, at the 2 of Gelper, Fried and Croux's robust Holt-Winters), and how
	// far from the forecast an observation inside the band must be to keep a suspect run going.
	// Under normal noise it clips one residual in 20 and costs almost nothing in accuracy.
	huber = 2.0

	// quartileScale turns the upper quartile of absolute deviations from the median into a
	// standard deviation for normal noise (1/1.1503).
	quartileScale = 0.8694

	// reject is how far from their median, in robust deviations, differences are left out of
	// the starting deviation (see Model.spread): a ramp's step, a spike's edges. In 2,000 starts
	// of a steady 20/s that stops after two minutes (a partial bucket, then 0), 3.5 and 4 kept
	// enough of a noisy start's large differences that the band took the partial bucket in and
	// followed the drop down without alerting 3 and 10 times, where 3 missed none; 2.5 raised
	// the false alerts of the first 200 points of a steady rate by a quarter (1.2 per 10,000
	// points against 0.94).
	reject = 3
)

// Params are shared by every model of one rule: models keep a pointer and copy nothing. Make them
// with NewParams and do not change them once a model uses them.
type Params struct {
	Step       time.Duration // spacing of the observations, 10 s in analysis
	Season     time.Duration // period of the seasonal pattern
	Slots      int           // seasonal slots per season: Season/Step, at most MaxSlots
	Alpha      float64       // smoothing of the level, per observation
	Beta       float64       // smoothing of the trend, per observation
	Gamma      float64       // smoothing of a seasonal slot, per season
	Band       float64       // half-width of the band, in deviations
	MinHistory time.Duration // history a model needs before it is Ready
	Method     api.PredictionMethod
	MinDev     float64 // absolute floor of the deviation, in the series' unit

	stepNS, seasonNS, minHistoryNS int64
	// gammaObs is Gamma per observation: a slot of a daily season holds 30 observations of
	// 10 s, and learning from each with the whole Gamma would make the slot forget everything
	// but the last few minutes of each day. 1-(1-Gamma)^(1/perSlot) weighs a season's worth of
	// observations of a slot as Gamma weighs one.
	gammaObs float64
	// startScale turns the deviation of the differences between successive values into that of
	// the forecast error (see Model.dev).
	startScale float64
	perSlot    float64 // observations of a slot in a season
	tFull      float64 // tQuantile(fullDev)
	ewma       bool
}

// NewParams makes the parameters of one rule from the prediction settings (as api validates
// them), the step of the series, the rule's band (0 takes s.Band) and the floor of the deviation
// for the rule's metric (e.g. 0.1 for a rate per second at 10 s steps, 0.01 for a ratio, 0.001 s
// for a latency). A zero field of s takes its default from api.DefaultPredictionSettings, except
// MinHistory, for which zero is a valid setting. It panics if step is not positive.
func NewParams(s api.PredictionSettings, step time.Duration, band float64, minDev float64) *Params {
	if step <= 0 {
		panic("forecast: the step must be positive")
	}
	def := api.DefaultPredictionSettings()
	if s.Season <= 0 {
		s.Season = def.Season
	}
	if s.Band <= 0 {
		s.Band = def.Band
	}
	if s.Alpha <= 0 {
		s.Alpha = def.Alpha
	}
	if s.Beta <= 0 {
		s.Beta = def.Beta
	}
	if s.Gamma <= 0 {
		s.Gamma = def.Gamma
	}
	if s.Method == "" {
		s.Method = def.Method
	}
	if band <= 0 {
		band = s.Band
	}
	season := max(s.Season, step)
	slots := min(int(season/step), MaxSlots)
	perSlot := float64(season) / float64(slots) / float64(step)
	p := &Params{
		Step: step, Season: season, Slots: slots,
		Alpha: s.Alpha, Beta: s.Beta, Gamma: s.Gamma,
		Band: band, MinHistory: max(s.MinHistory, 0), Method: s.Method, MinDev: max(minDev, 0),
		stepNS: int64(step), seasonNS: int64(season), minHistoryNS: int64(max(s.MinHistory, 0)),
		gammaObs:   1 - math.Pow(1-s.Gamma, 1/perSlot),
		startScale: 1 / math.Sqrt(2-s.Alpha),
		perSlot:    perSlot,
		ewma:       s.Method == api.MethodEWMA,
	}
	p.tFull = p.tQuantile(fullDev)
	return p
}

// slot is the seasonal slot of a time in Unix nanoseconds.
func (p *Params) slot(tn int64) int {
	r := tn % p.seasonNS
	if r < 0 {
		r += p.seasonNS
	}
	return int(r * int64(p.Slots) / p.seasonNS)
}

// steps is the number of steps from a to b, rounded, at least 1 (b is after a).
func (p *Params) steps(a, b int64) int64 {
	return max((b-a+p.stepNS/2)/p.stepNS, 1)
}

// tQuantile is the quantile of Student's t with nu degrees of freedom at the probability of the
// normal quantile Band: its expansion in 1/nu to the third order (Abramowitz and Stegun 26.7.5),
// within 1.5% of the exact quantile from 5 degrees of freedom on for a band of 3 (5.27 against
// 5.21 at 5.3, 3.41 against 3.41 at 20.7).
func (p *Params) tQuantile(nu float64) float64 {
	z := p.Band
	z2 := z * z
	g1 := (z2 + 1) * z / 4
	g2 := ((5*z2+16)*z2 + 3) * z / 96
	g3 := (((3*z2+19)*z2+17)*z2 - 15) * z / 384
	return z + (g1+(g2+g3/nu)/nu)/nu
}

// floor applies the absolute and the relative floors to a deviation.
func (p *Params) floor(dev, forecast float64) float64 {
	return max(dev, p.MinDev, relFloor*math.Abs(forecast))
}

// Point is what a model says of one time.
type Point struct {
	// Value is what was observed (NaN from Predict); Forecast, Lower and Upper are the forecast
	// and its band, made before Value was learned. Forecast is NaN before the model has a value
	// and for a time it ignored; Lower and Upper are NaN until it has a band as well.
	Value, Forecast, Lower, Upper float64

	Ready bool // the model has MinHistory of history and a band
	Out   int8 // -1 below the band, +1 above it, 0 inside; always 0 when not Ready
}

// Phases of a model.
const (
	phaseEmpty uint8 = iota // no value yet
	phaseEWMA               // the level alone; for Holt-Winters, until a season is complete
	phaseHW                 // Holt-Winters
)

// Model forecasts one series: 216 bytes, and 4 bytes a seasonal slot (1,368 bytes for 288).
type Model struct {
	p *Params
	// slots are the seasonal indices. During the first season of a Holt-Winters model they hold
	// the mean of the values learned in each slot so far (NaN: none); nil for method ewma.
	slots []float32
	level float64
	last  int64 // Unix ns of the last observation or skip; a time not after it is ignored
	first int64 // Unix ns of the first value
	trend float32
	msq   float32 // mean, then EWMA, of the squared residuals, clipped to the band
	prev  float32 // the last value learned, less its seasonal index
	n     uint16  // first season: values learned in the current slot
	sus   uint16  // observations in the suspect run (see Observe)
	run   uint16  // observations out of the band in the suspect run
	// runDev is the sum of the distances from the forecast of the observations out of the band
	// in the suspect run, in 1/64 deviations, saturating (2 bytes keep the model's size).
	runDev uint16
	side   int8 // side of the suspect run
	phase  uint8
	k      uint8 // residuals learned, at most 255
	ready  bool  // the last observation was Ready
	// The rest is read only in a model's first season and first values, and kept after what
	// every observation reads so that a settled model's fields lie in two cache lines, as
	// before they were added.
	season int64             // Unix ns at which the first season began (see Model.enter)
	ring   [ringSize]float32 // the first differences between successive values (see Model.dev)
}

// NewModel starts a model at start, the time of the first bucket it may be given; earlier times
// are ignored.
func NewModel(p *Params, start time.Time) *Model {
	if p.stepNS == 0 {
		panic("forecast: Params not made by NewParams")
	}
	m := &Model{p: p, last: start.UnixNano() - 1}
	if !p.ewma {
		m.slots = make([]float32, p.Slots)
		for i := range m.slots {
			m.slots[i] = float32(math.NaN())
		}
	}
	return m
}

// OutRun is the number of observations out of the band, on one side, in the current suspect run
// (see Observe): the observations out of the band in a row, except that one inside the band but
// still beyond huber deviations on the same side does not break the row. It is 0 when the last
// observation was not Ready or ended the run. A forecast condition holds (Confirmed) from the
// second observation out of the band, if the two lie far enough beyond it, or else the third,
// and clears when one comes back within huber deviations of the forecast.
//
// The row does not break inside the band because noise brings about one point in ten of a 5σ
// spike back inside a 3-deviation band: with a strict row, the acceptance test missed 2 of its
// 600 anomalies (three noise shapes), and a long anomaly would make the condition flap. Under
// normal noise an observation beyond 2 deviations right after one beyond 3 is rare (2%): the
// test saw at most one false alert more per shape in about 170,000 points.
// Confirmed reports whether a forecast condition holds after the last observation: it was
// Ready, and its suspect run has more than Confirm observations out of the band, or Confirm
// lying on average confirmExcess deviations or more beyond it.
func (m *Model) Confirmed() bool {
	if !m.ready || m.run < Confirm {
		return false
	}
	return m.run > Confirm || float64(m.runDev)/runDevUnit/float64(m.run) >= m.p.Band+confirmExcess
}

// runDevUnit is the scale of Model.runDev: 1/64 deviation.
const runDevUnit = 64

// addDev adds |e|/dev to a runDev, saturating.
func addDev(sum uint16, e, dev float64) uint16 {
	return uint16(min(float64(sum)+math.Abs(e)/dev*runDevUnit, math.MaxUint16))
}

func (m *Model) OutRun() int {
	if !m.ready {
		return 0
	}
	return int(m.run)
}

// Observe returns the forecast for t made before seeing v, and then learns v.
//
// An observation out of the band starts a suspect run, which goes on while observations stay on
// the same side and beyond huber deviations from the forecast, in the band or not. What is
// learned:
//   - outside a suspect run: v, its residual clipped to huber deviations;
//   - the first observation of a suspect run: only the deviation learns, from the residual
//     clipped to the band's edge (over the first differences, from the difference clipped to
//     huber deviations: among a dozen values, one at the band's edge widens the band by 30%,
//     enough for the rest of a drop to fall inside it), so that a band too narrow for the
//     noise widens;
//   - the rest of a suspect run: nothing, as if v were missing (Skip);
//   - from the adoptAfter-th observation of a suspect run on: v as it is, so that a lasting
//     change of level becomes the new normal after five minutes of alerting.
//
// Robust Holt-Winters usually learns an observation out of the band as the band's edge, but at
// the default Alpha and Band that still moves the level by about a deviation a point, and the
// trend with it: a spike of a few points is half learned by its end, and the return to normal
// is out of the band on the other side. In the acceptance test that rule (with a strict row of
// outs) missed 8 anomalies of 200 and raised 7.7 false alerts per 10,000 normal points, against
// none missed and 0.24 for holding the suspect run.
//
// A NaN or infinite v is a Skip (the Point carries the forecast and Out 0). A time not after the
// last one given to the model is ignored: nothing is learned and the Point has only the Value.
func (m *Model) Observe(t time.Time, v float64) Point {
	tn := t.UnixNano()
	if tn <= m.last {
		nan := math.NaN()
		return Point{Value: v, Forecast: nan, Lower: nan, Upper: nan}
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		pt := m.Predict(t)
		pt.Value = v
		m.Skip(t)
		return pt
	}
	p := m.p
	if m.phase == phaseEmpty {
		m.phase, m.level, m.first, m.season, m.last, m.prev = phaseEWMA, v, tn, tn, tn, float32(v)
		nan := math.NaN()
		return Point{Value: v, Forecast: nan, Lower: nan, Upper: nan}
	}
	h := p.steps(m.last, tn)
	m.enter(tn)
	m.last = tn

	// The forecast and its band.
	var f, dev, lp, bp, s float64
	band := m.k >= minResiduals
	i := 0
	if m.phase == phaseHW {
		lp, bp = m.project(h)
		i = p.slot(tn)
		s = float64(m.slots[i])
		f = lp + s
	} else {
		f = m.level
	}
	dev = p.floor(m.bandDev(), f)
	pt := Point{Value: v, Forecast: f, Lower: math.NaN(), Upper: math.NaN()}

	// Where v falls: out of the band, and whether it goes on a suspect run. le is the residual the
	// level, trend and season learn; ce, clipped to the band, is the one the deviation learns.
	e := v - f
	le, ce := e, e
	var out, side int8
	if band {
		pt.Lower, pt.Upper = f-p.Band*dev, f+p.Band*dev
		if v > pt.Upper {
			out = 1
		} else if v < pt.Lower {
			out = -1
		}
		if e > 0 {
			side = 1
		} else {
			side = -1
		}
		c := min(huber, p.Band) * dev
		le = max(min(e, c), -c)
		ce = max(min(e, p.Band*dev), -p.Band*dev)
	}
	switch {
	case out != 0 && out == m.side:
		m.sus = inc16(m.sus)
		m.run = inc16(m.run)
		m.runDev = addDev(m.runDev, e, dev)
	case out != 0:
		m.sus, m.run, m.side = 1, 1, out
		m.runDev = addDev(0, e, dev)
	case m.sus > 0 && side == m.side && math.Abs(e) > huber*dev:
		m.sus = inc16(m.sus)
	default:
		m.sus, m.run, m.side = 0, 0, 0
		m.runDev = 0
	}
	m.ready = band && tn-m.first >= p.minHistoryNS
	pt.Ready = m.ready
	if m.ready {
		pt.Out = out
	}

	// What is learned.
	learn := m.sus == 0 || m.sus >= adoptAfter
	if m.sus >= adoptAfter {
		le = e
	}
	if learn || m.sus == 1 {
		x := float32(v - s)
		if m.k < ringSize {
			d := x - m.prev
			if m.sus == 1 {
				c := float32(huber * p.floor(m.dev(), f) / p.startScale)
				d = max(min(d, c), -c)
			}
			m.ring[m.k] = d
		}
		if band {
			// A plain mean of the first 100 residuals learned with a band, then an EWMA.
			m.msq += float32(max(1/float64(m.k-minResiduals+1), devWeight) * (ce*ce - float64(m.msq)))
		}
		if m.k < math.MaxUint8 {
			m.k++
		}
		if learn {
			m.prev = x
		}
	}
	if m.phase == phaseEWMA {
		if !learn {
			return pt
		}
		m.level += p.Alpha * le
		if m.slots != nil && band {
			m.record(tn, f+le)
		}
		return pt
	}
	if !learn {
		m.level, m.trend = lp, float32(bp)
		return pt
	}
	m.level = lp + p.Alpha*le
	m.trend = float32(bp + p.Alpha*p.Beta*le/float64(h))
	m.slots[i] = float32(s + p.gammaObs*(1-p.Alpha)*le)
	return pt
}

// Skip moves the model to t without a value (a ratio with no requests, a lost bucket): the
// trend is projected over the gap and nothing is learned. A time not after the last one given to
// the model is ignored. A skip does not end a suspect run.
func (m *Model) Skip(t time.Time) {
	tn := t.UnixNano()
	if tn <= m.last {
		return
	}
	if m.phase == phaseEmpty {
		m.last = tn
		return
	}
	h := m.p.steps(m.last, tn)
	m.enter(tn)
	if m.phase == phaseHW {
		lp, bp := m.project(h)
		m.level, m.trend = lp, float32(bp)
	}
	m.last = tn
}

// Predict returns the forecast and band for t (Value NaN, Out 0) without learning anything, for
// charts; all NaN before the first value. A Holt-Winters model in its EWMA phase predicts with
// the EWMA even for a time after its first season: it switches when it is next given a time.
func (m *Model) Predict(t time.Time) Point {
	nan := math.NaN()
	pt := Point{Value: nan, Forecast: nan, Lower: nan, Upper: nan}
	if m.phase == phaseEmpty {
		return pt
	}
	p := m.p
	tn := t.UnixNano()
	if m.phase == phaseHW {
		var h int64
		if tn > m.last {
			h = p.steps(m.last, tn)
		}
		lp, _ := m.project(h)
		pt.Forecast = lp + float64(m.slots[p.slot(tn)])
	} else {
		pt.Forecast = m.level
	}
	band := m.k >= minResiduals
	dev := p.floor(m.bandDev(), pt.Forecast)
	if band {
		pt.Lower, pt.Upper = pt.Forecast-p.Band*dev, pt.Forecast+p.Band*dev
	}
	pt.Ready = band && tn-m.first >= p.minHistoryNS
	return pt
}

// project returns the level and the trend after h steps without a value.
func (m *Model) project(h int64) (level, trend float64) {
	b := float64(m.trend)
	switch h {
	case 0:
		return m.level, b
	case 1:
		return m.level + damping*b, damping * b
	}
	ph := math.Pow(damping, float64(h))
	return m.level + b*damping*(1-ph)/(1-damping), b * ph
}

// enter does what moving to tn requires before forecasting: in the EWMA phase of a Holt-Winters
// model, it starts the mean of a new slot, and once a season has passed since the first season
// began (at the first value), it switches to Holt-Winters if at least half of the slots have a
// value, and otherwise starts the first season again at tn.
//
// Values learned before the model has a band are not recorded (see Model.record), so a season
// shorter than minResiduals steps, such as a 1-minute season at 10 s, has no value at all when
// it first ends, and one a little longer only a few: its first season starts again, and is
// recorded from the band on.
func (m *Model) enter(tn int64) {
	if m.phase != phaseEWMA || m.slots == nil {
		return
	}
	if tn-m.season >= m.p.seasonNS {
		recorded := 0
		for _, v := range m.slots {
			if !math.IsNaN(float64(v)) {
				recorded++
			}
		}
		if 2*recorded >= len(m.slots) {
			m.startSeason()
		} else {
			m.restartSeason(tn)
		}
		return
	}
	if m.p.slot(tn) != m.p.slot(m.last) {
		m.n = 0
	}
}

// restartSeason forgets the slot means and starts the first season again at tn.
func (m *Model) restartSeason(tn int64) {
	for i := range m.slots {
		m.slots[i] = float32(math.NaN())
	}
	m.season, m.n = tn, 0
}

// record learns the value y at tn into the mean of its slot for the first season. Observe calls
// it only once the model has a band, so that suspect runs keep spikes and changes of level out
// of the slot means; a series' first values, before that, are the likeliest to be a ramp (a
// partial first bucket, a client starting up), and taking them in would make the change of
// level a seasonal index: with a 1-minute season, a first bucket of 7.5 before a steady 20 gave
// a slot an index of -10 and a first Holt-Winters forecast of 5.4. For the same reason the first
// value of a lasting change of level (the adoptAfter-th of a suspect run) starts the first
// season again.
func (m *Model) record(tn int64, y float64) {
	if m.sus == adoptAfter {
		m.restartSeason(tn)
	}
	j := m.p.slot(tn)
	if m.n == 0 {
		m.slots[j], m.n = float32(y), 1
	} else {
		m.n = inc16(m.n)
		m.slots[j] += (float32(y) - m.slots[j]) / float32(m.n)
	}
}

// startSeason turns the slot means of the first season into seasonal indices and switches to
// Holt-Winters. A slot that got no value (a gap, or the first values, learned before the band)
// takes the line between its known neighbours.
//
// The indices, the slot means less their mean, are then shrunk towards 0 by the positive-part
// James-Stein factor 1 - (slots-3)·τ²/Σ index², τ² being the variance of a slot mean from noise
// alone: what the first season cannot tell from noise starts near 0 and is learned over the
// following seasons, while a pattern well above the noise is kept nearly whole. With a
// 1-minute season each slot mean is a single value, and on a flat series the unshrunk indices
// were noise as large as the noise itself, added to every forecast until Gamma wore them down
// (the mean factor there is 0.13, and 0 in two starts of three); in the acceptance test, whose
// seasonal swing is several times the noise, it is 0.91 to 0.94, and the mean absolute error
// after two seasons is 0.01 lower than without it.
func (m *Model) startSeason() {
	s := m.slots
	k := len(s)
	nan := func(i int) bool { return math.IsNaN(float64(s[i])) }
	// At least half of the slots have a value (see enter), so both walks end; a slot filled here
	// is on the line between the known ones, so later walks may stop at it.
	for i := range s {
		if !nan(i) {
			continue
		}
		a, da := i, 0
		for nan(a) {
			a, da = (a-1+k)%k, da+1
		}
		b, db := i, 0
		for nan(b) {
			b, db = (b+1)%k, db+1
		}
		s[i] = s[a] + (s[b]-s[a])*float32(da)/float32(da+db)
	}
	var mean float64
	for _, v := range s {
		mean += float64(v)
	}
	mean /= float64(k)
	var sq float64
	for i := range s {
		s[i] -= float32(mean)
		sq += float64(s[i]) * float64(s[i])
	}
	// dev is the deviation of the EWMA's forecast error, whose variance is σ²·2/(2-α) for noise
	// of variance σ²; a slot mean is the mean of perSlot values.
	d := m.dev()
	tau2 := d * d * (2 - m.p.Alpha) / 2 / m.p.perSlot
	if k > 3 && sq > 0 {
		f := float32(max(0, 1-float64(k-3)*tau2/sq))
		for i := range s {
			s[i] *= f
		}
	}
	// The EWMA level is the recent value, season included; the Holt-Winters level is without it.
	m.level -= float64(s[m.p.slot(m.last)])
	m.prev -= s[m.p.slot(m.last)]
	m.trend = 0
	m.phase = phaseHW
}

// dev is the deviation before its floors and before bandDev widens it.
//
// Over the first ringSize values learned, it is spread, the standard deviation of the
// differences between successive values (less their seasonal indices) without the outlying
// ones, times startScale, 1/√(2-α): for white noise of deviation σ a difference has the
// variance 2σ² and the EWMA's forecast error σ²·2/(2-α). Then it is the root of the mean squared
// residual, clipped to the band, learned since the model has had a band (a plain mean of the
// first 100, then an EWMA of weight devWeight).
//
// It starts on differences because a series often starts with a ramp (a partial first bucket, a
// client starting up), and the level takes a dozen steps to catch up with it, leaving a dozen
// large residuals of one sign: the median absolute deviation of the first residuals, and the
// mean square that took in the residuals learned before the band, made a deviation of them. In
// a live test with a 1-minute season, a first bucket at 7.5 before a steady 20 gave a band of
// ±23 a minute and a half later, and the client stopping (0) was inside it. Among differences a
// ramp is a value or two, which spread leaves out, and the residuals learned before the band are
// not in the mean square.
//
// The root mean square takes over because a median of the last 32 residuals varies by ±20% from
// noise alone, and a band 20% too narrow alerts ten times as often: an EWMA on that ring alerted
// 4.2 times per 10,000 points of plain Gaussian noise and 17 times of Laplace noise, against
// 0.15 and 1.7 with the root mean square. The root mean square, over 100 residuals, varies by
// 5%. It is also the right width for heavy-tailed noise, where the mean or median absolute
// deviation understate the standard deviation (by 11% and 27% for Laplace noise) and let the
// tail out of the band more often: with the mean absolute residual the acceptance test saw 1.9
// false alerts per 10,000 points of Laplace noise, with the root mean square 0.65. The clipping
// to the band and the suspect runs, which teach it nothing, keep it robust to anomalies.
func (m *Model) dev() float64 {
	if m.k < ringSize {
		return m.p.startScale * m.spread()
	}
	return math.Sqrt(float64(m.msq))
}

// bandDev is the deviation the band is drawn with: dev, widened while it rests on few values.
//
// A deviation estimated from ν values is itself uncertain, so a band of Band such deviations
// holds the noise less often than Band true ones would: by Student's t, a band of 3 estimated
// deviations with 8 degrees of freedom holds it as a band of 4.3 true ones would. The band is
// widened by the ratio of the t quantile at ν to the one at fullDev, so that a model whose
// deviation rests on 100 residuals or more has a band of exactly Band deviations. k differences
// between successive values of white noise are worth 2k/3 independent values (neighbours are
// correlated by -1/2, their squares by 1/4). In 2,000 starts of 200 points of flat noise, with
// a season of an hour and MinHistory a minute, the widening cut the false alerts from 1.9 to 0.4
// per 10,000 points for Gaussian noise and from 4.5 to 2.5 for Laplace noise (a settled model,
// in the acceptance test: 0.24 and 0.71).
func (m *Model) bandDev() float64 {
	if m.k >= minResiduals-1+fullDev {
		return math.Sqrt(float64(m.msq)) // the usual case, apart so that bandDev inlines
	}
	return m.widened()
}

// widened is dev widened for how many independent residuals it is worth (see bandDev); dev as it
// is before the model has a band.
func (m *Model) widened() float64 {
	var nu float64
	switch {
	case m.k < minResiduals:
		return m.dev()
	case m.k < ringSize:
		nu = float64(m.k) * 2 / 3
	default:
		nu = float64(m.k) - minResiduals + 1
	}
	return m.dev() * m.p.tQuantile(nu) / m.p.tFull
}

// spread is the standard deviation of the differences in the ring about their median, leaving
// out those further than reject robust deviations from it, without allocating. The robust
// deviation is taken from the upper quartile of the absolute deviations, not their median,
// which is too unsteady over a few values: a start whose first differences were 13.5 (the
// ramp), -1.4, 0.9, 0.6, 0.7, -2.5, 0.6 and 0.3 had a median absolute deviation of 0.3, where
// the noise's differences have 1.35, and -1.4 and -2.5 were left out with the ramp. The upper
// quartile holds up to a quarter of outliers (two of eight: a ramp of two buckets), and it
// brought the false alerts of the first 200 points of a steady rate from 1.3 to 0.94 per 10,000.
func (m *Model) spread() float64 {
	n := int(min(m.k, ringSize))
	if n == 0 {
		return 0
	}
	var a [ringSize]float32
	copy(a[:], m.ring[:n])
	sortFloats(a[:n])
	med := median(a[:n])
	lim := reject * quartileScale * absDev(a[:n], med, 3*(n-1)/4)
	var sum float64
	kept := 0
	for _, d := range a[:n] {
		if e := float64(d) - med; math.Abs(e) <= lim {
			sum += e * e
			kept++
		}
	}
	return math.Sqrt(sum / float64(kept))
}

// sortFloats sorts a few values in place, without allocating.
func sortFloats(a []float32) {
	for i := 1; i < len(a); i++ {
		v := a[i]
		j := i
		for ; j > 0 && a[j-1] > v; j-- {
			a[j] = a[j-1]
		}
		a[j] = v
	}
}

// absDev is the deviation of rank r (counting from 0) of sorted values from their median med,
// without allocating: the deviations of the values below the middle, going down, and of those
// above it, going up, are each in increasing order, and merging them gives the deviations by
// rank.
func absDev(a []float32, med float64, r int) float64 {
	n := len(a)
	lo, hi := n/2-1, n/2
	if n%2 == 1 {
		if r == 0 {
			return 0 // the median itself
		}
		hi, r = n/2+1, r-1
	}
	var cur float64
	for range r + 1 {
		dl, dh := math.Inf(1), math.Inf(1)
		if lo >= 0 {
			dl = med - float64(a[lo])
		}
		if hi < n {
			dh = float64(a[hi]) - med
		}
		if dl <= dh {
			cur, lo = dl, lo-1
		} else {
			cur, hi = dh, hi+1
		}
	}
	return cur
}

// inc16 adds one to a count, stopping at its largest value.
func inc16(x uint16) uint16 {
	if x == math.MaxUint16 {
		return x
	}
	return x + 1
}

// median of sorted values.
func median(a []float32) float64 {
	n := len(a)
	if n%2 == 1 {
		return float64(a[n/2])
	}
	return (float64(a[n/2-1]) + float64(a[n/2])) / 2
}
