package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/quanyu/quanyu/sdk"
)

// These helpers mirror the unexported ones behind sdk.ParseSubscription (errs, object, str,
// stringList, the port and prefix readers), so that paths, reasons and normalisation read the
// same in both packages. They are copied rather than shared because sdk keeps them unexported.

// Shared limits of the free-text and map fields.
const (
	MaxIDLength       = 64   // ids of applications, rules and receivers
	MaxNameLength     = 128  // owner name and team
	MaxContactLength  = 256  // owner contact
	MaxTextLength     = 1024 // descriptions
	MaxMapEntries     = 64   // labels, annotations, headers
	MaxMapKeyLength   = 63   // their keys
	MaxMapValueLength = 1024 // their values
)

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

const idReason = "want 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"

// errs collects field errors; paths are JSON paths from the document's root.
type errs struct {
	fields []sdk.FieldError
}

func (e *errs) add(path, format string, args ...any) {
	e.fields = append(e.fields, sdk.FieldError{Path: path, Reason: fmt.Sprintf(format, args...)})
}

func (e *errs) err() error {
	if len(e.fields) == 0 {
		return nil
	}
	return &sdk.ValidationError{Fields: e.fields}
}

func join(prefix, field string) string {
	if prefix == "" {
		return field
	}
	if field == "" {
		return prefix
	}
	return prefix + "." + field
}

func index(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}

func isNull(raw json.RawMessage) bool {
	return string(bytes.TrimSpace(raw)) == "null"
}

// object reads a JSON object into its raw fields.
func object(raw json.RawMessage, p string, e *errs) (map[string]json.RawMessage, bool) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		e.add(p, "want a JSON object")
		return nil, false
	}
	return m, true
}

// fieldsOf reads an object and reports every key that is not one of known, in sorted order so
// that errors come out the same way every time.
func fieldsOf(raw json.RawMessage, p, what string, known []string, e *errs) (map[string]json.RawMessage, bool) {
	fields, ok := object(raw, p, e)
	if !ok {
		return nil, false
	}
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		if !slices.Contains(known, k) {
			e.add(join(p, k), "unknown field (%s has %s)", what, strings.Join(known, ", "))
		}
	}
	return fields, true
}

// str reads a string and reports whether the value was one. null is not a string (the decoder
// would leave "" for it): a field is given a value or left out.
func str(raw json.RawMessage, p string, e *errs) (string, bool) {
	var v string
	if err := json.Unmarshal(raw, &v); err != nil || isNull(raw) {
		e.add(p, "want a string")
		return "", false
	}
	return v, true
}

// text reads free text of at most max characters without control characters; multiline also
// allows newlines and tabs. Required text must hold something besides spaces.
func text(fields map[string]json.RawMessage, name, p string, max int, required, multiline bool, e *errs) string {
	fp := join(p, name)
	raw, ok := fields[name]
	if !ok {
		if required {
			e.add(fp, "required")
		}
		return ""
	}
	v, ok := str(raw, fp, e)
	if !ok {
		return ""
	}
	if reason := checkText(v, max, multiline); reason != "" {
		e.add(fp, "%s", reason)
		return ""
	}
	if required && strings.TrimSpace(v) == "" {
		e.add(fp, "required (empty)")
	}
	return v
}

// checkText gives the reason v is not acceptable free text, or "".
func checkText(v string, max int, multiline bool) string {
	if !utf8.ValidString(v) {
		return "not valid UTF-8"
	}
	if n := utf8.RuneCountInString(v); n > max {
		return fmt.Sprintf("%d characters, at most %d", n, max)
	}
	for i, r := range v {
		if unicode.IsControl(r) && !(multiline && (r == '\n' || r == '\t')) {
			return fmt.Sprintf("control character %U at byte %d", r, i)
		}
	}
	return ""
}

// id reads an identifier field.
func id(fields map[string]json.RawMessage, name, p string, required bool, e *errs) string {
	fp := join(p, name)
	raw, ok := fields[name]
	if !ok {
		if required {
			e.add(fp, "required")
		}
		return ""
	}
	v, ok := str(raw, fp, e)
	if !ok {
		return ""
	}
	if !idPattern.MatchString(v) {
		e.add(fp, "%q: %s", v, idReason)
		return ""
	}
	return v
}

