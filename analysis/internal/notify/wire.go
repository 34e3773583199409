package notify

import (
	"encoding/json"
	"fmt"
	"maps"
	"time"
)

// webhookMessage is Alertmanager's webhook payload, version 4: notify/webhook.Message, which
// embeds template.Data, in prometheus/alertmanager. Fields are in the order Alertmanager writes
// them, and maps are never null, as Alertmanager makes every one of them.
type webhookMessage struct {
	Receiver          string            `json:"receiver"`
	Status            string            `json:"status"`
	Alerts            []webhookAlert    `json:"alerts"`
	GroupLabels       map[string]string `json:"groupLabels"`
	CommonLabels      map[string]string `json:"commonLabels"`
	CommonAnnotations map[string]string `json:"commonAnnotations"`
	ExternalURL       string            `json:"externalURL"`
	Version           string            `json:"version"`
	GroupKey          string            `json:"groupKey"`
	TruncatedAlerts   uint64            `json:"truncatedAlerts"`
}

// webhookAlert is template.Alert. A zero endsAt is written as Alertmanager writes it,
// "0001-01-01T00:00:00Z".
type webhookAlert struct {
	Status       string            `json:"status"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Fingerprint  string            `json:"fingerprint"`
}

// groupKey has the form of Alertmanager's, the route's key and the group's labels. A receiver
// has one group, without group labels, so its key is constant: consumers that thread
// notifications by group key see one thread per receiver.
func groupKey(receiverID string) string {
	return fmt.Sprintf("{}/{receiver=%q}:{}", receiverID)
}

// webhookBody builds the payload of one webhook request.
func webhookBody(receiverID, externalURL string, alerts []Alert) ([]byte, error) {
	m := webhookMessage{
		Receiver:          receiverID,
		Status:            StatusResolved,
		Alerts:            make([]webhookAlert, 0, len(alerts)),
		GroupLabels:       map[string]string{},
		CommonLabels:      map[string]string{},
		CommonAnnotations: map[string]string{},
		ExternalURL:       externalURL,
		Version:           "4",
		GroupKey:          groupKey(receiverID),
	}
	for _, a := range alerts {
		if a.Status == StatusFiring {
			m.Status = StatusFiring
		}
		m.Alerts = append(m.Alerts, webhookAlert{
			Status:       a.Status,
			Labels:       nonNil(a.Labels),
			Annotations:  nonNil(a.Annotations),
			StartsAt:     a.StartsAt.UTC(),
			EndsAt:       a.EndsAt.UTC(),
			GeneratorURL: a.GeneratorURL,
			Fingerprint:  a.Fingerprint,
		})
	}
	if len(alerts) > 0 {
		m.CommonLabels = common(alerts, func(a Alert) map[string]string { return a.Labels })
		m.CommonAnnotations = common(alerts, func(a Alert) map[string]string { return a.Annotations })
	}
	body, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encoding the webhook payload: %w", err)
	}
	return body, nil
}

// common gives the pairs every alert has, as template.Data does for commonLabels and
// commonAnnotations.
func common(alerts []Alert, pairs func(Alert) map[string]string) map[string]string {
	c := nonNil(maps.Clone(pairs(alerts[0])))
	for _, a := range alerts[1:] {
		p := pairs(a)
		maps.DeleteFunc(c, func(k, v string) bool {
			w, ok := p[k]
			return !ok || w != v
		})
	}
	return c
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// postableAlert is one alert of Alertmanager's API v2 (models.PostableAlert). The times are
// pointers so that a zero start is left out, and Alertmanager sets it to when it received it.
type postableAlert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	StartsAt     *time.Time        `json:"startsAt,omitempty"`
	EndsAt       *time.Time        `json:"endsAt,omitempty"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

// alertmanagerBody builds the body of one POST to /api/v2/alerts. A resolved alert carries its
// end. A firing alert carries an end validFor after now (or after its start, should that be in
// the future): Alertmanager keeps it firing until then, and it is re-posted well before.
func alertmanagerBody(alerts []Alert, now time.Time, validFor time.Duration) ([]byte, error) {
	out := make([]postableAlert, 0, len(alerts))
	for _, a := range alerts {
		p := postableAlert{Labels: a.Labels, Annotations: a.Annotations, GeneratorURL: a.GeneratorURL}
		if !a.StartsAt.IsZero() {
			s := a.StartsAt.UTC()
			p.StartsAt = &s
		}
		end := a.EndsAt.UTC()
		if a.Status == StatusFiring {
			base := now
			if a.StartsAt.After(base) {
				base = a.StartsAt
			}
			end = base.Add(validFor).UTC()
		}
		p.EndsAt = &end
		out = append(out, p)
	}
	body, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("encoding alerts for Alertmanager: %w", err)
	}
	return body, nil
}
