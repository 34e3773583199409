// Package forecast predicts, online, each value of a series of evenly spaced figures (the 10 s
// buckets of analysis) with a band around it, and says when an observation leaves the band.
//
// A model is additive Holt-Winters with a damped trend:
//
//	forecast(t) = level + trend projected over the steps since the last value + season[slot(t)]
//
// where slot(t) is the position of t in the season counted from the Unix epoch, so that every
// model, and the same model after a restart, files a time under the same slot. Until it has seen
// a full season a model is an EWMA (the level alone) and meanwhile records the mean of each slot;
// when the season is complete those means, less their overall mean, become the seasonal indices.
// Method "ewma" stays an EWMA for good.
//
// The band is the forecast ± Band deviations, the deviation being the root mean square of the
// model's own forecast errors (see Model.dev), floored. An observation out of the band starts a
// suspect run that the model does not learn from, so that an anomaly neither drags the forecast
// along nor widens the band; a suspect run of adoptAfter observations is taken as a lasting
// change and learned as it is (see Model.Observe). A forecast condition holds while Confirm
// observations of one suspect run are out of the band.
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
	// run, before a forecast condition holds. One observation out of a 3-deviation band is the
	// noise's tail about once in 400 points; two close together are rare enough to page on.
	Confirm = 2
)

const (
	// adoptAfter is the length of a suspect run (see Model.Observe) after which the model learns
	// the raw values: 30 steps is 5 minutes at 10 s, long enough that a spike or a drop of a few
	// minutes is alerted on and not learned, short enough that a lasting change of level (a new
	// client, a failover) stops alerting after about five minutes. A change that lasts a little
	// longer than that is learned, and its end alerts for up to five minutes in turn.
	adoptAfter = 30

	// ringSize is how many first residuals are kept to start the deviation with (see Model.dev).
	ringSize = 32

	// minResiduals is how many residuals a model needs before it draws a band at all; a median
	// of fewer says little about the deviation.
	minResiduals = 8

	// relFloor is the smallest deviation, as a share of the forecast. A series that barely moves
	// (a health check's steady rate, a counter that is constant for hours) would otherwise get a
	// band a hair wide and alert on any change at all. 2% is below the counting noise of any
	// real traffic figure (a Poisson count of N in a bucket varies by 1/√N, 2% for 2,500), so the
	// floor only widens bands that are unnaturally narrow.
	relFloor = 0.02

	// devWeight is the weight of a new squared residual in the deviation once 100 have been seen
	// (about the last 100 observations, 17 minutes at 10 s): wide enough that the band varies by
	// about 5% from noise alone, narrow enough to follow traffic whose noise grows and shrinks
	// over the day.
	devWeight = 0.01

	// damping is the trend's damping per step (Gardner and McKenzie's φ). A trend fitted on
	// 10-second steps is noisy; undamped, a gap of an hour would project it 360 times. With 0.98,
	// a gap of 5 steps still projects 4.7 steps of trend, while no gap projects more than 49.
	damping = 0.98

	// huber is where the residual the level, trend and season learn from is clipped, in
	// deviations (Huber's ψ, at the 2 of Gelper, Fried and Croux's robust Holt-Winters), and how
	// far from the forecast an observation inside the band must be to keep a suspect run going.
	// Under normal noise it clips one residual in 20 and costs almost nothing in accuracy.
	huber = 2.0

	// madScale turns a median absolute deviation into a standard deviation for normal noise.
	madScale = 1.4826

	// reject is how far from their median, in robust deviations, differences are left out of
	// the starting deviation (see Model.spread).
	reject = 3.5
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
	// startScale turns the median absolute difference of successive values into the deviation
	// of the model's forecast error (see Model.dev).
	startScale float64
	perSlot    float64 // observations a slot, per season
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
	return &Params{
		Step: step, Season: season, Slots: slots,
		Alpha: s.Alpha, Beta: s.Beta, Gamma: s.Gamma,
		Band: band, MinHistory: max(s.MinHistory, 0), Method: s.Method, MinDev: max(minDev, 0),
		stepNS: int64(step), seasonNS: int64(season), minHistoryNS: int64(max(s.MinHistory, 0)),
		gammaObs:   1 - math.Pow(1-s.Gamma, 1/perSlot),
		startScale: 1 / math.Sqrt(2-s.Alpha),
		perSlot:    perSlot,
		ewma:       s.Method == api.MethodEWMA,
	}
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
	phaseEWMA               // the level alone; for Holt-Winters, until the first season starts
	phaseFirst              // Holt-Winters: the level alone while the first season is recorded
	phaseHW                 // Holt-Winters
)

