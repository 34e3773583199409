package api_test

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/quanyu/quanyu/mix/api"
)

const exampleReceiver = `{"id": "ops", "kind": "webhook", "url": "https://hooks.example.com:8443/alerts?src=quanyu",
	"headers": {"authorization": "Bearer abc", "X-Scope-OrgID": "tenant-1"}, "send_resolved": false}`

func TestParseReceiverExample(t *testing.T) {
	r, err := api.ParseReceiver([]byte(exampleReceiver))
	if err != nil {
		t.Fatal(err)
	}
	want := api.Receiver{ID: "ops", Kind: api.ReceiverWebhook, URL: "https://hooks.example.com:8443/alerts?src=quanyu",
		Headers: map[string]string{"Authorization": "Bearer abc", "X-Scope-Orgid": "tenant-1"}, RepeatInterval: api.DefaultRepeatInterval}
	if !reflect.DeepEqual(r, want) {
		t.Errorf("ParseReceiver(example) = %+v, want %+v", r, want)
	}
	roundTrip(t, r, api.ParseReceiver, (*api.Receiver).Validate)
	out, _ := json.Marshal(r)
	const wantJSON = `{"id":"ops","kind":"webhook","url":"https://hooks.example.com:8443/alerts?src=quanyu",` +
		`"headers":{"Authorization":"Bearer abc","X-Scope-Orgid":"tenant-1"},"send_resolved":false,"repeat_interval":"4h"}`
	if string(out) != wantJSON {
		t.Errorf("Marshal = %s, want %s", out, wantJSON)
	}

	for _, tt := range []struct {
		doc  string
		want api.Receiver
	}{
		{`{"id":"am","kind":"Alertmanager","url":"HTTP://am.example:9093"}`,
			api.Receiver{ID: "am", Kind: api.ReceiverAlertmanager, URL: "http://am.example:9093", SendResolved: true}},
		{`{"id":"v6","kind":"webhook","url":"http://[2001:db8::1]/hook","headers":{},"send_resolved":true}`,
			api.Receiver{ID: "v6", Kind: api.ReceiverWebhook, URL: "http://[2001:db8::1]/hook", SendResolved: true, RepeatInterval: api.DefaultRepeatInterval}},
		{`{"id":"path","kind":"webhook","url":"http://h/a b/ü"}`,
			api.Receiver{ID: "path", Kind: api.ReceiverWebhook, URL: "http://h/a%20b/%C3%BC", SendResolved: true, RepeatInterval: api.DefaultRepeatInterval}},
		{`{"id":"user","kind":"webhook","url":"https://u:p@h/"}`,
			api.Receiver{ID: "user", Kind: api.ReceiverWebhook, URL: "https://u:p@h/", SendResolved: true, RepeatInterval: api.DefaultRepeatInterval}},
		{`{"id":"often","kind":"webhook","url":"http://h/","repeat_interval":"30m"}`,
			api.Receiver{ID: "often", Kind: api.ReceiverWebhook, URL: "http://h/", SendResolved: true, RepeatInterval: 30 * time.Minute}},
		{`{"id":"once","kind":"webhook","url":"http://h/","repeat_interval":"0s"}`,
			api.Receiver{ID: "once", Kind: api.ReceiverWebhook, URL: "http://h/", SendResolved: true}},
	} {
		r, err := api.ParseReceiver([]byte(tt.doc))
		if err != nil || !reflect.DeepEqual(r, tt.want) {
			t.Errorf("ParseReceiver(%s) = %+v, %v; want %+v", tt.doc, r, err, tt.want)
			continue
		}
		roundTrip(t, r, api.ParseReceiver, (*api.Receiver).Validate)
	}
}