// enum reads a string that must be one of choices, compared without regard to letter case, and
// returns the choice as written in choices.
func enum[T ~string](fields map[string]json.RawMessage, name, p string, choices []T, required bool, e *errs) T {
	fp := join(p, name)
	raw, ok := fields[name]
	if !ok {
		if required {
			e.add(fp, "required (one of %s)", listOf(choices))
		}
		return ""
	}
	v, ok := str(raw, fp, e)
	if !ok {
		return ""
	}
	for _, c := range choices {
		if strings.EqualFold(string(c), strings.TrimSpace(v)) {
			return c
		}
	}
	e.add(fp, "%q: want one of %s", v, listOf(choices))
	return ""
}

func listOf[T ~string](choices []T) string {
	s := make([]string, len(choices))
	for i, c := range choices {
		s[i] = string(c)
	}
	return strings.Join(s, ", ")
}

// number reads a JSON number. Non-finite values cannot be written in JSON, and a number too
// large for a float64 is refused by the decoder, so the result is always finite.
func number(raw json.RawMessage, p string, e *errs) (float64, bool) {
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil || isNull(raw) {
		e.add(p, "want a finite number")
		return 0, false
	}
	return f, true
}

// eachString reads a list of strings and calls f with each entry and its path; a single string
// or number is taken as a list of one (named by the field's own path), numbers as their text
// (the seed writes ports both ways), and null as an empty list. Entries that are not strings are
// reported here and not passed on.
func eachString(raw json.RawMessage, p string, limit int, e *errs, f func(v, path string)) {
	if isNull(raw) {
		return
	}
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		f(one, p)
		return
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err == nil {
		f(n.String(), p)
		return
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		e.add(p, "want a list of strings")
		return
	}
	if len(list) > limit {
		e.add(p, "%d entries, at most %d", len(list), limit)
		return
	}
	for i, item := range list {
		var v string
		if err := json.Unmarshal(item, &v); err == nil {
			f(v, index(p, i))
			continue
		}
		var n json.Number
		if err := json.Unmarshal(item, &n); err == nil {
			f(n.String(), index(p, i))
			continue
		}
		e.add(index(p, i), "want a string")
	}
}

func parsePort(v string) (uint16, error) {
	v = strings.TrimSpace(v)
	n, err := strconv.ParseUint(v, 10, 64)
	if errors.Is(err, strconv.ErrRange) {
		return 0, fmt.Errorf("port %s is outside 0-65535", v)
	}
	if err != nil {
		return 0, fmt.Errorf("%q is not a port number", v)
	}
	if n > 65535 {
		return 0, fmt.Errorf("port %d is outside 0-65535", n)
	}
	return uint16(n), nil
}

// parsePortRange reads a port ("8080") or an inclusive range ("8080-8090").
func parsePortRange(v string) (sdk.PortRange, error) {
	first, last, isRange := strings.Cut(v, "-")
	if !isRange {
		last = first
	}
	a, err := parsePort(first)
	if err != nil {
		return sdk.PortRange{}, fmt.Errorf("%q: want a port or \"first-last\": %w", v, err)
	}
	b, err := parsePort(last)
	if err != nil {
		return sdk.PortRange{}, fmt.Errorf("%q: want a port or \"first-last\": %w", v, err)
	}
	if a > b {
		return sdk.PortRange{}, fmt.Errorf("%q: start %d is greater than end %d", v, a, b)
	}
	return sdk.PortRange{First: a, Last: b}, nil
}

// portRangeText writes a range as its one port when it has one, else as "first-last".
func portRangeText(r sdk.PortRange) string {
	if r.First == r.Last {
		return strconv.Itoa(int(r.First))
	}
	return r.String()
}

// mergeRanges sorts ranges and merges those that overlap or touch, so that two lists covering
// the same ports are written the same way.
func mergeRanges(rs []sdk.PortRange) []sdk.PortRange {
	slices.SortFunc(rs, func(x, y sdk.PortRange) int {
		if x.First != y.First {
			return int(x.First) - int(y.First)
		}
		return int(x.Last) - int(y.Last)
	})
	out := rs[:0]
	for _, r := range rs {
		if n := len(out); n > 0 && uint32(r.First) <= uint32(out[n-1].Last)+1 {
			out[n-1].Last = max(out[n-1].Last, r.Last)
			continue
		}
		out = append(out, r)
	}
	return out
}

