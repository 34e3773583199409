package sdk

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits of the subscription language. They keep every compiled filter (classic BPF, BPF maps)
// within what its backend can hold; a document over a limit is rejected, never truncated.
const (
	MaxSubscriptions = 64   // per agent: records carry a 64-bit mask of the ones they matched
	MaxNICs          = 64   // entries in NIC
	MaxAddresses     = 4096 // entries in each of L3, L3Match, L3Miss, L3MissRange
	MaxPorts         = 1024 // entries in each of L4, L4Miss
	MaxPortRanges    = 256  // entries in each of L4Range, L4MissRange
	MaxL7Tokens      = 32   // entries in each of L7, L7Miss
	MaxPayloadBytes  = 4096 // options.payload_bytes
	// DefaultPayloadBytes is how much of each packet's payload decoders see by default: enough
	// for the headers of nearly every HTTP message and for a whole classic DNS message.
	DefaultPayloadBytes = 2048
)

// L7 protocol tokens the language knows. A protocol turns decoding on for the flows a
// subscription matches; which plugin decodes it is the agent's business.
var L7Protocols = []string{"DNS", "HTTP"}

// L7 method tokens: they choose which L7 records are reported.
var L7Methods = []string{"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"}

// PortRange is an inclusive range of ports.
type PortRange struct {
	First, Last uint16
}

func (r PortRange) String() string {
	return strconv.Itoa(int(r.First)) + "-" + strconv.Itoa(int(r.Last))
}

// Contains reports whether p is in the range.
func (r PortRange) Contains(p uint16) bool { return r.First <= p && p <= r.Last }

// Spec is the seed's subscription, normalised: addresses parsed, CIDRs canonical (host bits
// cleared), ports numeric, lists sorted and free of duplicates, L7 split into protocols and
// methods. An empty include list means "any".
type Spec struct {
	NIC         []string // interface names or globs (path.Match syntax), in the order given
	L3          []netip.Addr
	L3Match     []netip.Prefix
	L3Miss      []netip.Addr
	L3MissRange []netip.Prefix
	L4Class     []Transport
	L4          []uint16
	L4Range     []PortRange
	L4Miss      []uint16
	L4MissRange []PortRange
	L7          []string // protocol tokens: HTTP, DNS
	L7Methods   []string // method tokens given in L7: GET, POST, …
	L7Miss      []string // method or protocol tokens to leave out
}

// Selector says which agents a subscription targets; empty means every agent.
type Selector struct {
	Labels map[string]string `json:"labels,omitempty"`
	Hosts  []string          `json:"hosts,omitempty"` // host names or globs
}

// Options are the per-subscription capture options.
type Options struct {
	// Frames asks for the first bytes of the L3, L4 and L7 headers on flow events.
	Frames bool `json:"frames,omitempty"`
	// PayloadBytes caps the payload sampled from each packet for decoders (0: the default).
	PayloadBytes int `json:"payload_bytes,omitempty"`
	// QueryStrings keeps URL query strings in L7 records; they are cut by default.
	QueryStrings bool `json:"query_strings,omitempty"`
}

// Subscription is one monitoring command: the seed's fields (Spec) wrapped with identity,
// targeting and options.
type Subscription struct {
	ID       string
	Name     string
	Selector Selector
	Owner    string
	Expires  time.Time // zero: never
	Options  Options
	Spec     Spec
}

// DefaultSubscriptionID is the id of a subscription given without one.
const DefaultSubscriptionID = "default"

// Expired reports whether the subscription has expired at now.
func (s *Subscription) Expired(now time.Time) bool {
	return !s.Expires.IsZero() && !now.Before(s.Expires)
}

// Payload is the number of payload bytes per direction decoders get for this subscription.
func (s *Subscription) Payload() int {
	if s.Options.PayloadBytes > 0 {
		return s.Options.PayloadBytes
	}
	return DefaultPayloadBytes
}

