package notify

import (
	"errors"
	"fmt"
	"maps"
	"time"
	"unicode/utf8"
)

// errInvalid is wrapped by every reason normalise refuses an alert.
var errInvalid = errors.New("invalid alert")

// normalise copies an alert, so that the caller may reuse its maps, and checks it against what
// Alertmanager accepts (model.Alert.Validate): Alertmanager refuses an invalid alert with a 400
// for the whole request, and a webhook consumer written for Alertmanager's output expects the
// same. Label and annotation names follow Prometheus's classic rule, which every Alertmanager
// version accepts. A resolved alert without an end is given now.
func normalise(a Alert, now time.Time) (Alert, error) {
	if a.Fingerprint == "" {
		return a, fmt.Errorf("%w: no fingerprint", errInvalid)
	}
	switch a.Status {
	case StatusFiring:
		a.EndsAt = time.Time{}
	case StatusResolved:
		if a.EndsAt.IsZero() {
			a.EndsAt = now
		}
		if !a.StartsAt.IsZero() && a.EndsAt.Before(a.StartsAt) {
			return a, fmt.Errorf("%w %s: ends at %s, before it starts at %s", errInvalid, a.Fingerprint,
				a.EndsAt.Format(time.RFC3339), a.StartsAt.Format(time.RFC3339))
		}
	default:
		return a, fmt.Errorf("%w %s: status %q, want %q or %q", errInvalid, a.Fingerprint, a.Status,
			StatusFiring, StatusResolved)
	}
	// Alertmanager removes labels with empty values, and then wants one left.
	nonEmpty := false
	for k, v := range a.Labels {
		if err := checkPair(k, v); err != nil {
			return a, fmt.Errorf("%w %s: label %w", errInvalid, a.Fingerprint, err)
		}
		nonEmpty = nonEmpty || v != ""
	}
	if !nonEmpty {
		return a, fmt.Errorf("%w %s: no label with a value", errInvalid, a.Fingerprint)
	}
	for k, v := range a.Annotations {
		if err := checkPair(k, v); err != nil {
			return a, fmt.Errorf("%w %s: annotation %w", errInvalid, a.Fingerprint, err)
		}
	}
	// An empty value is an absent pair to Prometheus and Alertmanager, which drops such pairs
	// when alerts are posted; webhook receivers see them dropped too.
	empty := func(_, v string) bool { return v == "" }
	a.Labels = maps.Clone(a.Labels)
	maps.DeleteFunc(a.Labels, empty)
	a.Annotations = maps.Clone(a.Annotations)
	maps.DeleteFunc(a.Annotations, empty)
	return a, nil
}

func checkPair(name, value string) error {
	if !validName(name) {
		return fmt.Errorf("name %q: want letters, digits and _, not starting with a digit", name)
	}
	if !utf8.ValidString(value) {
		return fmt.Errorf("%q: value is not UTF-8", name)
	}
	return nil
}

// validName is Prometheus's classic label name rule, [a-zA-Z_][a-zA-Z0-9_]*.
func validName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		letter := c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
		if !letter && (i == 0 || c < '0' || c > '9') {
			return false
		}
	}
	return true
}