// parseAddr reads a single address as the sdk does: no zone, IPv4-mapped IPv6 unmapped.
func parseAddr(v string) (netip.Addr, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(v))
	switch {
	case err != nil && strings.Contains(v, "/"):
		return netip.Addr{}, fmt.Errorf("%q is a CIDR; put ranges in cidr", v)
	case err != nil:
		return netip.Addr{}, fmt.Errorf("%q is not an IPv4 or IPv6 address", v)
	case a.Zone() != "":
		return netip.Addr{}, fmt.Errorf("%q has a zone; zones are not matched", v)
	}
	return a.Unmap(), nil
}

// parsePrefix reads a CIDR as the sdk does: host bits cleared, an IPv4-mapped prefix of at
// least 96 bits turned into its IPv4 prefix, a bare address taken as the range of one.
func parsePrefix(v string) (netip.Prefix, error) {
	v = strings.TrimSpace(v)
	if !strings.Contains(v, "/") {
		a, err := netip.ParseAddr(v)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR such as 10.0.0.0/8 or 2001:db8::/32", v)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	pfx, err := netip.ParsePrefix(v)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR such as 10.0.0.0/8 or 2001:db8::/32", v)
	}
	if a := pfx.Addr(); a.Is4In6() && pfx.Bits() >= 96 {
		pfx = netip.PrefixFrom(a.Unmap(), pfx.Bits()-96)
	}
	return pfx.Masked(), nil
}

// endpointAddr puts an address into the form catalog prefixes are stored in: unmapped, without
// a zone (a zoned address is in no prefix, by netip's rules).
func endpointAddr(a netip.Addr) netip.Addr {
	return a.Unmap().WithZone("")
}

// maxDays bounds the day count of a duration, far beyond every field's own limit and well
// within time.Duration's 292 years.
const maxDays = 36500

const durationReason = "is not a duration such as \"30s\", \"5m\", \"1h30m\" or \"7d\""