func TestReceiverRejects(t *testing.T) {
	recv := func(url, extra string) string {
		doc := fmt.Sprintf(`{"id":"r","kind":"webhook","url":%q`, url)
		if extra != "" {
			doc += "," + extra
		}
		return doc + "}"
	}
	cases := []badCase{
		{"not an object", `"http://h"`, []string{""}},
		{"unknown field", recv("http://h", `"timeout":"5s"`), []string{"timeout"}},
		{"id missing", `{"kind":"webhook","url":"http://h"}`, []string{"id"}},
		{"kind missing", `{"id":"r","url":"http://h"}`, []string{"kind"}},
		{"kind unknown", `{"id":"r","kind":"email","url":"http://h"}`, []string{"kind"}},
		{"url missing", `{"id":"r","kind":"webhook"}`, []string{"url"}},
		{"url not a string", `{"id":"r","kind":"webhook","url":1}`, []string{"url"}},
		{"url ftp", recv("ftp://h/x", ""), []string{"url"}},
		{"url without scheme", recv("h.example/hook", ""), []string{"url"}},
		{"url relative", recv("/hook", ""), []string{"url"}},
		{"url without host", recv("http:///hook", ""), []string{"url"}},
		{"url with only a port", recv("http://:8080/hook", ""), []string{"url"}},
		{"url opaque", recv("http:h/hook", ""), []string{"url"}},
		{"url with a fragment", recv("http://h/hook#x", ""), []string{"url"}},
		{"url with an empty fragment", recv("http://h/hook#", ""), []string{"url"}},
		{"url port 0", recv("http://h:0/", ""), []string{"url"}},
		{"url port too big", recv("http://h:99999/", ""), []string{"url"}},
		{"url with a space in the host", recv("http://a b/", ""), []string{"url"}},
		{"url too long", recv("http://h/"+strings.Repeat("a", api.MaxURLLength), ""), []string{"url"}},
		{"alertmanager with a query", `{"id":"r","kind":"alertmanager","url":"http://am:9093/?x=1"}`, []string{"url"}},
		{"header name with a space", recv("http://h", `"headers":{"X Key":"v"}`), []string{"headers.X Key"}},
		{"header name with a colon", recv("http://h", `"headers":{"X-Key:":"v"}`), []string{"headers.X-Key:"}},
		{"header Host", recv("http://h", `"headers":{"host":"other"}`), []string{"headers.host"}},
		{"header Content-Type", recv("http://h", `"headers":{"Content-Type":"text/plain"}`), []string{"headers.Content-Type"}},
		{"header value with CRLF", recv("http://h", `"headers":{"X-A":"v\r\nX-B: w"}`), []string{"headers.X-A"}},
		{"header twice in two cases", recv("http://h", `"headers":{"X-A":"1","x-a":"2"}`), []string{"headers.x-a"}},
		{"headers over the limit", recv("http://h", `"headers":{`+manyKeys(api.MaxMapEntries+1)+`}`), []string{"headers"}},
		{"header value too long", recv("http://h", fmt.Sprintf(`"headers":{"X-A":%q}`, strings.Repeat("v", 1025))), []string{"headers.X-A"}},
		{"send_resolved a string", recv("http://h", `"send_resolved":"yes"`), []string{"send_resolved"}},
		{"repeat_interval in words", recv("http://h", `"repeat_interval":"an hour"`), []string{"repeat_interval"}},
		{"repeat_interval negative", recv("http://h", `"repeat_interval":"-1h"`), []string{"repeat_interval"}},
		{"repeat_interval too short", recv("http://h", `"repeat_interval":"10ms"`), []string{"repeat_interval"}},
		{"repeat_interval over the limit", recv("http://h", `"repeat_interval":"8d"`), []string{"repeat_interval"}},
		{"repeat_interval on an Alertmanager", `{"id":"am","kind":"alertmanager","url":"http://am:9093","repeat_interval":"1h"}`, []string{"repeat_interval"}},
		{"send_resolved null", recv("http://h", `"send_resolved":null`), []string{"send_resolved"}},
	}
	runBad(t, cases, api.ParseReceiver)
	r := api.Receiver{ID: "r", Kind: api.ReceiverWebhook, URL: "http://h"}
	if err := r.Validate(); err != nil {
		t.Errorf("Validate(good) = %v", err)
	}
	r.URL, r.Headers = "gopher://h", map[string]string{"Bad Name": ""}
	checkPaths(t, r.Validate(), "url", "headers.Bad Name")
	good := api.Receiver{ID: "a", Kind: api.ReceiverWebhook, URL: "http://h"}
	checkPaths(t, api.ValidateReceivers([]api.Receiver{good, good}), "[1].id")
}