// seedFields are the seed's field names, in the seed's order.
var seedFields = []string{"NIC", "L3", "L3Match", "L3Miss", "L3MissRange", "L4CLASS", "L4", "L4Range",
	"L4Miss", "L4MissRange", "L7", "L7Miss"}

var wrapperFields = []string{"id", "name", "selector", "owner", "expires", "options", "spec"}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ParseSubscription reads one subscription: the seed's bare JSON, or the wrapped form
// {"id","name","selector","owner","expires","options","spec":{…seed fields…}}. The result is
// normalised and valid, with DefaultSubscriptionID when the document names no id; otherwise the
// error is a *ValidationError naming every bad field.
func ParseSubscription(data []byte) (Subscription, error) {
	var e errs
	s := parseSubscription(data, "", &e)
	if err := e.err(); err != nil {
		return Subscription{}, err
	}
	// The default is given here rather than while parsing, so that ParseSubscriptions can tell
	// a subscription without an id from one that is called "default".
	if s.ID == "" {
		s.ID = DefaultSubscriptionID
	}
	return s, nil
}

// ParseSubscriptions reads a set: one subscription (bare or wrapped), a JSON array of them, or
// {"subscriptions":[…]}. Ids must be unique; a lone subscription without an id gets "default",
// and in a set of several every subscription needs one (so the bare form, which has none, can
// only stand alone).
func ParseSubscriptions(data []byte) ([]Subscription, error) {
	var e errs
	trimmed := bytes.TrimSpace(data)
	var items []json.RawMessage
	prefix := ""
	switch {
	case len(trimmed) > 0 && trimmed[0] == '[':
		if err := json.Unmarshal(trimmed, &items); err != nil {
			return nil, &ValidationError{Fields: []FieldError{{Reason: "not a JSON array of subscriptions: " + err.Error()}}}
		}
	default:
		var probe map[string]json.RawMessage
		if err := json.Unmarshal(trimmed, &probe); err != nil {
			return nil, &ValidationError{Fields: []FieldError{{Reason: "not a JSON object: " + err.Error()}}}
		}
		if raw, ok := probe["subscriptions"]; ok && len(probe) == 1 {
			prefix = "subscriptions"
			if err := json.Unmarshal(raw, &items); err != nil {
				return nil, &ValidationError{Fields: []FieldError{{Path: "subscriptions", Reason: "want an array: " + err.Error()}}}
			}
		} else {
			items = []json.RawMessage{trimmed}
			prefix = "-" // a lone document: paths start at its fields
		}
	}
	if len(items) > MaxSubscriptions {
		e.add(prefix, "%d subscriptions, at most %d", len(items), MaxSubscriptions)
		return nil, e.err()
	}
	subs := make([]Subscription, 0, len(items))
	for i, raw := range items {
		p := ""
		if prefix != "-" {
			p = index(prefix, i)
		}
		before := len(e.fields)
		s := parseSubscription(raw, p, &e)
		// An item that is not an object, or whose id is itself wrong, has been reported already.
		if s.ID == "" && len(items) > 1 && !e.has(before, p) && !e.has(before, join(p, "id")) {
			e.add(join(p, "id"), "required when a document holds several subscriptions (use the wrapped form {\"id\": …, \"spec\": {…}})")
		}
		subs = append(subs, s)
	}
	if len(subs) == 1 && subs[0].ID == "" {
		subs[0].ID = DefaultSubscriptionID
	}
	seen := map[string]int{}
	for i, s := range subs {
		if j, dup := seen[s.ID]; dup && s.ID != "" {
			e.add(join(indexOrEmpty(prefix, i), "id"), "%q is also the id of subscription %d", s.ID, j)
		}
		seen[s.ID] = i
	}
	if err := e.err(); err != nil {
		return nil, err
	}
	return subs, nil
}

func indexOrEmpty(prefix string, i int) string {
	if prefix == "-" {
		return ""
	}
	return index(prefix, i)
}

