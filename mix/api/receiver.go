package api

import (
	"encoding/json"
	"fmt"
	"net/textproto"
	"net/url"
	"strings"
	"time"
)

// Limits of receivers.
const (
	MaxReceivers = 64
	MaxURLLength = 2048
)

// ReceiverKind says how alerts are delivered.
type ReceiverKind string

const (
	// ReceiverWebhook posts the Alertmanager webhook payload (version 4) to the URL.
	ReceiverWebhook ReceiverKind = "webhook"
	// ReceiverAlertmanager posts alerts to an Alertmanager; the URL is its base address and
	// alerts go to <url>/api/v2/alerts.
	ReceiverAlertmanager ReceiverKind = "alertmanager"
)

// ReceiverKinds lists the kinds.
var ReceiverKinds = []ReceiverKind{ReceiverWebhook, ReceiverAlertmanager}

// Receiver is where alerts go.
type Receiver struct {
	ID      string
	Kind    ReceiverKind
	URL     string            // http or https, with a host
	Headers map[string]string // sent with every delivery, names in canonical form
	// SendResolved also delivers resolved alerts; true when not given, as in Alertmanager.
	SendResolved bool
	// RepeatInterval: a webhook is sent a firing alert again this long after it last was, while
	// it fires (0: never), as Alertmanager repeats a notification; DefaultRepeatInterval when not
	// given. An Alertmanager receiver has none: it repeats by its own routes.
	RepeatInterval time.Duration
}

// Bounds of a webhook's repeat_interval.
const (
	DefaultRepeatInterval = 4 * time.Hour // Alertmanager's default
	MinRepeatInterval     = time.Second
	MaxRepeatInterval     = 7 * 24 * time.Hour
)

var receiverFields = []string{"id", "kind", "url", "headers", "send_resolved", "repeat_interval"}

// reservedHeaders are set by the sender itself; a receiver may not replace them.
var reservedHeaders = []string{"Host", "Content-Length", "Content-Type", "Transfer-Encoding", "Connection"}

// checkHeaderName is the rule for header names: HTTP tokens (RFC 9110) within the map key
// limit, other than the ones the sender sets.
func checkHeaderName(k string) string {
	if k == "" || len(k) > MaxMapKeyLength {
		return fmt.Sprintf("header names are 1 to %d characters", MaxMapKeyLength)
	}
	for i := 0; i < len(k); i++ {
		if !isTokenChar(k[i]) {
			return "not an HTTP header name (letters, digits and !#$%&'*+-.^_`|~)"
		}
	}
	for _, h := range reservedHeaders {
		if strings.EqualFold(h, k) {
			return "set by the sender; it cannot be configured"
		}
	}
	return ""
}

func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// ParseReceiver reads one receiver:
//
//	{"id": "ops", "kind": "webhook", "url": "https://hooks.example.com/alerts",
//	 "headers": {"Authorization": "Bearer …"}, "send_resolved": true, "repeat_interval": "4h"}
//
// The result is normalised; otherwise the error is a *sdk.ValidationError naming every bad
// field.
func ParseReceiver(data []byte) (Receiver, error) {
	return parseOne(data, parseReceiver)
}

// ParseReceivers reads a set of receivers: one receiver, a JSON array of them, or
// {"receivers": […]}. Ids must be unique.
func ParseReceivers(data []byte) ([]Receiver, error) {
	return parseSet(data, "receivers", "id", MaxReceivers, parseReceiver,
		func(r *Receiver) string { return r.ID }, nil)
}

