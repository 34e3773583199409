package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/quanyu/quanyu/internal/testnet"
)

// The test binary stands in for quanyu: Up starts `<this binary> lab serve ROLE …`, which
// TestMain runs as the real command would, so the in-process lifecycle is tested without
// building quanyu. With QYLAB_TEST_UP set it is instead a caller of Up that waits to be killed.
func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == "lab" && os.Args[2] == "serve" {
		if err := Serve(context.Background(), os.Args[3:], os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if spec := os.Getenv("QYLAB_TEST_UP"); spec != "" {
		os.Exit(upHelper(spec))
	}
	os.Exit(m.Run())
}

// upHelper runs Up with the options in spec (JSON) and prints the lab's hosts as JSON, then
// waits to be killed.
func upHelper(spec string) int {
	var h struct {
		Prefix, CIDR, StateDir string
	}
	if err := json.Unmarshal([]byte(spec), &h); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	l, err := Up(context.Background(), Options{Prefix: h.Prefix, CIDR: netip.MustParsePrefix(h.CIDR), StateDir: h.StateDir,
		ClientRate: 20})
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	raw, _ := json.Marshal(l.Hosts())
	fmt.Println(string(raw))
	select {}
}

// testLab is the prefix, range and state directory of one test's lab: distinct per test (and
// from a real lab's qylab and 10.177.0.0/24), so tests never meet each other or a real lab.
type testLab struct {
	opts Options
}

func newTestLab(t *testing.T) testLab {
	t.Helper()
	testnet.RequireRoot(t)
	o := Options{
		Prefix:   fmt.Sprintf("qyt%04x", rand.IntN(0x10000)),
		StateDir: t.TempDir(),
		Log:      testLogger(t),
	}
	for range 100 {
		o.CIDR = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 178, byte(rand.IntN(256)), 0}), 24)
		if checkOverlap(o.CIDR) == nil {
			break
		}
	}
	tl := testLab{opts: o}
	t.Cleanup(func() {
		// Whatever the test did, nothing of its lab may stay behind.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := Down(ctx, o); err != nil {
			t.Errorf("cleaning up the lab: %v", err)
		}
	})
	return tl
}

// assertGone fails the test for anything of the lab still there: a namespace, a link, the
// bridge, a process (found by scanning /proc), the state file.
func assertGone(t *testing.T, o Options) {
	t.Helper()
	ok := waitFor(context.Background(), 5*time.Second, func() bool {
		return len(labProcesses(o.Prefix)) == 0
	})
	if !ok {
		t.Errorf("processes of the lab still run: %v", labProcesses(o.Prefix))
	}
	entries, _ := os.ReadDir(netnsDir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), o.Prefix) {
			t.Errorf("namespace %s is left", e.Name())
		}
	}
	ifaces, _ := net.Interfaces()
	for _, ifc := range ifaces {
		if strings.HasPrefix(ifc.Name, o.Prefix) {
			t.Errorf("link %s is left", ifc.Name)
		}
	}
	if _, err := os.Stat(stateFile(o.StateDir, o.Prefix)); err == nil {
		t.Errorf("state file %s is left", stateFile(o.StateDir, o.Prefix))
	}
}

// testLogger logs to the test's log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