func parseSubscription(data []byte, p string, e *errs) Subscription {
	var s Subscription
	fields, ok := object(data, p, e)
	if !ok {
		return s
	}
	wrapped := false
	for _, k := range wrapperFields {
		if _, ok := fields[k]; ok {
			wrapped = true
		}
	}
	if !wrapped {
		// The seed's bare form: every key must be a seed field. It has no id; the callers
		// decide whether it gets the default one.
		s.Spec = parseSpec(fields, p, e)
		return s
	}
	for _, k := range sortedKeys(fields) {
		if !slices.Contains(wrapperFields, k) {
			e.add(join(p, k), "unknown field (a wrapped subscription has %s)", strings.Join(wrapperFields, ", "))
		}
	}
	if raw, ok := fields["id"]; ok {
		var isString bool
		s.ID, isString = str(raw, join(p, "id"), e)
		if isString && !idPattern.MatchString(s.ID) {
			e.add(join(p, "id"), "%q: want 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit", s.ID)
		}
	}
	if raw, ok := fields["name"]; ok {
		s.Name, _ = str(raw, join(p, "name"), e)
		if n := utf8.RuneCountInString(s.Name); n > 128 {
			e.add(join(p, "name"), "%d characters, at most 128", n)
		}
	}
	if raw, ok := fields["owner"]; ok {
		s.Owner, _ = str(raw, join(p, "owner"), e)
		if n := utf8.RuneCountInString(s.Owner); n > 128 {
			e.add(join(p, "owner"), "%d characters, at most 128", n)
		}
	}
	if raw, ok := fields["expires"]; ok {
		v, _ := str(raw, join(p, "expires"), e)
		if v != "" {
			// Stored in UTC, so that a time written with an offset and the same time written
			// back (always in UTC) are one value. A time whose UTC form falls outside the
			// years RFC 3339 can write (0000-9999) could not be written back, so it is refused.
			t, err := time.Parse(time.RFC3339Nano, v)
			switch {
			case err != nil:
				e.add(join(p, "expires"), "%q is not an RFC 3339 time such as 2030-01-02T15:04:05Z", v)
			case t.UTC().Year() < 0 || t.UTC().Year() > 9999:
				e.add(join(p, "expires"), "%q is outside the years 0000 to 9999 in UTC", v)
			default:
				s.Expires = t.UTC()
			}
		}
	}
	if raw, ok := fields["selector"]; ok {
		s.Selector = parseSelector(raw, join(p, "selector"), e)
	}
	if raw, ok := fields["options"]; ok {
		s.Options = parseOptions(raw, join(p, "options"), e)
	}
	if _, ok := fields["spec"]; !ok {
		e.add(join(p, "spec"), "required in the wrapped form (use {} to match everything)")
	} else if specFields, ok := object(fields["spec"], join(p, "spec"), e); ok {
		s.Spec = parseSpec(specFields, join(p, "spec"), e)
	}
	return s
}

func object(data []byte, p string, e *errs) (map[string]json.RawMessage, bool) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil || m == nil {
		e.add(p, "want a JSON object")
		return nil, false
	}
	return m, true
}

// str reads a string and reports whether the value was one.
func str(raw json.RawMessage, p string, e *errs) (string, bool) {
	var v string
	if err := json.Unmarshal(raw, &v); err != nil {
		e.add(p, "want a string")
		return "", false
	}
	return v, true
}

// sortedKeys lists an object's keys in order, so that errors come out in the same order every
// time.
func sortedKeys(m map[string]json.RawMessage) []string {
	return slices.Sorted(maps.Keys(m))
}

// isNull reports whether a raw value is JSON null.
func isNull(raw json.RawMessage) bool {
	return string(bytes.TrimSpace(raw)) == "null"
}