// Model forecasts one series: 216 bytes, and 4 bytes a seasonal slot (1,368 bytes for 288).
type Model struct {
	p *Params
	// slots are the seasonal indices. During the first season of a Holt-Winters model they hold
	// the mean of the values learned in each slot so far (NaN: none); nil for method ewma.
	slots  []float32
	level  float64
	last   int64 // Unix ns of the last observation or skip; a time not after it is ignored
	first  int64 // Unix ns of the first value
	season int64 // Unix ns of the first value of the first season
	trend  float32
	msq    float32           // mean, then EWMA, of the squared residuals, clipped to the band
	ring   [ringSize]float32 // the first differences (see Model.dev)
	prev   float32           // the last value learned, less its seasonal index
	n      uint16            // first season: values learned in the current slot
	sus    uint16            // observations in the suspect run (see Observe)
	run    uint16            // observations out of the band in the suspect run
	side   int8              // side of the suspect run
	phase  uint8
	k      uint8 // residuals learned, at most 255
	ready  bool  // the last observation was Ready
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
// observation was not Ready or ended the run. A forecast condition holds while OutRun ≥ Confirm,
// so it fires at the second observation out of the band and clears when one comes back within
// huber deviations of the forecast.
//
// The row does not break inside the band because noise brings about one point in ten of a 5σ
// spike back inside a 3-deviation band: with a strict row, the acceptance test missed 2 of its
// 600 anomalies (three noise shapes), and a long anomaly would make the condition flap. Under
// normal noise an observation beyond 2 deviations right after one beyond 3 is rare (2%): the
// test saw at most one false alert more per shape in about 170,000 points.
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
//     clipped to the band's edge, so that a band too narrow for the noise widens;
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
		m.phase, m.level, m.first, m.last, m.prev = phaseEWMA, v, tn, tn, float32(v)
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
	dev = p.floor(m.dev(), f)
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
	case out != 0:
		m.sus, m.run, m.side = 1, 1, out
	case m.sus > 0 && side == m.side && math.Abs(e) > huber*dev:
		m.sus = inc16(m.sus)
	default:
		m.sus, m.run, m.side = 0, 0, 0
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
			m.ring[m.k] = x - m.prev
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
	if m.phase != phaseHW {
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
	dev := p.floor(m.dev(), pt.Forecast)
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
// model, it starts the mean of a new slot, and switches to Holt-Winters once a season has passed
// since the first value.
func (m *Model) enter(tn int64) {
	if m.phase != phaseFirst {
		return
	}
	if tn-m.season >= m.p.seasonNS {
		m.startSeason()
		return
	}
	if m.p.slot(tn) != m.p.slot(m.last) {
		m.n = 0
	}
}

// record learns the value y at tn into the mean of its slot during the first season. The first
// season starts with the first value learned with a band, and starts again with the first value
// of a lasting change of level (the adoptAfter-th of a suspect run).
func (m *Model) record(tn int64, y float64) {
	if m.phase == phaseEWMA || m.sus == adoptAfter {
		for i := range m.slots {
			m.slots[i] = float32(math.NaN())
		}
		m.phase, m.season, m.n = phaseFirst, tn, 0
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
// Holt-Winters. A slot that got no value (a gap) takes the line between its known neighbours.
func (m *Model) startSeason() {
	s := m.slots
	k := len(s)
	nan := func(i int) bool { return math.IsNaN(float64(s[i])) }
	// The first value always lands in a slot, so both walks end; a slot filled here is on the
	// line between the known ones, so later walks may stop at it.
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
	// James-Stein
	d := m.dev()
	noise := d * d * (2 - m.p.Alpha) / 2 / m.p.perSlot
	if !noJS && k > 3 && sq > 0 {
		f := float32(max(0, 1-float64(k-3)*noise/sq))
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

// dev is the deviation before its floors: 1.4826 × the median absolute deviation of the first 32
// residuals until there are 32, then the root of the mean squared residual, clipped to the band
// (a plain mean of the first 100 residuals, then an EWMA of weight devWeight).
//
// The median absolute deviation starts the band robustly from a few residuals, but a median of
// the last 32 residuals varies by ±20% from noise alone, and a band 20% too narrow alerts ten
// times as often: an EWMA on that ring alerted 4.2 times per 10,000 points of plain Gaussian
// noise and 17 times of Laplace noise, against 0.15 and 1.7 with the root mean square. The root
// mean square, over 100 residuals, varies by 5%. It is also the right width for heavy-tailed
// noise, where the mean or median absolute deviation understate the standard deviation (by 11%
// and 27% for Laplace noise) and let the tail out of the band more often: with the mean
// absolute residual the acceptance test saw 1.9 false alerts per 10,000 points of Laplace noise,
// with the root mean square 0.65. The clipping to the band and the suspect runs, which teach it
// nothing, keep it robust to anomalies.
func (m *Model) dev() float64 {
	if m.k < ringSize {
		return m.p.startScale * m.spread()
	}
	return math.Sqrt(float64(m.msq))
}

// spread is the standard deviation of the differences in the ring, leaving out those further
// than reject robust deviations from their median.
func (m *Model) spread() float64 {
	n := int(min(m.k, ringSize))
	if n == 0 {
		return 0
	}
	var a [ringSize]float32
	copy(a[:], m.ring[:n])
	sortFloats(a[:n])
	med := median(a[:n])
	lim := reject * madScale * mad(a[:n], med)
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

// mad is the median absolute deviation of sorted values from their median med, without
// allocating: the deviations from the median are read in increasing order by walking outwards
// from the middle.
func mad(a []float32, med float64) float64 {
	n := len(a)
	// The deviations of a[lo], going down, and of a[hi], going up, are each in increasing order;
	// merging them gives the deviations by rank. An odd count starts with the median itself.
	lo, hi, taken := n/2-1, n/2, 0
	var prev, cur float64
	if n%2 == 1 {
		hi, taken = n/2+1, 1
	}
	for taken <= n/2 {
		prev = cur
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
		taken++
	}
	// cur is the deviation of rank n/2 (counting from 0) and prev that of rank n/2-1.
	if n%2 == 1 {
		return cur
	}
	return (prev + cur) / 2
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
var noJS bool