func parseReceiver(raw json.RawMessage, p string, e *errs) Receiver {
	r := Receiver{SendResolved: true}
	fields, ok := fieldsOf(raw, p, "a receiver", receiverFields, e)
	if !ok {
		return r
	}
	r.ID = id(fields, "id", p, true, e)
	r.Kind = enum(fields, "kind", p, ReceiverKinds, true, e)
	if v, ok := fields["url"]; !ok {
		e.add(join(p, "url"), "required")
	} else if s, ok := str(v, join(p, "url"), e); ok {
		u, reason := checkURL(s, r.Kind)
		if reason != "" {
			e.add(join(p, "url"), "%q: %s", s, reason)
		}
		r.URL = u
	}
	if v, ok := fields["headers"]; ok {
		r.Headers = stringMap(v, join(p, "headers"), false, checkHeaderName, textproto.CanonicalMIMEHeaderKey, e)
	}
	if v, ok := fields["send_resolved"]; ok {
		if err := json.Unmarshal(v, &r.SendResolved); err != nil || isNull(v) {
			e.add(join(p, "send_resolved"), "want true or false")
		}
	}
	if r.Kind != ReceiverAlertmanager {
		r.RepeatInterval = DefaultRepeatInterval
	}
	if v, ok := fields["repeat_interval"]; ok {
		fp := join(p, "repeat_interval")
		if r.Kind == ReceiverAlertmanager {
			e.add(fp, "an Alertmanager repeats notifications by its own routes' repeat_interval")
		} else if d, ok := duration(v, fp, 0, MaxRepeatInterval, e); ok {
			if d > 0 && d < MinRepeatInterval {
				e.add(fp, "%s: want 0 (never) or at least %s", d, MinRepeatInterval)
			}
			r.RepeatInterval = d
		}
	}
	return r
}

// checkURL normalises a receiver URL, or gives the reason it is refused.
func checkURL(s string, kind ReceiverKind) (string, string) {
	if len(s) > MaxURLLength {
		return "", fmt.Sprintf("%d bytes, at most %d", len(s), MaxURLLength)
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return "", "not a URL"
	case u.Scheme != "http" && u.Scheme != "https":
		return "", "want an http:// or https:// URL"
	case u.Opaque != "" || u.Hostname() == "":
		return "", "want a host, as in http://alerts.example.com/hook"
	case u.Fragment != "" || u.RawFragment != "" || strings.Contains(s, "#"):
		return "", "a fragment is never sent to the server; leave it out"
	case kind == ReceiverAlertmanager && (u.RawQuery != "" || u.ForceQuery):
		return "", "an Alertmanager is given by its base address, without a query"
	}
	if p := u.Port(); p != "" {
		if _, err := parsePort(p); err != nil || p == "0" {
			return "", "the port is not from 1 to 65535"
		}
	}
	return u.String(), ""
}

type receiverJSON struct {
	ID             string            `json:"id"`
	Kind           ReceiverKind      `json:"kind"`
	URL            string            `json:"url"`
	Headers        map[string]string `json:"headers,omitempty"`
	SendResolved   bool              `json:"send_resolved"`
	RepeatInterval string            `json:"repeat_interval,omitempty"` // webhooks only
}

// MarshalJSON writes the normalised receiver; ParseReceiver reads it back to an equal value.
// Header values, which may hold credentials, are written as they are: mix decides who may read
// them.
func (r Receiver) MarshalJSON() ([]byte, error) {
	j := receiverJSON{ID: r.ID, Kind: r.Kind, URL: r.URL, Headers: r.Headers, SendResolved: r.SendResolved}
	if r.Kind != ReceiverAlertmanager {
		j.RepeatInterval = formatDuration(r.RepeatInterval)
	}
	return json.Marshal(j)
}

// UnmarshalJSON is ParseReceiver.
func (r *Receiver) UnmarshalJSON(data []byte) error {
	v, err := ParseReceiver(data)
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// Validate checks a receiver built in code against the parser's rules by writing it out and
// reading it back.
func (r *Receiver) Validate() error {
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encoding receiver %q: %w", r.ID, err)
	}
	_, err = ParseReceiver(data)
	return err
}

// ValidateReceivers checks a set of receivers built in code as ParseReceivers checks a document.
func ValidateReceivers(rs []Receiver) error {
	data, err := marshalSet(rs)
	if err != nil {
		return fmt.Errorf("encoding receivers: %w", err)
	}
	_, err = ParseReceivers(data)
	return err
}