// stringList reads a list of strings; a single string (or number) is taken as a list of one,
// and null as an empty list (what many clients write for a list they leave empty). Numbers are
// taken as their text, as the seed writes ports in strings. Use elem to name an entry in an
// error, so that a single value is named by its field rather than as entry 0.
func stringList(raw json.RawMessage, p string, limit int, e *errs) []string {
	if isNull(raw) {
		return nil
	}
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		return []string{one}
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err == nil {
		return []string{n.String()}
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		e.add(p, "want a list of strings")
		return nil
	}
	if len(list) > limit {
		e.add(p, "%d entries, at most %d", len(list), limit)
		return nil
	}
	out := make([]string, 0, len(list))
	for i, item := range list {
		var v string
		if err := json.Unmarshal(item, &v); err != nil {
			// Numbers are allowed where the seed writes them as strings (ports).
			var n json.Number
			if json.Unmarshal(item, &n) == nil {
				out = append(out, n.String())
				continue
			}
			e.add(index(p, i), "want a string")
			continue
		}
		out = append(out, v)
	}
	return out
}

// elem is the path of entry i of the list field at p: p itself when the field was written as a
// single value, p[i] when it was a list.
func elem(raw json.RawMessage, p string, i int) string {
	if t := bytes.TrimSpace(raw); len(t) > 0 && t[0] != '[' {
		return p
	}
	return index(p, i)
}

func parseSelector(raw json.RawMessage, p string, e *errs) Selector {
	var sel Selector
	fields, ok := object(raw, p, e)
	if !ok {
		return sel
	}
	for _, k := range sortedKeys(fields) {
		v := fields[k]
		switch k {
		case "labels":
			var labels map[string]string
			if err := json.Unmarshal(v, &labels); err != nil {
				e.add(join(p, k), "want an object of string values")
				continue
			}
			for _, lk := range slices.Sorted(maps.Keys(labels)) {
				if lv := labels[lk]; lk == "" || len(lk) > 63 || len(lv) > 63 {
					e.add(join(join(p, k), lk), "label names are 1 to 63 characters and values at most 63")
				}
			}
			// An empty object is the same as none, and is written back as none.
			if len(labels) > 0 {
				sel.Labels = labels
			}
		case "hosts":
			hosts := stringList(v, join(p, k), 1024, e)
			for i, h := range hosts {
				if _, err := path.Match(h, ""); err != nil || h == "" {
					e.add(elem(v, join(p, k), i), "%q is not a host name or glob", h)
				}
			}
			if len(hosts) > 0 {
				sel.Hosts = hosts
			}
		default:
			e.add(join(p, k), "unknown field (a selector has labels, hosts)")
		}
	}
	return sel
}

func parseOptions(raw json.RawMessage, p string, e *errs) Options {
	var o Options
	fields, ok := object(raw, p, e)
	if !ok {
		return o
	}
	for _, k := range sortedKeys(fields) {
		v := fields[k]
		switch k {
		case "frames", "query_strings":
			var b bool
			if err := json.Unmarshal(v, &b); err != nil {
				e.add(join(p, k), "want true or false")
			}
			if k == "frames" {
				o.Frames = b
			} else {
				o.QueryStrings = b
			}
		case "payload_bytes":
			var n int
			if err := json.Unmarshal(v, &n); err != nil || n < 0 || n > MaxPayloadBytes {
				e.add(join(p, k), "want a whole number from 0 to %d", MaxPayloadBytes)
			}
			o.PayloadBytes = n
		default:
			e.add(join(p, k), "unknown field (options are frames, payload_bytes, query_strings)")
		}
	}
	return o
}

