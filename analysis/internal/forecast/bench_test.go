package forecast

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/quanyu/quanyu/mix/api"
)

// noiseTable is Gaussian noise and seasonTable a daily sine of ±30%, so that benchmark values
// cost a few multiplications and the benchmarks measure the models.
var noiseTable, seasonTable = func() ([]float64, []float64) {
	r := rand.New(rand.NewPCG(10, 11))
	noise := make([]float64, 4096)
	for i := range noise {
		noise[i] = r.NormFloat64()
	}
	season := make([]float64, 8640)
	for i := range season {
		season[i] = 1 + 0.3*math.Sin(2*math.Pi*float64(i)/8640)
	}
	return noise, season
}()

// benchValue is the value of series j at step i: a daily sine around a base of its own, σ 5%.
func benchValue(j, i int) float64 {
	return (50 + float64(j%1000)) * (seasonTable[i%8640] + 0.05*noiseTable[(i*7+j)&4095])
}

// BenchmarkObserve is the cost of one observation of one model, in its Holt-Winters phase (a
// daily season, after a day and an hour) and for method ewma.
func BenchmarkObserve(b *testing.B) {
	for _, method := range []api.PredictionMethod{api.MethodHoltWinters, api.MethodEWMA} {
		b.Run(string(method), func(b *testing.B) {
			m := NewModel(NewParams(settings(24*time.Hour, time.Hour, method), step, 0, 0.1), t0)
			i := 0
			for ; i < 8640+360; i++ {
				m.Observe(at(i), benchValue(0, i))
			}
			t := at(i)
			b.ReportAllocs()
			for b.Loop() {
				m.Observe(t, benchValue(0, i))
				t = t.Add(step)
				i++
			}
		})
	}
}

// BenchmarkTick10k is one 10 s tick of 10,000 Holt-Winters models, each observing one value; it
// reports the share of one core that this takes every 10 s. The models have 288 slots, as a
// daily season has, but a season of an hour so that they leave their EWMA phase quickly; they
// are visited in a random order, as a map of series would visit them, so that their memory is
// not read in the order it was allocated.
func BenchmarkTick10k(b *testing.B) {
	const series = 10000
	p := NewParams(settings(time.Hour, time.Hour, ""), step, 0, 0.1)
	models := make([]*Model, series)
	for j := range models {
		models[j] = NewModel(p, t0)
	}
	order := rand.New(rand.NewPCG(12, 13)).Perm(series)
	i := 0
	for ; i < 2*360; i++ {
		t := at(i)
		for _, j := range order {
			models[j].Observe(t, benchValue(j, i))
		}
	}
	for _, m := range models {
		if m.phase != phaseHW {
			b.Fatal("a model is not in its Holt-Winters phase")
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		t := at(i)
		for _, j := range order {
			models[j].Observe(t, benchValue(j, i))
		}
		i++
	}
	perTick := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(perTick/series, "ns/observation")
	b.ReportMetric(perTick/float64(10*time.Second)*100, "%core")
}