// parseDuration reads Go's duration syntax ("90s", "1h30m", "1.5h") with days in front
// ("7d", "1d12h"), since seasons and histories are naturally written in days. Negative
// durations are refused.
func parseDuration(v string) (time.Duration, error) {
	s := v
	var days time.Duration
	if i := strings.IndexByte(s, 'd'); i > 0 && allDigits(s[:i]) {
		n, err := strconv.Atoi(s[:i])
		if err != nil || n > maxDays {
			return 0, fmt.Errorf("%q is longer than %d days", v, maxDays)
		}
		days = time.Duration(n) * 24 * time.Hour
		s = s[i+1:]
		if s == "" {
			return days, nil
		}
		if s[0] == '-' || s[0] == '+' {
			return 0, fmt.Errorf("%q %s", v, durationReason)
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q %s", v, durationReason)
	}
	if d < 0 {
		return 0, fmt.Errorf("%q is negative", v)
	}
	if d > time.Duration(maxDays)*24*time.Hour-days {
		return 0, fmt.Errorf("%q is longer than %d days", v, maxDays)
	}
	return days + d, nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// formatDuration writes a duration in the shortest form parseDuration reads back: hours,
// minutes, then what is left as Go writes it ("24h", "1h30m", "1m1.5s", "24h250ms"). Units stop at
// hours, as Go's own format does, so that "24h" reads back as written.
func formatDuration(d time.Duration) string {
	switch {
	case d == 0:
		return "0s"
	case d < 0:
		// Only values built in code are negative; Go's own form reads back as negative, so
		// that Validate names the field instead of reading "0s".
		return d.String()
	}
	var b []byte
	if h := d / time.Hour; h > 0 {
		b = strconv.AppendInt(b, int64(h), 10)
		b = append(b, 'h')
		d -= h * time.Hour
	}
	if m := d / time.Minute; m > 0 {
		b = strconv.AppendInt(b, int64(m), 10)
		b = append(b, 'm')
		d -= m * time.Minute
	}
	if d > 0 {
		// Below a minute, Go writes "30s", "1.5s", "500ms", "1.5µs"; the micro sign is written
		// as "u" to keep the stored form ASCII (ParseDuration reads both).
		b = append(b, strings.Replace(d.String(), "µ", "u", 1)...)
	}
	return string(b)
}

// duration reads a duration field bounded by [lo, hi].
func duration(raw json.RawMessage, p string, lo, hi time.Duration, e *errs) (time.Duration, bool) {
	v, ok := str(raw, p, e)
	if !ok {
		return 0, false
	}
	d, err := parseDuration(v)
	if err != nil {
		e.add(p, "%v", err)
		return 0, false
	}
	if d < lo || d > hi {
		e.add(p, "%q: want from %s to %s", v, formatDuration(lo), formatDuration(hi))
		return 0, false
	}
	return d, true
}

// stringMap reads an object of string values within the map limits; checkKey gives the reason
// a key is refused, or "". An empty or null object is none. Keys come back through canon, so
// that keys that differ only in a way canon removes are reported as duplicates.
func stringMap(raw json.RawMessage, p string, multiline bool, checkKey func(string) string,
	canon func(string) string, e *errs) map[string]string {
	if isNull(raw) {
		return nil
	}
	fields, ok := object(raw, p, e)
	if !ok {
		return nil
	}
	if len(fields) > MaxMapEntries {
		e.add(p, "%d entries, at most %d", len(fields), MaxMapEntries)
		return nil
	}
	out := make(map[string]string, len(fields))
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		kp := join(p, k)
		if reason := checkKey(k); reason != "" {
			e.add(kp, "%q: %s", k, reason)
			continue
		}
		v, ok := str(fields[k], kp, e)
		if !ok {
			continue
		}
		if reason := checkText(v, MaxMapValueLength, multiline); reason != "" {
			e.add(kp, "%s", reason)
			continue
		}
		ck := k
		if canon != nil {
			ck = canon(k)
		}
		if _, dup := out[ck]; dup {
			e.add(kp, "%q is the same name as another key (%q)", k, ck)
			continue
		}
		out[ck] = v
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// checkMapKey is the rule for catalog label keys: 1 to 63 printable characters without spaces.
func checkMapKey(k string) string {
	if k == "" || utf8.RuneCountInString(k) > MaxMapKeyLength {
		return fmt.Sprintf("keys are 1 to %d characters", MaxMapKeyLength)
	}
	for _, r := range k {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return "keys are printable characters without spaces"
		}
	}
	return ""
}

// parseSet reads a set of resources: one object, a JSON array of them, or {"<plural>": […]}.
// Paths start at the lone object's fields, at "[i]" in an array and at "<plural>[i]" in the
// wrapped form. Ids (the field idName) must be unique.
func parseSet[T any](data []byte, plural, idName string, limit int,
	one func(raw json.RawMessage, p string, e *errs) T, idOf func(*T) string,
	check func(items []T, prefix string, e *errs)) ([]T, error) {
	var e errs
	trimmed := bytes.TrimSpace(data)
	var items []json.RawMessage
	prefix, lone := "", false
	if len(trimmed) > 0 && trimmed[0] == '[' {
		if err := json.Unmarshal(trimmed, &items); err != nil {
			e.add("", "not a JSON array of %s: %v", plural, err)
			return nil, e.err()
		}
	} else {
		var probe map[string]json.RawMessage
		if err := json.Unmarshal(trimmed, &probe); err != nil || probe == nil {
			e.add("", "want a JSON object, an array or {%q: […]}", plural)
			return nil, e.err()
		}
		if raw, ok := probe[plural]; ok {
			prefix = plural
			for _, k := range slices.Sorted(maps.Keys(probe)) {
				if k != plural {
					e.add(k, "unknown field (a set is {%q: […]})", plural)
				}
			}
			if err := json.Unmarshal(raw, &items); err != nil {
				e.add(plural, "want an array")
				return nil, e.err()
			}
		} else {
			items, lone = []json.RawMessage{trimmed}, true
		}
	}
	if len(items) > limit {
		e.add(prefix, "%d %s, at most %d", len(items), plural, limit)
		return nil, e.err()
	}
	out := make([]T, 0, len(items))
	seen := make(map[string]int, len(items))
	for i, raw := range items {
		p := ""
		if !lone {
			p = index(prefix, i)
		}
		v := one(raw, p, &e)
		if k := idOf(&v); k != "" {
			if j, dup := seen[k]; dup {
				e.add(join(p, idName), "%q is also the %s of %s", k, idName, index(prefix, j))
			}
			seen[k] = i
		}
		out = append(out, v)
	}
	if check != nil {
		check(out, prefix, &e)
	}
	if err := e.err(); err != nil {
		return nil, err
	}
	return out, nil
}

// parseOne reads a single resource.
func parseOne[T any](data []byte, one func(raw json.RawMessage, p string, e *errs) T) (T, error) {
	var e errs
	v := one(data, "", &e)
	if err := e.err(); err != nil {
		var zero T
		return zero, err
	}
	return v, nil
}

// marshalSet writes a set as a JSON array ([] when empty), which the set parsers read back.
func marshalSet[T any](vs []T) ([]byte, error) {
	if vs == nil {
		vs = []T{}
	}
	return json.Marshal(vs)
}