func parseSpec(fields map[string]json.RawMessage, p string, e *errs) Spec {
	var s Spec
	for _, k := range sortedKeys(fields) {
		if !slices.Contains(seedFields, k) {
			hint := ""
			for _, f := range seedFields {
				if strings.EqualFold(f, k) {
					hint = fmt.Sprintf(" (did you mean %s?)", f)
				}
			}
			e.add(join(p, k), "unknown field%s; the fields are %s", hint, strings.Join(seedFields, ", "))
		}
	}
	if raw, ok := fields["NIC"]; ok {
		fp := join(p, "NIC")
		for i, n := range stringList(raw, fp, MaxNICs, e) {
			if n == "" || len(n) > 64 {
				e.add(elem(raw, fp, i), "%q: want an interface name or glob of 1 to 64 characters", n)
				continue
			}
			if _, err := path.Match(n, ""); err != nil {
				e.add(elem(raw, fp, i), "%q is not a valid glob", n)
				continue
			}
			if !slices.Contains(s.NIC, n) {
				s.NIC = append(s.NIC, n)
			}
		}
	}
	s.L3 = addrList(fields, "L3", p, e)
	s.L3Match = prefixList(fields, "L3Match", p, e)
	s.L3Miss = addrList(fields, "L3Miss", p, e)
	s.L3MissRange = prefixList(fields, "L3MissRange", p, e)
	if raw, ok := fields["L4CLASS"]; ok {
		fp := join(p, "L4CLASS")
		for i, v := range stringList(raw, fp, 8, e) {
			t, ok := ParseTransport(v)
			if !ok {
				e.add(elem(raw, fp, i), "unknown transport %q (want TCP, UDP, ICMP, ICMPv6 or SCTP)", v)
				continue
			}
			s.L4Class = append(s.L4Class, t)
		}
		slices.Sort(s.L4Class)
		s.L4Class = slices.Compact(s.L4Class)
	}
	s.L4 = portList(fields, "L4", p, e)
	s.L4Range = rangeList(fields, "L4Range", p, e)
	s.L4Miss = portList(fields, "L4Miss", p, e)
	s.L4MissRange = rangeList(fields, "L4MissRange", p, e)
	if raw, ok := fields["L7"]; ok {
		fp := join(p, "L7")
		for i, v := range stringList(raw, fp, MaxL7Tokens, e) {
			u := strings.ToUpper(strings.TrimSpace(v))
			switch {
			case slices.Contains(L7Protocols, u):
				s.L7 = append(s.L7, u)
			case slices.Contains(L7Methods, u):
				s.L7Methods = append(s.L7Methods, u)
			default:
				e.add(elem(raw, fp, i), "unknown L7 token %q (protocols: %s; methods: %s)", v,
					strings.Join(L7Protocols, ", "), strings.Join(L7Methods, ", "))
			}
		}
		s.L7 = sortedUnique(s.L7)
		s.L7Methods = sortedUnique(s.L7Methods)
	}
	if raw, ok := fields["L7Miss"]; ok {
		fp := join(p, "L7Miss")
		for i, v := range stringList(raw, fp, MaxL7Tokens, e) {
			u := strings.ToUpper(strings.TrimSpace(v))
			if !slices.Contains(L7Methods, u) && !slices.Contains(L7Protocols, u) {
				e.add(elem(raw, fp, i), "unknown L7 token %q (methods: %s; protocols: %s)", v,
					strings.Join(L7Methods, ", "), strings.Join(L7Protocols, ", "))
				continue
			}
			s.L7Miss = append(s.L7Miss, u)
		}
		s.L7Miss = sortedUnique(s.L7Miss)
	}
	return s
}

func sortedUnique[T interface{ ~string | ~uint16 }](v []T) []T {
	slices.Sort(v)
	return slices.Compact(v)
}

