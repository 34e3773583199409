package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/quanyu/quanyu/internal/testbin"
	"github.com/quanyu/quanyu/sdk"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testbin.Cleanup()
	os.Exit(code)
}

// quanyu returns a command running the built binary with its plugins.
func quanyu(t testing.TB, args ...string) *exec.Cmd {
	t.Helper()
	dir := testbin.Build(t)
	cmd := exec.Command(filepath.Join(dir, "quanyu"), args...)
	cmd.Env = append(os.Environ(), "QUANYU_AGENT_PLUGIN_DIR="+filepath.Join(dir, "plugins"))
	return cmd
}

// records is what an agent printed, by type.
type records struct {
	flows []sdk.Flow
	l7    []sdk.L7
	stats map[string]sdk.Stats // last per source
	other map[string]int       // count per other type
}

func parseRecords(t testing.TB, out []byte) records {
	t.Helper()
	r := records{stats: map[string]sdk.Stats{}, other: map[string]int{}}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		typ, err := sdk.RecordType(line)
		if err != nil {
			t.Fatalf("output line is not a JSON record: %v\n%s", err, line)
		}
		switch typ {
		case "flow":
			var f sdk.Flow
			if err := json.Unmarshal(line, &f); err != nil {
				t.Fatalf("flow record: %v\n%s", err, line)
			}
			r.flows = append(r.flows, f)
		case "l7":
			var l7 sdk.L7
			if err := json.Unmarshal(line, &l7); err != nil {
				t.Fatalf("l7 record: %v\n%s", err, line)
			}
			r.l7 = append(r.l7, l7)
		case "stats":
			var s sdk.Stats
			if err := json.Unmarshal(line, &s); err != nil {
				t.Fatalf("stats record: %v\n%s", err, line)
			}
			r.stats[s.Source] = s
		default:
			r.other[typ]++
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return r
}

func writeFile(path, content string) error { return os.WriteFile(path, []byte(content), 0o644) }
