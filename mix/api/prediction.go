package api

import (
	"encoding/json"
	"fmt"
	"time"
)

// Limits of the prediction settings.
const (
	MinSeason     = time.Minute
	MaxSeason     = 30 * 24 * time.Hour
	MaxMinHistory = 90 * 24 * time.Hour
)

// PredictionMethod is how analysis forecasts a series.
type PredictionMethod string

const (
	// MethodHoltWinters is additive Holt-Winters with the season's length; until a season of
	// history exists, analysis falls back to EWMA.
	MethodHoltWinters PredictionMethod = "holt-winters"
	// MethodEWMA is an exponentially weighted moving average with a robust deviation.
	MethodEWMA PredictionMethod = "ewma"
)

// PredictionMethods lists the methods.
var PredictionMethods = []PredictionMethod{MethodHoltWinters, MethodEWMA}

// PredictionSettings are the settings analysis forecasts with; there is one set.
type PredictionSettings struct {
	Season     time.Duration    // the period of the seasonal pattern, from 1m to 30d
	Band       float64          // default band width of forecast rules, in deviations, > 0
	MinHistory time.Duration    // how much history a series needs before it can alert
	Method     PredictionMethod // holt-winters or ewma
	Alpha      float64          // smoothing of the level, in (0, 1)
	Beta       float64          // smoothing of the trend, in (0, 1)
	Gamma      float64          // smoothing of the season, in (0, 1)
}

// DefaultPredictionSettings are the settings in force until an operator sets others: a daily
// season, a band of three deviations, an hour of history before alerting, Holt-Winters.
func DefaultPredictionSettings() PredictionSettings {
	return PredictionSettings{
		Season:     24 * time.Hour,
		Band:       3,
		MinHistory: time.Hour,
		Method:     MethodHoltWinters,
		Alpha:      0.3,
		Beta:       0.05,
		Gamma:      0.2,
	}
}

var predictionFields = []string{"season", "band", "min_history", "method", "alpha", "beta", "gamma"}

// ParsePredictionSettings reads the prediction settings:
//
//	{"season": "24h", "band": 3.0, "min_history": "1h", "method": "holt-winters",
//	 "alpha": 0.3, "beta": 0.05, "gamma": 0.2}
//
// A field left out keeps its value from DefaultPredictionSettings, so {} is the defaults. There
// is one set of settings, so unlike the other resources this reads a single object only. The
// error is a *sdk.ValidationError naming every bad field.
func ParsePredictionSettings(data []byte) (PredictionSettings, error) {
	return parseOne(data, parsePrediction)
}

func parsePrediction(raw json.RawMessage, p string, e *errs) PredictionSettings {
	s := DefaultPredictionSettings()
	fields, ok := fieldsOf(raw, p, "the prediction settings", predictionFields, e)
	if !ok {
		return s
	}
	if v, ok := fields["season"]; ok {
		if d, ok := duration(v, join(p, "season"), MinSeason, MaxSeason, e); ok {
			s.Season = d
		}
	}
	if v, ok := fields["min_history"]; ok {
		if d, ok := duration(v, join(p, "min_history"), 0, MaxMinHistory, e); ok {
			s.MinHistory = d
		}
	}
	if _, ok := fields["method"]; ok {
		s.Method = enum(fields, "method", p, PredictionMethods, true, e)
	}
	if v, ok := fields["band"]; ok {
		fp := join(p, "band")
		if f, ok := number(v, fp, e); ok {
			if f <= 0 {
				e.add(fp, "%v: want more than 0", f)
			}
			s.Band = f
		}
	}
	for _, k := range []struct {
		name string
		dst  *float64
		what string
	}{{"alpha", &s.Alpha, "level"}, {"beta", &s.Beta, "trend"}, {"gamma", &s.Gamma, "season"}} {
		v, ok := fields[k.name]
		if !ok {
			continue
		}
		fp := join(p, k.name)
		if f, ok := number(v, fp, e); ok {
			if f <= 0 || f >= 1 {
				e.add(fp, "%v: the smoothing of the %s is between 0 and 1, both excluded", f, k.what)
			}
			*k.dst = f
		}
	}
	return s
}

type predictionJSON struct {
	Season     string           `json:"season"`
	Band       float64          `json:"band"`
	MinHistory string           `json:"min_history"`
	Method     PredictionMethod `json:"method"`
	Alpha      float64          `json:"alpha"`
	Beta       float64          `json:"beta"`
	Gamma      float64          `json:"gamma"`
}

// MarshalJSON writes every field; ParsePredictionSettings reads it back to an equal value.
func (s PredictionSettings) MarshalJSON() ([]byte, error) {
	return json.Marshal(predictionJSON{Season: formatDuration(s.Season), Band: s.Band,
		MinHistory: formatDuration(s.MinHistory), Method: s.Method, Alpha: s.Alpha, Beta: s.Beta,
		Gamma: s.Gamma})
}

// UnmarshalJSON is ParsePredictionSettings.
func (s *PredictionSettings) UnmarshalJSON(data []byte) error {
	v, err := ParsePredictionSettings(data)
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// Validate checks settings built in code against the parser's rules by writing them out and
// reading them back.
func (s *PredictionSettings) Validate() error {
	data, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("encoding prediction settings: %w", err)
	}
	_, err = ParsePredictionSettings(data)
	return err
}