func addrList(fields map[string]json.RawMessage, name, p string, e *errs) []netip.Addr {
	raw, ok := fields[name]
	if !ok {
		return nil
	}
	fp := join(p, name)
	var out []netip.Addr
	for i, v := range stringList(raw, fp, MaxAddresses, e) {
		a, err := netip.ParseAddr(strings.TrimSpace(v))
		switch {
		case err != nil && strings.Contains(v, "/"):
			rangeField := map[string]string{"L3": "L3Match", "L3Miss": "L3MissRange"}[name]
			e.add(elem(raw, fp, i), "%q is a CIDR; %s takes single addresses, put ranges in %s", v, name, rangeField)
			continue
		case err != nil:
			e.add(elem(raw, fp, i), "%q is not an IPv4 or IPv6 address", v)
			continue
		case a.Zone() != "":
			e.add(elem(raw, fp, i), "%q has a zone; zones are not matched", v)
			continue
		}
		out = append(out, a.Unmap())
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

func prefixList(fields map[string]json.RawMessage, name, p string, e *errs) []netip.Prefix {
	raw, ok := fields[name]
	if !ok {
		return nil
	}
	fp := join(p, name)
	var out []netip.Prefix
	for i, v := range stringList(raw, fp, MaxAddresses, e) {
		v = strings.TrimSpace(v)
		var pfx netip.Prefix
		if !strings.Contains(v, "/") {
			// A bare address is the range of one.
			a, err := netip.ParseAddr(v)
			if err != nil || a.Zone() != "" {
				e.add(elem(raw, fp, i), "%q is not a CIDR such as 10.0.0.0/8 or 2001:db8::/32", v)
				continue
			}
			a = a.Unmap()
			pfx = netip.PrefixFrom(a, a.BitLen())
		} else {
			var err error
			pfx, err = netip.ParsePrefix(v)
			if err != nil {
				e.add(elem(raw, fp, i), "%q is not a CIDR such as 10.0.0.0/8 or 2001:db8::/32", v)
				continue
			}
			if a := pfx.Addr(); a.Is4In6() && pfx.Bits() >= 96 {
				pfx = netip.PrefixFrom(a.Unmap(), pfx.Bits()-96)
			}
		}
		out = append(out, pfx.Masked())
	}
	slices.SortFunc(out, comparePrefix)
	return slices.Compact(out)
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

func parsePort(v string) (uint16, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
	if errors.Is(err, strconv.ErrRange) {
		return 0, fmt.Errorf("port %s is outside 0-65535", strings.TrimSpace(v))
	}
	if err != nil {
		return 0, fmt.Errorf("%q is not a port number", v)
	}
	if n > 65535 {
		return 0, fmt.Errorf("port %d is outside 0-65535", n)
	}
	return uint16(n), nil
}

func portList(fields map[string]json.RawMessage, name, p string, e *errs) []uint16 {
	raw, ok := fields[name]
	if !ok {
		return nil
	}
	fp := join(p, name)
	var out []uint16
	for i, v := range stringList(raw, fp, MaxPorts, e) {
		if strings.Contains(v, "-") && !strings.HasPrefix(strings.TrimSpace(v), "-") {
			e.add(elem(raw, fp, i), "%q is a range; put ranges in %sRange", v, name)
			continue
		}
		port, err := parsePort(v)
		if err != nil {
			e.add(elem(raw, fp, i), "%v", err)
			continue
		}
		out = append(out, port)
	}
	return sortedUnique(out)
}

func rangeList(fields map[string]json.RawMessage, name, p string, e *errs) []PortRange {
	raw, ok := fields[name]
	if !ok {
		return nil
	}
	fp := join(p, name)
	var out []PortRange
	for i, v := range stringList(raw, fp, MaxPortRanges, e) {
		ip := elem(raw, fp, i)
		first, last, isRange := strings.Cut(v, "-")
		if !isRange {
			last = first
		}
		a, err := parsePort(first)
		if err != nil {
			e.add(ip, "%q: want \"first-last\": %v", v, err)
			continue
		}
		b, err := parsePort(last)
		if err != nil {
			e.add(ip, "%q: want \"first-last\": %v", v, err)
			continue
		}
		if a > b {
			e.add(ip, "%q: start %d is greater than end %d", v, a, b)
			continue
		}
		out = append(out, PortRange{First: a, Last: b})
	}
	slices.SortFunc(out, func(x, y PortRange) int {
		if x.First != y.First {
			return int(x.First) - int(y.First)
		}
		return int(x.Last) - int(y.Last)
	})
	return slices.Compact(out)
}

// MarshalJSON writes the seed's field names with normalised values: ports as numbers, ranges as
// "a-b" strings, L7 as its protocols then its methods. Empty fields are left out.
func (s Spec) MarshalJSON() ([]byte, error) {
	m := map[string]any{}
	put := func(k string, n int, v any) {
		if n > 0 {
			m[k] = v
		}
	}
	put("NIC", len(s.NIC), s.NIC)
	put("L3", len(s.L3), s.L3)
	put("L3Match", len(s.L3Match), s.L3Match)
	put("L3Miss", len(s.L3Miss), s.L3Miss)
	put("L3MissRange", len(s.L3MissRange), s.L3MissRange)
	classes := make([]string, len(s.L4Class))
	for i, t := range s.L4Class {
		classes[i] = t.String()
	}
	put("L4CLASS", len(classes), classes)
	put("L4", len(s.L4), s.L4)
	put("L4Range", len(s.L4Range), rangeStrings(s.L4Range))
	put("L4Miss", len(s.L4Miss), s.L4Miss)
	put("L4MissRange", len(s.L4MissRange), rangeStrings(s.L4MissRange))
	l7 := append(slices.Clone(s.L7), s.L7Methods...)
	put("L7", len(l7), l7)
	put("L7Miss", len(s.L7Miss), s.L7Miss)
	return json.Marshal(m)
}

func rangeStrings(rs []PortRange) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.String()
	}
	return out
}

// UnmarshalJSON parses the seed's fields and normalises them.
func (s *Spec) UnmarshalJSON(data []byte) error {
	var e errs
	fields, ok := object(data, "", &e)
	if ok {
		*s = parseSpec(fields, "", &e)
	}
	return e.err()
}

type wrappedJSON struct {
	ID       string    `json:"id"`
	Name     string    `json:"name,omitempty"`
	Selector *Selector `json:"selector,omitempty"`
	Owner    string    `json:"owner,omitempty"`
	Expires  string    `json:"expires,omitempty"`
	Options  *Options  `json:"options,omitempty"`
	Spec     Spec      `json:"spec"`
}

// MarshalJSON writes the wrapped form with the normalised spec; ParseSubscription reads it back
// to an equal value.
func (s Subscription) MarshalJSON() ([]byte, error) {
	w := wrappedJSON{ID: s.ID, Name: s.Name, Owner: s.Owner, Spec: s.Spec}
	if len(s.Selector.Labels) > 0 || len(s.Selector.Hosts) > 0 {
		w.Selector = &s.Selector
	}
	if s.Options != (Options{}) {
		w.Options = &s.Options
	}
	if !s.Expires.IsZero() {
		w.Expires = s.Expires.UTC().Format(time.RFC3339Nano)
	}
	return json.Marshal(w)
}

// UnmarshalJSON is ParseSubscription.
func (s *Subscription) UnmarshalJSON(data []byte) error {
	v, err := ParseSubscription(data)
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// Validate checks a subscription built in code against the same rules the parser applies, by
// writing it out and reading it back: there is one set of rules.
func (s *Subscription) Validate() error {
	data, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("encoding subscription %q: %w", s.ID, err)
	}
	_, err = ParseSubscription(data)
	return err
}

// ValidateSet checks a set of subscriptions for one agent: each valid, ids unique, within
// MaxSubscriptions.
func ValidateSet(subs []Subscription) error {
	var e errs
	if len(subs) > MaxSubscriptions {
		e.add("", "%d subscriptions, at most %d", len(subs), MaxSubscriptions)
	}
	seen := map[string]bool{}
	for i := range subs {
		if err := subs[i].Validate(); err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) {
				e.add(index("", i), "%v", err)
			} else {
				for _, f := range ve.Fields {
					e.add(join(index("", i), f.Path), "%s", f.Reason)
				}
			}
		}
		if seen[subs[i].ID] {
			e.add(join(index("", i), "id"), "%q is used twice", subs[i].ID)
		}
		seen[subs[i].ID] = true
	}
	return e.err()
}

// MarshalSubscriptions writes a set as a JSON array; ParseSubscriptions reads it back.
func MarshalSubscriptions(subs []Subscription) ([]byte, error) {
	if subs == nil {
		subs = []Subscription{}
	}
	return json.Marshal(subs)
}
