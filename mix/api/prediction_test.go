package api_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/quanyu/quanyu/mix/api"
)

const examplePrediction = `{"season": "24h", "band": 3.0, "min_history": "1h", "method": "holt-winters",
	"alpha": 0.3, "beta": 0.05, "gamma": 0.2}`

func TestPredictionSettings(t *testing.T) {
	def := api.DefaultPredictionSettings()
	if err := def.Validate(); err != nil {
		t.Fatalf("the defaults are invalid: %v", err)
	}
	// The design's example is the defaults, written out.
	s, err := api.ParsePredictionSettings([]byte(examplePrediction))
	if err != nil || !reflect.DeepEqual(s, def) {
		t.Errorf("ParsePredictionSettings(example) = %+v, %v; want the defaults %+v", s, err, def)
	}
	out, err := json.Marshal(def)
	if err != nil {
		t.Fatal(err)
	}
	const wantJSON = `{"season":"24h","band":3,"min_history":"1h","method":"holt-winters","alpha":0.3,"beta":0.05,"gamma":0.2}`
	if string(out) != wantJSON {
		t.Errorf("Marshal(defaults) = %s, want %s", out, wantJSON)
	}
	tests := []struct {
		name string
		doc  string
		want func(*api.PredictionSettings)
	}{
		{"empty is the defaults", `{}`, func(*api.PredictionSettings) {}},
		{"weekly season in days", `{"season":"7d"}`, func(s *api.PredictionSettings) { s.Season = 7 * 24 * time.Hour }},
		{"shortest season", `{"season":"1m"}`, func(s *api.PredictionSettings) { s.Season = time.Minute }},
		{"longest season", `{"season":"30d"}`, func(s *api.PredictionSettings) { s.Season = 30 * 24 * time.Hour }},
		{"band", `{"band":0.5}`, func(s *api.PredictionSettings) { s.Band = 0.5 }},
		{"no history needed", `{"min_history":"0s"}`, func(s *api.PredictionSettings) { s.MinHistory = 0 }},
		{"a week of history", `{"min_history":"168h"}`, func(s *api.PredictionSettings) { s.MinHistory = 7 * 24 * time.Hour }},
		{"ewma in capitals", `{"method":"EWMA"}`, func(s *api.PredictionSettings) { s.Method = api.MethodEWMA }},
		{"smoothing near its bounds", `{"alpha":0.999,"beta":1e-9,"gamma":0.5}`,
			func(s *api.PredictionSettings) { s.Alpha, s.Beta, s.Gamma = 0.999, 1e-9, 0.5 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := api.DefaultPredictionSettings()
			tt.want(&want)
			s, err := api.ParsePredictionSettings([]byte(tt.doc))
			if err != nil || !reflect.DeepEqual(s, want) {
				t.Fatalf("ParsePredictionSettings(%s) = %+v, %v; want %+v", tt.doc, s, err, want)
			}
			roundTrip(t, s, api.ParsePredictionSettings, (*api.PredictionSettings).Validate)
		})
	}
}

func TestPredictionRejects(t *testing.T) {
	cases := []badCase{
		{"not an object", `[{}]`, []string{""}},
		{"unknown field", `{"seasons":"24h"}`, []string{"seasons"}},
		{"season under a minute", `{"season":"30s"}`, []string{"season"}},
		{"season over 30 days", `{"season":"31d"}`, []string{"season"}},
		{"season a number", `{"season":86400}`, []string{"season"}},
		{"season zero", `{"season":"0s"}`, []string{"season"}},
		{"band 0", `{"band":0}`, []string{"band"}},
		{"band negative", `{"band":-3}`, []string{"band"}},
		{"band a string", `{"band":"3"}`, []string{"band"}},
		{"min_history negative", `{"min_history":"-1h"}`, []string{"min_history"}},
		{"min_history too long", `{"min_history":"91d"}`, []string{"min_history"}},
		{"min_history bad", `{"min_history":"an hour"}`, []string{"min_history"}},
		{"method unknown", `{"method":"arima"}`, []string{"method"}},
		{"method null", `{"method":null}`, []string{"method"}},
		{"alpha 0", `{"alpha":0}`, []string{"alpha"}},
		{"alpha 1", `{"alpha":1}`, []string{"alpha"}},
		{"beta above 1", `{"beta":1.5}`, []string{"beta"}},
		{"gamma a string", `{"gamma":"0.2"}`, []string{"gamma"}},
		{"gamma negative", `{"gamma":-0.2}`, []string{"gamma"}},
		{"everything", `{"season":"1s","band":0,"min_history":"x","method":"","alpha":2,"beta":0,"gamma":1,"x":0}`,
			[]string{"season", "band", "min_history", "method", "alpha", "beta", "gamma", "x"}},
	}
	runBad(t, cases, api.ParsePredictionSettings)
	s := api.DefaultPredictionSettings()
	s.Method, s.Season = "", api.MaxSeason+time.Second
	checkPaths(t, s.Validate(), "method", "season")
	if _, err := api.ParsePredictionSettings([]byte(strings.Repeat(" ", 3))); err == nil {
		t.Error("blank settings accepted")
	}
}
